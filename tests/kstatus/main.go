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
	utiljson "k8s.io/apimachinery/pkg/util/json"
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
	// utiljson decodes whole numbers as int64, as client-go does for unstructured objects
	// (encoding/json's float64 would make kstatus reject metadata.generation).
	obj := map[string]interface{}{}
	if err := utiljson.Unmarshal(raw, &obj); err != nil {
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
