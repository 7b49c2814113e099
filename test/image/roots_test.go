package image

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/queuejob/queuejob-operator/internal/image"
)

// fallbackRoots is the package that embeds Go's fallback root CAs: a binary that imports it
// verifies TLS servers with them when the system has no CA bundle, as in the images (FROM
// scratch).
const fallbackRoots = "golang.org/x/crypto/x509roots/fallback"

// noTLS are the image binaries that make no TLS connection, and so need no root CAs.
var noTLS = map[string]string{
	"./examples/pi":           "prints pi",
	"./examples/job-wq-1/cat": "copies stdin to stdout",
}

// TestImageBinariesCarryRootCAs: every binary of an image that may dial Redis or RabbitMQ
// over TLS without a caSecretRef (the manager, queuejob-worker, job-wq-2) imports Go's
// fallback root CAs, since the images hold no CA bundle for the system roots.
func TestImageBinariesCarryRootCAs(t *testing.T) {
	pkgs := map[string]bool{}
	for _, s := range image.Specs() {
		for _, f := range s.Files {
			if _, ok := noTLS[f.Package]; !ok {
				pkgs[f.Package] = true
			}
		}
	}
	for _, want := range []string{"./cmd", "./cmd/queuejob-worker", "./examples/job-wq-2"} {
		if !pkgs[want] {
			t.Errorf("%s is in no image spec: update this test", want)
		}
	}
	for pkg := range pkgs {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
		cmd.Dir = moduleDir(t)
		// As the images' build sees it.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		found := false
		for _, dep := range strings.Fields(string(out)) {
			found = found || dep == fallbackRoots
		}
		if !found {
			t.Errorf("%s does not import %s: in an image FROM scratch it has no root CAs to verify a TLS server with (blank-import it in its main package)", pkg, fallbackRoots)
		}
	}
}
