package main

import (
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/queuejob/queuejob-operator"

// workerRoots are the packages that end up in the static worker binaries (make workers)
// and the library users import to write their own.
var workerRoots = []string{
	module + "/cmd/queuejob-worker",
	module + "/examples/job-wq-2",
	module + "/pkg/worker",
}

// forbidden says why a package must not be a dependency of a worker, "" if it may be.
func forbidden(pkg string) string {
	switch {
	case strings.HasPrefix(pkg, "k8s.io/"), strings.HasPrefix(pkg, "sigs.k8s.io/"):
		return "a Kubernetes package"
	case pkg == module+"/api" || strings.HasPrefix(pkg, module+"/api/"):
		return "the operator's API types"
	case pkg == module+"/pkg/queue/backends" || strings.HasPrefix(pkg, module+"/pkg/queue/backends/"):
		return "the operator's side of the queues (it imports the API types); workers use pkg/queue and its backends' wire packages"
	case pkg == module+"/pkg/queue/registry":
		return "the list of the operator's backends (it imports their kube packages)"
	case strings.HasSuffix(pkg, "/kube") || strings.Contains(pkg, "/kube/"):
		if strings.HasPrefix(pkg, module+"/") {
			return "a backend's Kubernetes side (it imports the API types); workers use the backend's wire package"
		}
	}
	return ""
}

// TestWorkerDependencies keeps the workers free of Kubernetes: they are dropped into any
// image, and the Kubernetes packages would double their size.
func TestWorkerDependencies(t *testing.T) {
	// The imports of every package the roots depend on, as the static build sees them.
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}"}, workerRoots...)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		imports[f[0]] = f[1:]
	}
	if len(imports) < len(workerRoots) {
		t.Fatalf("go list listed %d packages, want at least the %d roots:\n%s", len(imports), len(workerRoots), out)
	}

	// A shortest import chain from a root to each package, to say where a bad one comes from.
	via := map[string]string{}
	todo := append([]string(nil), workerRoots...)
	for _, r := range workerRoots {
		via[r] = ""
	}
	for len(todo) > 0 {
		p := todo[0]
		todo = todo[1:]
		for _, imp := range imports[p] {
			if _, seen := via[imp]; !seen {
				via[imp] = p
				todo = append(todo, imp)
			}
		}
	}
	chain := func(p string) string {
		links := []string{p}
		for q := via[p]; q != ""; q = via[q] {
			links = append(links, q)
		}
		for i, j := 0, len(links)-1; i < j; i, j = i+1, j-1 {
			links[i], links[j] = links[j], links[i]
		}
		return strings.Join(links, " -> ")
	}

	var bad []string
	for p := range imports {
		if forbidden(p) != "" {
			bad = append(bad, p)
		}
	}
	sort.Strings(bad)
	for _, p := range bad {
		// The first package on its chain that is forbidden is the one to fix.
		if q := via[p]; q != "" && forbidden(q) != "" {
			continue
		}
		t.Errorf("the workers depend on %s, %s:\n\t%s", p, forbidden(p), chain(p))
	}
	if len(bad) > 0 {
		t.Errorf("forbidden packages in all: %d", len(bad))
	}
}
