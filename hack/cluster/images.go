package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// nonRootUser is the numeric user of the images (distroless' "nonroot").
const nonRootUser = "65532"

// layerTar returns a tar with the binary as /<entry> (mode 0755) and an empty /tmp.
func layerTar(binary []byte, entry string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: mtime}); err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: entry, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(binary)), ModTime: mtime}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// buildImage returns a one-layer image running /<entry> as user 65532.
func buildImage(binary []byte, entry string) (v1.Image, error) {
	lt, err := layerTar(binary, entry)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(lt)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Config.Entrypoint = []string{"/" + entry}
	cf.Config.User = nonRootUser
	cf.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cf)
}

// writeImageTar writes img as a docker-archive tarball tagged tag (what `ctr images
// import` reads).
func writeImageTar(img v1.Image, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}

// localImages are the images up builds from this clone: package, entry name, tag.
var localImages = []struct{ Pkg, Entry, Tag string }{
	{"./hack/cluster/pause", "pause", pauseImage},
	{"./hack/cluster/smoke", "smoke", smokeImage},
}

// buildLocalImages builds the static binaries and image tarballs into <state>/images.
func (c *Cluster) buildLocalImages(repo string) ([]string, error) {
	dir := c.path("images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var tars []string
	for _, li := range localImages {
		bin := filepath.Join(dir, li.Entry)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, li.Pkg)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", li.Pkg, err, out)
		}
		b, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		img, err := buildImage(b, li.Entry)
		if err != nil {
			return nil, err
		}
		out := filepath.Join(dir, li.Entry+".tar")
		if err := writeImageTar(img, li.Tag, out); err != nil {
			return nil, err
		}
		tars = append(tars, out)
	}
	return tars, nil
}

// importImage imports a tarball (docker archive or OCI layout) into containerd's k8s.io
// namespace, where the CRI plugin finds it.
func (c *Cluster) importImage(tar string) (string, error) {
	if err := trustedBinary(c.Bins.Ctr); err != nil {
		return "", err
	}
	cmd := exec.Command(c.Bins.Ctr, "--address", c.socket(), "--namespace", "k8s.io",
		"images", "import", "--platform", "linux/"+runtime.GOARCH, tar)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ctr images import %s: %v: %s%s", tar, err, out, stderr.Bytes())
	}
	digests := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "sha256:") {
			digests[f] = true
		}
	}
	ls, err := exec.Command(c.Bins.Ctr, "--address", c.socket(), "--namespace", "k8s.io", "images", "ls").Output()
	if err != nil {
		return "", fmt.Errorf("ctr images ls: %w", err)
	}
	return strings.Join(refsWithDigest(string(ls), digests), ", "), nil
}

// refsWithDigest returns the references of `ctr images ls` output (REF TYPE DIGEST ...)
// whose digest is in digests. (ctr's import progress shows mangled names.)
func refsWithDigest(ls string, digests map[string]bool) []string {
	var refs []string
	for _, line := range strings.Split(ls, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && digests[f[2]] && !strings.HasPrefix(f[0], "sha256:") {
			refs = append(refs, f[0])
		}
	}
	return refs
}

// distImages lists dist/images/*.tar of the clone (what `make image` writes).
func distImages(repo string) []string {
	m, _ := filepath.Glob(filepath.Join(repo, "dist", "images", "*.tar"))
	return m
}
