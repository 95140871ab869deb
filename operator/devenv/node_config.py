"""What the local node's daemons are told: names, addresses, and their configuration files.

Every machine-specific knob (cgroup v1, no CAP_SYS_RESOURCE, rlimits, no registry) is
here, next to the reason for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from blooio_operator.devenv.node_build import PAUSE_IMAGE
from blooio_operator.devenv.node_host import free_port

NODE_NAME = "blooio-e2e"
BRIDGE = "blooioe2e0"
POD_SUBNET = "10.213.0.0/24"
NODE_IP = "10.213.0.1"  # the bridge's address: gateway of the pods and the node's IP
SERVICE_RANGE = "10.0.0.0/24"  # tests/controlplane's --service-cluster-ip-range
KUBERNETES_SERVICE_IP = "10.0.0.1"
CGROUP_ROOT = "blooio-e2e"
NAT_CHAIN = "BLOOIO-E2E"
SYNC_FREQUENCY = "10s"  # how often the kubelet refreshes mounted Secrets (default 1m)
NODE_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "node-lifecycle-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
)


def cni_conflist(cni_dir: Path) -> dict[str, Any]:
    """The bridge network: pods on BRIDGE, addresses from POD_SUBNET, this host only."""
    return {
        "cniVersion": "1.0.0",
        "name": "blooio-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # The bridge already has NODE_IP; isGateway would also switch on
                # the host's net.ipv4.ip_forward, which nothing here needs (pods
                # talk to each other over the bridge and to this host only).
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                    # No default route: pods reach this machine only.
                    "routes": [{"dst": SERVICE_RANGE}],
                    "dataDir": str(cni_dir / "ipam"),
                },
            }
        ],
    }


def containerd_toml(root: Path, socket: Path, cni_conf_dir: Path) -> str:
    """containerd with its own root, state and socket under ``root``, runc, the CNI bridge."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this machine does not give.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which("runc")}"
  Root = "{root}/runc"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf_dir}"
"""


def kubelet_config(
    *, work_dir: Path, containerd_socket: Path, client_ca: Path, healthz_port: int
) -> dict[str, Any]:
    """KubeletConfiguration for this machine (see the comments for each knob)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine: cgroup v1 (hybrid), no CAP_SYS_RESOURCE, nofile hard limit 20000.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/" + CGROUP_ROOT,
        "failSwapOn": False,
        "maxOpenFiles": 20000,
        "makeIPTablesUtilChains": False,
        "enforceNodeAllocatable": [],
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        # Images exist only locally (no registry): never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "syncFrequency": SYNC_FREQUENCY,
        "containerRuntimeEndpoint": f"unix://{containerd_socket}",
        "address": NODE_IP,
        "port": free_port(),
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": False},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "podLogsDir": str(work_dir / "pod-logs"),
        "volumePluginDir": str(work_dir / "kubelet" / "volume-plugins"),
        "resolvConf": "",
        "serializeImagePulls": False,
    }
