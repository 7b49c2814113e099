// Package image tests the images of make image (internal/image): it builds them into a
// temporary directory, reads the tarballs back with go-containerregistry as an OCI
// layout, checks the index, manifests, configs and layers against the specs, and runs
// the binaries of this machine's platform extracted from the layers. dockerfile_test.go
// checks that the Dockerfile builds the same images.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/queuejob/queuejob-operator/internal/image"
)

// The build's inputs: not the Makefile's, so that the checks see them come through.
const (
	testVersion  = "9.8.7-test"
	testRevision = "0123456789abcdef0123456789abcdef01234567"
	testRepo     = "registry.test/queuejob"
)

var testCreated = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// moduleDir is the module's root, two levels up from this package.
func moduleDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", d, err)
	}
	return d
}

func options(t testing.TB, out string, platforms ...v1.Platform) image.Options {
	return image.Options{
		ModuleDir: moduleDir(t),
		Version:   testVersion, Revision: testRevision, Repo: testRepo,
		Platforms: platforms, Created: testCreated, OutDir: out,
		Log: testLog{t},
		// The tests check the layers' content, not their size: the fastest gzip.
		CompressionLevel: gzip.BestSpeed,
	}
}

type testLog struct{ t testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// hostPlatform is the platform whose binaries can run here; the images are linux only.
func hostPlatform(t testing.TB) v1.Platform {
	if runtime.GOOS != "linux" {
		t.Skipf("the images are linux images; this is %s", runtime.GOOS)
	}
	return image.HostPlatform()
}

var (
	hostOnce    sync.Once
	hostResults []image.Result
	hostErr     error
	hostDir     string
)

// hostImages builds every image for this machine's platform, once for all tests.
func hostImages(t *testing.T) []image.Result {
	t.Helper()
	p := hostPlatform(t)
	hostOnce.Do(func() {
		hostDir, hostErr = os.MkdirTemp("", "queuejob-image-test-")
		if hostErr != nil {
			return
		}
		start := time.Now()
		hostResults, hostErr = image.Build(context.Background(), image.Specs(), options(t, hostDir, p))
		t.Logf("built %d images for %s in %s", len(hostResults), p, time.Since(start).Round(time.Millisecond))
	})
	if hostErr != nil {
		t.Fatalf("building the images: %v", hostErr)
	}
	return hostResults
}

func TestMain(m *testing.M) {
	code := m.Run()
	if hostDir != "" {
		_ = os.RemoveAll(hostDir)
	}
	os.Exit(code)
}

// readLayout untars a tarball and opens it as an OCI image layout.
func readLayout(t *testing.T, tarball string) (layout.Path, []byte) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(tarball)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean(h.Name)
		if strings.HasPrefix(name, "..") || path.IsAbs(name) {
			t.Fatalf("%s: unsafe path %q", tarball, h.Name)
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("%s: entry %q of type %q; want only files and directories", tarball, h.Name, h.Typeflag)
		}
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	return lp, raw
}

// imageIndex checks the layout's index.json (one image index, named as ctr images
// import names it) and returns that image index.
func imageIndex(t *testing.T, lp layout.Path, r image.Result) v1.ImageIndex {
	t.Helper()
	top, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.MediaType != types.OCIImageIndex {
		t.Errorf("index.json's manifest is a %s, want an OCI image index", d.MediaType)
	}
	if d.Digest != r.Digest {
		t.Errorf("index.json's manifest is %s, the build said %s", d.Digest, r.Digest)
	}
	wantRef := testRepo + "/" + r.Spec.Name + ":" + testVersion
	if r.Ref != wantRef {
		t.Errorf("ref %q, want %q", r.Ref, wantRef)
	}
	// containerd (ctr images import, the CRI) names the image by this annotation.
	if got := d.Annotations[image.AnnotationImageName]; got != wantRef {
		t.Errorf("index.json annotation %s = %q, want %q", image.AnnotationImageName, got, wantRef)
	}
	if got := d.Annotations[image.AnnotationRefName]; got != testVersion {
		t.Errorf("index.json annotation %s = %q, want the tag %q", image.AnnotationRefName, got, testVersion)
	}
	idx, err := top.ImageIndex(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// checkImage checks one platform's image against its spec and returns its layer's
// files by path.
func checkImage(t *testing.T, idx v1.ImageIndex, d v1.Descriptor, s image.Spec, p v1.Platform) map[string][]byte {
	t.Helper()
	if d.MediaType != types.OCIManifestSchema1 {
		t.Errorf("%s: manifest media type %s, want %s", p, d.MediaType, types.OCIManifestSchema1)
	}
	if d.ArtifactType != "" {
		t.Errorf("%s: descriptor has artifactType %q; images have none", p, d.ArtifactType)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("%s: config media type %s", p, m.Config.MediaType)
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("%s: layers %+v, want one %s", p, m.Layers, types.OCILayer)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != p.OS || cf.Architecture != p.Architecture || cf.Variant != p.Variant {
		t.Errorf("config platform %s/%s/%s, want %s", cf.OS, cf.Architecture, cf.Variant, p)
	}
	if !cf.Created.Time.Equal(testCreated) {
		t.Errorf("config created %s, want %s", cf.Created.Time, testCreated)
	}
	c := cf.Config
	if !slices.Equal(c.Entrypoint, s.Entrypoint) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want entrypoint %q and no cmd", c.Entrypoint, c.Cmd, s.Entrypoint)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Env, []string{"PATH=/usr/local/bin"}) {
		t.Errorf("env %q, want PATH=/usr/local/bin alone", c.Env)
	}
	var ports []string
	for port := range c.ExposedPorts {
		ports = append(ports, port)
	}
	slices.Sort(ports)
	if !slices.Equal(ports, s.Ports) {
		t.Errorf("exposed ports %q, want %q", ports, s.Ports)
	}
	wantLabels := map[string]string{
		"org.opencontainers.image.source":      "https://github.com/queuejob/queuejob-operator",
		"org.opencontainers.image.version":     testVersion,
		"org.opencontainers.image.revision":    testRevision,
		"org.opencontainers.image.title":       s.Name,
		"org.opencontainers.image.description": s.Description,
	}
	if !mapsEqual(c.Labels, wantLabels) {
		t.Errorf("labels %q, want %q", c.Labels, wantLabels)
	}

	// The layer: the binaries (0755, root's) and their directories, nothing else.
	l := m.Layers[0]
	layer, err := img.LayerByDigest(l.Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(testCreated) {
			t.Errorf("layer entry %s: uid %d gid %d mtime %s, want root's and %s", h.Name, h.Uid, h.Gid, h.ModTime, testCreated)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if h.Mode != 0o755 {
				t.Errorf("layer dir %s: mode %o, want 755", h.Name, h.Mode)
			}
		case tar.TypeReg:
			if h.Mode != 0o755 {
				t.Errorf("layer file %s: mode %o, want 755", h.Name, h.Mode)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files["/"+h.Name] = b
		default:
			t.Errorf("layer entry %s: type %q", h.Name, h.Typeflag)
		}
	}
	var want []string
	dirs := map[string]bool{}
	for _, f := range s.Files {
		want = append(want, strings.TrimPrefix(f.Path, "/"))
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				want = append(want, strings.TrimPrefix(d, "/")+"/")
			}
		}
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("layer entries %q, want %q", names, want)
	}
	// Static binaries for p: no ELF interpreter (an empty base has no libc).
	for _, f := range s.Files {
		checkELF(t, f.Path, files[f.Path], p)
	}
	return files
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func checkELF(t *testing.T, name string, b []byte, p v1.Platform) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Errorf("%s: not an ELF binary: %v", name, err)
		return
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[p.Architecture]
	if f.Machine != want {
		t.Errorf("%s: ELF machine %s, want %s for %s", name, f.Machine, want, p)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s: dynamically linked (has an ELF interpreter); want a static binary", name)
		}
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s: has a symbol table; want it stripped (-s -w)", name)
	}
}

// A run of an image's entrypoint, or of a binary on its PATH, as a pod would run it.
type run struct {
	args       []string // appended to the entrypoint
	command    []string // instead of the entrypoint, resolved on the image's PATH
	stdin      string
	wantCode   int
	wantStdout string // exact, unless empty
	wantOutput string // in stdout or stderr
}

// runs are what test/image runs in each image.
var runs = map[string][]run{
	"queuejob-operator": {
		{args: []string{"--version"}, wantStdout: "queuejob-operator " + testVersion + " (revision " + testRevision + ")\n"},
	},
	"queuejob-worker": {
		{args: []string{"--version"}, wantStdout: "queuejob-worker " + testVersion + " (revision " + testRevision + ")\n"},
	},
	"pi": {
		{args: []string{"--digits=10"}, wantStdout: "3.141592654\n"},
	},
	"job-wq-1": {
		// The entrypoint finds cat on the PATH; then it wants a queue, which it has not.
		{wantCode: 2, wantOutput: "QUEUEJOB_BACKEND is not set"},
		// The sample QueueJob's command, and its parts.
		{command: []string{"queuejob-worker", "--", "cat"}, wantCode: 2, wantOutput: "QUEUEJOB_BACKEND is not set"},
		{command: []string{"queuejob-worker", "--version"}, wantStdout: "queuejob-worker " + testVersion + " (revision " + testRevision + ")\n"},
		{command: []string{"cat"}, stdin: "a message", wantStdout: "a message"},
	},
	"job-wq-2": {
		{args: []string{"--help"}, wantOutput: "-sleep duration"},
	},
}

// runIn runs r in root, the image's files extracted: absolute paths and the image's
// PATH are taken under root, and the environment is the image's alone.
func runIn(t *testing.T, root string, cf *v1.ConfigFile, r run) {
	t.Helper()
	argv := append(slices.Clone(cf.Config.Entrypoint), r.args...)
	if r.command != nil {
		argv = slices.Clone(r.command)
	}
	var env []string
	for _, e := range cf.Config.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			var dirs []string
			for _, d := range filepath.SplitList(v) {
				dirs = append(dirs, filepath.Join(root, d))
			}
			e = "PATH=" + strings.Join(dirs, string(filepath.ListSeparator))
		}
		env = append(env, e)
	}
	bin := argv[0]
	if path.IsAbs(bin) {
		bin = filepath.Join(root, bin)
	} else {
		// As the runtime does, with the image's PATH.
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, "PATH="); ok {
				for _, d := range filepath.SplitList(v) {
					if _, err := os.Stat(filepath.Join(d, bin)); err == nil {
						bin = filepath.Join(d, bin)
						break
					}
				}
			}
		}
		if !filepath.IsAbs(bin) {
			t.Fatalf("%q is not on the image's PATH", argv[0])
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Env = env
	cmd.Dir = root
	cmd.Stdin = strings.NewReader(r.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running %q: %v", argv, err)
	}
	t.Logf("%q: exit %d\nstdout: %.500s\nstderr: %.500s", argv, code, stdout.String(), stderr.String())
	if code != r.wantCode {
		t.Errorf("%q exited %d, want %d", argv, code, r.wantCode)
	}
	if r.wantStdout != "" && stdout.String() != r.wantStdout {
		t.Errorf("%q printed %q, want %q", argv, stdout.String(), r.wantStdout)
	}
	if r.wantOutput != "" && !strings.Contains(stdout.String()+stderr.String(), r.wantOutput) {
		t.Errorf("%q: output does not contain %q", argv, r.wantOutput)
	}
}

func TestImages(t *testing.T) {
	results := hostImages(t)
	p := hostPlatform(t)
	var names []string
	for _, r := range results {
		names = append(names, r.Spec.Name)
	}
	if want := []string{"queuejob-operator", "queuejob-worker", "pi", "job-wq-1", "job-wq-2"}; !slices.Equal(names, want) {
		t.Errorf("built %q, want %q", names, want)
	}
	for _, r := range results {
		t.Run(r.Spec.Name, func(t *testing.T) {
			if r.Tarball != filepath.Join(hostDir, r.Spec.Name+".tar") {
				t.Errorf("tarball %s, want OUT/%s.tar", r.Tarball, r.Spec.Name)
			}
			st, err := os.Stat(r.Tarball)
			if err != nil {
				t.Fatal(err)
			}
			if st.Size() != r.Size {
				t.Errorf("size %d, the build said %d", st.Size(), r.Size)
			}
			t.Logf("%s: %.1f MiB for %s", r.Tarball, float64(r.Size)/(1<<20), p)
			lp, _ := readLayout(t, r.Tarball)
			idx := imageIndex(t, lp, r)
			im, err := idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			if len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || !im.Manifests[0].Platform.Equals(p) {
				t.Fatalf("image index manifests %+v, want one for %s", im.Manifests, p)
			}
			files := checkImage(t, idx, im.Manifests[0], r.Spec, p)

			// Extract the layer and run what a pod would run.
			root := t.TempDir()
			for name, b := range files {
				dst := filepath.Join(root, filepath.FromSlash(name))
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dst, b, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			img, err := idx.Image(im.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			rs, ok := runs[r.Spec.Name]
			if !ok {
				t.Fatalf("no runs for image %s: add some to runs", r.Spec.Name)
			}
			for _, run := range rs {
				runIn(t, root, cf, run)
			}
		})
	}
}

// TestMultiArch builds the smallest image (pi) for both platforms of make image, twice:
// the index has a manifest per platform with that platform's binary, and the second
// build is byte for byte the first (reproducible: same inputs, same digests).
func TestMultiArch(t *testing.T) {
	hostPlatform(t)
	s, ok := image.Lookup("pi")
	if !ok {
		t.Fatal("no pi image")
	}
	var sums [2][32]byte
	var digests [2]v1.Hash
	for i := range 2 {
		out := t.TempDir()
		o := options(t, out, image.DefaultPlatforms...)
		o.WorkDir = t.TempDir()
		start := time.Now()
		rs, err := image.Build(context.Background(), []image.Spec{s}, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d: %s", i+1, time.Since(start).Round(time.Millisecond))
		b, err := os.ReadFile(rs[0].Tarball)
		if err != nil {
			t.Fatal(err)
		}
		sums[i], digests[i] = sha256.Sum256(b), rs[0].Digest
		if i > 0 {
			continue
		}
		lp, _ := readLayout(t, rs[0].Tarball)
		idx := imageIndex(t, lp, rs[0])
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range im.Manifests {
			if d.Platform == nil {
				t.Fatalf("manifest %s has no platform", d.Digest)
			}
			got = append(got, d.Platform.String())
			checkImage(t, idx, d, s, *d.Platform)
		}
		if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
			t.Errorf("platforms %q, want %q", got, want)
		}
		for k, v := range map[string]string{image.LabelVersion: testVersion, image.LabelRevision: testRevision, image.LabelSource: image.Source} {
			if im.Annotations[k] != v {
				t.Errorf("image index annotation %s = %q, want %q", k, im.Annotations[k], v)
			}
		}
	}
	if digests[0] != digests[1] || sums[0] != sums[1] {
		t.Errorf("two builds of the same sources differ: digests %s and %s, tarball sha256 %x and %x", digests[0], digests[1], sums[0], sums[1])
	}
}
