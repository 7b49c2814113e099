package image

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/queuejob/queuejob-operator/internal/image"
)

// managerSpec is the spec of the manager's image.
func managerSpec(t *testing.T) image.Spec {
	t.Helper()
	for _, s := range image.Specs() {
		if s.Name == "queuejob-operator" {
			return s
		}
	}
	t.Fatal("no queuejob-operator image spec")
	return image.Spec{}
}

// managerCommand returns the command of the container "manager" of the Deployment among
// the YAML documents of stream.
func managerCommand(t *testing.T, what string, stream []byte) []string {
	t.Helper()
	for _, doc := range bytes.Split(append([]byte("\n"), stream...), []byte("\n---")) {
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if d.Kind != "Deployment" {
			continue
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "manager" {
				return c.Command
			}
		}
	}
	t.Fatalf("%s: no Deployment with a container named manager", what)
	return nil
}

// TestManagerCommandIsInTheImage: the command the chart's and config/manager's Deployments
// run is the manager image's entrypoint, a binary that the image's layer holds.
func TestManagerCommandIsInTheImage(t *testing.T) {
	spec := managerSpec(t)
	root := moduleDir(t)

	helm := os.Getenv("HELM")
	if helm == "" {
		helm = filepath.Join(root, "bin", "helm")
	}
	if _, err := os.Stat(helm); err != nil {
		t.Fatalf("no helm binary at %s (%v): run `make helm`, or set HELM", helm, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(helm, "template", "qj", filepath.Join(root, "charts", "queuejob-operator"))
	cmd.Stderr = &stderr
	chart, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	config, err := os.ReadFile(filepath.Join(root, "config", "manager", "manager.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	for what, command := range map[string][]string{
		"the chart's Deployment":      managerCommand(t, "helm template", chart),
		"config/manager/manager.yaml": managerCommand(t, "config/manager/manager.yaml", config),
	} {
		if len(command) == 0 {
			t.Errorf("%s: the manager container has no command", what)
			continue
		}
		if !slices.ContainsFunc(spec.Files, func(f image.File) bool { return f.Path == command[0] }) {
			t.Errorf("%s runs %s, which is not a file of the %s image (%+v)", what, command[0], spec.Name, spec.Files)
		}
		if !slices.Equal(command, spec.Entrypoint) {
			t.Errorf("%s runs %q, want the %s image's entrypoint %q", what, command, spec.Name, spec.Entrypoint)
		}
	}

	// The chart's default image is the one built from this spec.
	var values struct {
		Image struct{ Repository string } `json:"image"`
	}
	b, err := os.ReadFile(filepath.Join(root, "charts", "queuejob-operator", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	if want := image.DefaultRepo + "/" + spec.Name; values.Image.Repository != want {
		t.Errorf("the chart's image.repository is %s, want %s", values.Image.Repository, want)
	}
}
