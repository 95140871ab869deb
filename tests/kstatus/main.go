// Command kstatus classifies one Kubernetes object with the real kstatus library
// (sigs.k8s.io/cli-utils/pkg/kstatus/status), as Flux's kustomize-controller does.
//
// It reads one JSON object (an unstructured resource, e.g. `kubectl get -o json`) on
// stdin and prints {"status": "...", "message": "..."} on stdout.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	obj := map[string]interface{}{}
	if err := json.Unmarshal(raw, &obj); err != nil {
		fail("parse JSON: %v", err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		fail("compute status: %v", err)
	}
	out, err := json.Marshal(result{Status: res.Status.String(), Message: res.Message})
	if err != nil {
		fail("encode result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
