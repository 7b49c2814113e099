package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultPlatforms are the platforms of make image.
var DefaultPlatforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// Options say how to build.
type Options struct {
	// ModuleDir is the module's root; empty: the current directory.
	ModuleDir string
	// Version and Revision go into the binaries (pkg/version), the labels and the
	// references (REPO/NAME:VERSION).
	Version, Revision string
	// Repo is the images' repository, e.g. DefaultRepo.
	Repo string
	// Platforms each image is built for: its index has one manifest per platform.
	Platforms []v1.Platform
	// Created is the images' creation time, also the time of every file in them: with
	// the same sources, a fixed Created gives the same digests.
	Created time.Time
	// OutDir gets one tarball per image, NAME.tar.
	OutDir string
	// WorkDir holds the compiled binaries and the layouts; empty: a temporary directory,
	// removed at the end.
	WorkDir string
	// Log gets the commands run and the progress; nil: nothing.
	Log io.Writer
	// CompressionLevel is the layers' gzip level; 0: gzip.DefaultCompression (6), which
	// is within 1% of level 9's size at half its time on the manager's binary.
	CompressionLevel int
}

// Result is one image built.
type Result struct {
	Spec Spec
	// Ref is REPO/NAME:VERSION, the name the tarball's index.json gives the image.
	Ref string
	// Tarball is the path of OutDir/NAME.tar, Size its size in bytes.
	Tarball string
	Size    int64
	// Digest is the image index's digest.
	Digest v1.Hash
}

// ParsePlatforms parses "linux/amd64,linux/arm64".
func ParsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := v1.ParsePlatform(f)
		if err != nil {
			return nil, err
		}
		if p.OS != "linux" {
			return nil, fmt.Errorf("platform %q: only linux images are built", f)
		}
		out = append(out, *p)
	}
	if len(out) == 0 {
		return nil, errors.New("no platform")
	}
	return out, nil
}

// Build compiles the binaries of specs for every platform and writes one tarball per
// spec into o.OutDir.
func Build(ctx context.Context, specs []Spec, o Options) ([]Result, error) {
	if len(specs) == 0 {
		return nil, errors.New("no image to build")
	}
	if len(o.Platforms) == 0 {
		return nil, errors.New("no platform")
	}
	if o.Version == "" || o.Revision == "" || o.Repo == "" || o.OutDir == "" {
		return nil, errors.New("Version, Revision, Repo and OutDir must be set")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.CompressionLevel == 0 {
		o.CompressionLevel = gzip.DefaultCompression
	}
	if o.WorkDir == "" {
		dir, err := os.MkdirTemp("", "queuejob-image-")
		if err != nil {
			return nil, err
		}
		defer func() { _ = os.RemoveAll(dir) }()
		o.WorkDir = dir
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, err
	}

	// The binaries of every platform, by platform and package.
	bins := map[string]map[string]string{}
	for _, p := range o.Platforms {
		b, err := compile(ctx, specs, p, o)
		if err != nil {
			return nil, err
		}
		bins[p.String()] = b
	}

	var results []Result
	for _, s := range specs {
		var adds []mutate.IndexAddendum
		for _, p := range o.Platforms {
			img, err := buildImage(s, p, bins[p.String()], o)
			if err != nil {
				return nil, fmt.Errorf("image %s for %s: %w", s.Name, p, err)
			}
			adds = append(adds, mutate.IndexAddendum{Add: plainImage{img}, Descriptor: v1.Descriptor{Platform: &p}})
		}
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
		// The labels that describe the image as a whole are also the index's annotations.
		anns := s.Labels(o.Version, o.Revision)
		idx = mutate.Annotations(idx, anns).(v1.ImageIndex)
		r, err := writeTarball(s, idx, o)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", s.Name, err)
		}
		fmt.Fprintf(o.Log, "%s\t%s\t%s\t%.1f MiB\n", r.Tarball, r.Ref, r.Digest, float64(r.Size)/(1<<20))
		results = append(results, r)
	}
	return results, nil
}

// plainImage is an image whose descriptor in an index has no artifactType:
// go-containerregistry would set it to the config's media type, which the OCI spec
// reserves for artifacts (docker buildx leaves it out too).
type plainImage struct{ v1.Image }

func (plainImage) ArtifactType() (string, error) { return "", nil }

// LDFlags are the linker flags of every binary: stripped, with Version and Revision.
func LDFlags(version, revision string) string {
	return fmt.Sprintf("-s -w -X %s.Version=%s -X %s.Revision=%s", VersionPackage, version, VersionPackage, revision)
}

// compile builds every package of specs for p with one go build and returns the
// binaries by package.
func compile(ctx context.Context, specs []Spec, p v1.Platform, o Options) (map[string]string, error) {
	var pkgs []string
	for _, s := range specs {
		for _, f := range s.Files {
			if !slices.Contains(pkgs, f.Package) {
				pkgs = append(pkgs, f.Package)
			}
		}
	}
	dir := filepath.Join(o.WorkDir, "bin", p.OS+"_"+p.Architecture+strings.ReplaceAll(p.Variant, "/", ""))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// go build -o DIR/ names each binary after the last element of its package path.
	out := map[string]string{}
	byName := map[string]string{}
	for _, pkg := range pkgs {
		name := path.Base(pkg)
		if other, ok := byName[name]; ok {
			return nil, fmt.Errorf("packages %s and %s would both build %s", other, pkg, name)
		}
		byName[name] = pkg
		out[pkg] = filepath.Join(dir, name)
	}
	args := append([]string{"build", "-trimpath", "-buildvcs=false", "-ldflags", LDFlags(o.Version, o.Revision), "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.ModuleDir
	env := []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Architecture}
	if p.Architecture == "arm" && p.Variant != "" {
		env = append(env, "GOARM="+strings.TrimPrefix(p.Variant, "v"))
	}
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	fmt.Fprintf(o.Log, "%s go %s\n", strings.Join(env, " "), strings.Join(quoteArgs(args), " "))
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build for %s: %w", p, err)
	}
	fmt.Fprintf(o.Log, "built %d binaries for %s in %s\n", len(pkgs), p, time.Since(start).Round(time.Second))
	return out, nil
}

func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"'") {
			a = fmt.Sprintf("%q", a)
		}
		out[i] = a
	}
	return out
}

// buildImage is s for p: one layer of its binaries and their directories, and its
// config.
func buildImage(s Spec, p v1.Platform, bins map[string]string, o Options) (v1.Image, error) {
	layerTar, err := LayerTar(s, bins, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(o.CompressionLevel), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	created := v1.Time{Time: o.Created.UTC()}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	var paths []string
	for _, f := range s.Files {
		paths = append(paths, f.Path)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   created,
			CreatedBy: "hack/image: " + strings.Join(paths, " "),
			Comment:   "static Go binaries, CGO_ENABLED=0",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	ports := map[string]struct{}{}
	for _, port := range s.Ports {
		ports[port] = struct{}{}
	}
	if len(ports) == 0 {
		ports = nil
	}
	cf.Config = v1.Config{
		Entrypoint:   slices.Clone(s.Entrypoint),
		User:         s.User(),
		Env:          s.Env(),
		WorkingDir:   "/",
		ExposedPorts: ports,
		Labels:       s.Labels(o.Version, o.Revision),
	}
	return mutate.ConfigFile(img, cf)
}

// LayerTar is the uncompressed layer of s: the directories of its files (0755) and its
// files (0755, root-owned, from bins by package), every time mtime, in path order.
func LayerTar(s Spec, bins map[string]string, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range s.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("file path %q: want a clean absolute path", f.Path)
		}
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	type entry struct {
		name string
		src  string // "" for a directory
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{name: strings.TrimPrefix(d, "/") + "/"})
	}
	for _, f := range s.Files {
		src, ok := bins[f.Package]
		if !ok {
			return nil, fmt.Errorf("no binary of %s", f.Package)
		}
		entries = append(entries, entry{name: strings.TrimPrefix(f.Path, "/"), src: src})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, ModTime: mtime, Format: tar.FormatPAX}
		if e.src == "" {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			continue
		}
		b, err := os.ReadFile(e.src)
		if err != nil {
			return nil, err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o755, int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeTarball writes idx as an OCI image layout whose index.json names it REPO/NAME:VERSION,
// and tars the layout into OutDir/NAME.tar.
func writeTarball(s Spec, idx v1.ImageIndex, o Options) (Result, error) {
	ref := s.Ref(o.Repo, o.Version)
	dir := filepath.Join(o.WorkDir, "layout", s.Name)
	if err := os.RemoveAll(dir); err != nil {
		return Result{}, err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return Result{}, err
	}
	// containerd names the image by io.containerd.image.name; other tools by the OCI
	// ref.name, which is the tag alone.
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		AnnotationImageName: ref,
		AnnotationRefName:   o.Version,
	})); err != nil {
		return Result{}, err
	}
	digest, err := idx.Digest()
	if err != nil {
		return Result{}, err
	}
	out := filepath.Join(o.OutDir, s.Name+".tar")
	size, err := tarDir(dir, out, o.Created)
	if err != nil {
		return Result{}, err
	}
	return Result{Spec: s, Ref: ref, Tarball: out, Size: size, Digest: digest}, nil
}

// tarDir writes the files under dir into the tarball out, in a fixed order
// (oci-layout, index.json, then the blobs by path), with fixed times and owners, and
// returns its size.
func tarDir(dir, out string, mtime time.Time) (int64, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			rel += "/"
		}
		names = append(names, rel)
		return nil
	})
	if err != nil {
		return 0, err
	}
	rank := func(n string) int {
		switch n {
		case "oci-layout":
			return 0
		case "index.json":
			return 1
		}
		return 2
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	tw := tar.NewWriter(tmp)
	mtime = mtime.UTC().Truncate(time.Second)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: mtime, Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
			if err := tw.WriteHeader(h); err != nil {
				return 0, err
			}
			continue
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(n)))
		if err != nil {
			return 0, err
		}
		st, err := f.Stat()
		if err == nil {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, st.Size()
			err = tw.WriteHeader(h)
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		_ = f.Close()
		if err != nil {
			return 0, err
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	st, err := os.Stat(tmp.Name())
	if err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return 0, err
	}
	return st.Size(), os.Chmod(out, 0o644)
}

// HostPlatform is the platform of this machine's binaries, for running them in tests.
func HostPlatform() v1.Platform { return v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH} }
