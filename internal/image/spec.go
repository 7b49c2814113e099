// Package image builds the project's container images without Docker: static Go binaries
// on an empty base, one OCI image index per image (linux/amd64 and linux/arm64 by
// default), each written as an OCI image layout in a tarball that `ctr images import`
// reads. make image runs it through hack/image.
//
// The specs below are the single source of truth for what is in each image and how it
// runs; the Dockerfile at the repository root builds the same images with Docker, and
// test/image checks that it agrees with them.
package image

import (
	"fmt"
	"maps"
	"path"
	"slices"
)

// What every image shares.
const (
	// Module is the Go module the binaries are built from.
	Module = "github.com/queuejob/queuejob-operator"
	// Source is the label org.opencontainers.image.source.
	Source = "https://github.com/queuejob/queuejob-operator"
	// DefaultRepo is where the images are published: DefaultRepo/NAME:VERSION.
	DefaultRepo = "ghcr.io/queuejob"
	// User is the numeric, non-root user and group the images run as (distroless's
	// "nonroot"); numeric, so that runAsNonRoot can verify it without an /etc/passwd.
	User = "65532:65532"
	// BinDir holds the binaries of the worker images; it is the images' whole PATH, so
	// that a pod's command can name a binary without its directory.
	BinDir = "/usr/local/bin"
	// VersionPackage is the package whose Version and Revision the linker sets.
	VersionPackage = Module + "/pkg/version"
)

// Annotations and labels.
const (
	LabelSource      = "org.opencontainers.image.source"
	LabelVersion     = "org.opencontainers.image.version"
	LabelRevision    = "org.opencontainers.image.revision"
	LabelTitle       = "org.opencontainers.image.title"
	LabelDescription = "org.opencontainers.image.description"
	// AnnotationRefName is the OCI layout's name of an image: its tag.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the full reference containerd names an imported image by
	// (ctr images import reads it from index.json before AnnotationRefName).
	AnnotationImageName = "io.containerd.image.name"
)

// File is a binary in an image.
type File struct {
	// Package is the Go main package, relative to the module root, e.g. "./cmd".
	Package string
	// Path is where the binary is in the image, e.g. "/usr/local/bin/pi".
	Path string
}

// Spec is what one image holds and how it runs.
type Spec struct {
	// Name is the image's name under the repository, and the Dockerfile's target.
	Name        string
	Description string
	// Files are the image's binaries: all of its content besides their directories.
	Files      []File
	Entrypoint []string
	// Ports are the exposed ports, "PORT/tcp".
	Ports []string
}

// Env is the environment of every image: a PATH of BinDir alone.
func (s Spec) Env() []string { return []string{"PATH=" + BinDir} }

// User is the user every image runs as.
func (s Spec) User() string { return User }

// Ref is the image's reference in repo at version: REPO/NAME:VERSION.
func (s Spec) Ref(repo, version string) string { return fmt.Sprintf("%s/%s:%s", repo, s.Name, version) }

// Labels are the image config's labels (and the image index's annotations). The
// creation time is the config's created field, not a label: the Dockerfile could not set
// a label to the same reproducible time.
func (s Spec) Labels(version, revision string) map[string]string {
	return map[string]string{
		LabelSource:      Source,
		LabelVersion:     version,
		LabelRevision:    revision,
		LabelTitle:       s.Name,
		LabelDescription: s.Description,
	}
}

// StaticLabels are the labels whose values do not depend on the build: what the
// Dockerfile must set literally.
func (s Spec) StaticLabels() map[string]string {
	l := s.Labels("", "")
	for _, k := range []string{LabelVersion, LabelRevision} {
		delete(l, k)
	}
	return l
}

// LabelKeys are the keys of Labels, sorted.
func (s Spec) LabelKeys() []string {
	return keys(s.Labels("", ""))
}

func keys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

func bin(name string) string { return path.Join(BinDir, name) }

// Specs are the project's images. The manager's binary is /manager, the path the chart's
// and config/manager's Deployments run (command: ["/manager"]); the workers' binaries
// are on the PATH, so that a pod's command: ["queuejob-worker", "--", "cat"] or
// ["job-wq-2", "--sleep=10s"] finds them.
func Specs() []Spec {
	return []Spec{
		{
			Name:        "queuejob-operator",
			Description: "The queuejob-operator controller manager.",
			Files:       []File{{Package: "./cmd", Path: "/manager"}},
			Entrypoint:  []string{"/manager"},
			// --metrics-bind-address (8080 plain, 8443 the chart's secure default),
			// --health-probe-bind-address (8081).
			Ports: []string{"8080/tcp", "8081/tcp", "8443/tcp"},
		},
		{
			Name:        "queuejob-worker",
			Description: "queuejob-worker runs a command once per item of a QueueJob's queue.",
			Files:       []File{{Package: "./cmd/queuejob-worker", Path: bin("queuejob-worker")}},
			Entrypoint:  []string{bin("queuejob-worker")},
		},
		{
			Name:        "pi",
			Description: "The pi example's worker: prints pi to --digits digits.",
			Files:       []File{{Package: "./examples/pi", Path: bin("pi")}},
			Entrypoint:  []string{bin("pi")},
		},
		{
			Name:        "job-wq-1",
			Description: "The job-wq-1 example's worker: queuejob-worker -- cat, one message a pod.",
			Files: []File{
				{Package: "./cmd/queuejob-worker", Path: bin("queuejob-worker")},
				{Package: "./examples/job-wq-1/cat", Path: bin("cat")},
			},
			Entrypoint: []string{bin("queuejob-worker"), "--", "cat"},
		},
		{
			Name:        "job-wq-2",
			Description: "The job-wq-2 example's worker: takes items from Redis until the queue is empty.",
			Files:       []File{{Package: "./examples/job-wq-2", Path: bin("job-wq-2")}},
			Entrypoint:  []string{bin("job-wq-2")},
		},
	}
}

// Lookup returns the spec of the image name.
func Lookup(name string) (Spec, bool) {
	for _, s := range Specs() {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// Names are the names of Specs, in order.
func Names() []string {
	var out []string
	for _, s := range Specs() {
		out = append(out, s.Name)
	}
	return out
}
