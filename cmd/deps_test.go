package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestManagerDependencies keeps out of the manager what its memory goal cannot carry:
// k8s.io/apiserver (controller-runtime's authenticating metrics filter pulls it in, and
// with it gRPC, OpenTelemetry and CEL: 27 MB of a 65 MB binary, resident as file pages).
// internal/metricsauth does the filter's work over the same two APIs.
func TestManagerDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 100 {
		t.Fatalf("go list listed %d packages: too few for the manager", len(pkgs))
	}
	for _, p := range pkgs {
		for _, bad := range []string{"k8s.io/apiserver/", "google.golang.org/grpc", "go.opentelemetry.io/", "github.com/google/cel-go/"} {
			if strings.HasPrefix(p, bad) || p+"/" == bad {
				t.Errorf("the manager depends on %s (%s...)", p, bad)
			}
		}
	}
}
