// Command node runs the node components of the local end-to-end cluster, built from the
// same k8s.io/kubernetes module set as tests/controlplane:
//
//	node kubelet   [kubelet flags]           upstream kubelet
//	node scheduler [kube-scheduler flags]    upstream kube-scheduler
//
// The launcher (operator/devenv/node.py) writes the configuration and starts each as a
// separate process; the controller-manager is the control plane's own child.
package main

import (
	"context"
	"fmt"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	schedulerapp "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	_ "time/tzdata"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: node kubelet|scheduler [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "kubelet":
		cmd := kubeletapp.NewKubeletCommand(context.Background())
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	case "scheduler":
		cmd := schedulerapp.NewSchedulerCommand()
		cmd.SetArgs(os.Args[2:])
		os.Exit(cli.Run(cmd))
	default:
		fmt.Fprintf(os.Stderr, "unknown component %q (kubelet, scheduler)\n", os.Args[1])
		os.Exit(2)
	}
}
