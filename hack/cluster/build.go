package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// The components are built from source through the Go module proxy into a cache outside
// the clone, like hack/envtest.sh does for kube-apiserver and etcd:
//
//	<cache>/k8s/v1.37.2/{kube-controller-manager,kube-scheduler,kube-proxy,kubectl,kubelet}
//	<cache>/containerd/v2.3.4/{containerd,containerd-shim-runc-v2,ctr}
//
// with <cache> = ${XDG_CACHE_HOME:-~/.cache}/queuejob-operator. Each set is built in a
// throwaway module (kept in <dir>/.mod for the next build), so nothing touches go.mod.

func defaultCacheDir() string {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "queuejob-operator")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "queuejob-operator")
}

// k8sBinary is a Kubernetes component and whether it is built with cgo.
type k8sBinary struct {
	Name string
	CGO  bool
}

// k8sBinaries are built from k8s.io/kubernetes; kubelet with cgo (as upstream), the rest
// static.
var k8sBinaries = []k8sBinary{
	{"kube-controller-manager", false},
	{"kube-scheduler", false},
	{"kube-proxy", false},
	{"kubectl", false},
	{"kubelet", true},
}

var containerdBinaries = []string{"containerd", "containerd-shim-runc-v2", "ctr"}

// k8sLdflags sets the version that the binaries report (v1.37.2, not v0.0.0-master); the
// same flags as hack/envtest.sh, so builds share the Go build cache.
func k8sLdflags(version string) string {
	parts := strings.SplitN(version, ".", 3)
	ld := "-s -w"
	for _, p := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		ld += fmt.Sprintf(" -X %s.gitVersion=v%s -X %s.gitMajor=%s -X %s.gitMinor=%s -X %s.gitTreeState=clean",
			p, version, p, parts[0], p, parts[1], p)
	}
	return ld
}

func containerdLdflags(version string) string {
	return fmt.Sprintf("-X github.com/containerd/containerd/v2/version.Version=%s -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2", version)
}

// stagingReplaces reads k8s.io/kubernetes' go.mod and returns a -replace for every staging
// module, pinned to v0.<minor>.<patch>.
var stagingRe = regexp.MustCompile(`(?m)^\s*(k8s\.io/[a-z0-9-]+)\s+=>\s+\./staging/`)

func stagingReplaces(gomod, version string) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range stagingRe.FindAllStringSubmatch(gomod, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, fmt.Sprintf("-replace=%s=%s@v0.%s", m[1], m[1], strings.SplitN(version, ".", 2)[1]))
		}
	}
	sort.Strings(out)
	return out
}

// builder runs go commands with progress on stderr and output in a log file.
type builder struct {
	log   string
	start time.Time
}

func (b *builder) run(dir, what string, env []string, name string, args ...string) error {
	f, err := os.OpenFile(b.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "\n==== %s: %s %s\n", what, name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"GOFLAGS=-mod=mod", "GOWORK=off"}, env...)...)
	cmd.Stdout, cmd.Stderr = f, f
	t0 := time.Now()
	logf("  %s ...", what)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("%s failed (%v); the end of %s:\n%s", what, err, b.log, tail(b.log, 30))
			}
			logf("  %s done in %s (total %s)", what, since(t0), since(b.start))
			return nil
		case <-tick.C:
			logf("  %s ... %s (total %s)", what, since(t0), since(b.start))
		}
	}
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Second) }

func tail(file string, n int) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func executable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lockDir takes an exclusive flock on dir/.lock: one builder at a time.
func lockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// ensureK8s builds the Kubernetes components missing from dir: those named in only, or
// all of them.
func ensureK8s(dir string, only ...string) error {
	missing := func() []int {
		var m []int
		for i, b := range k8sBinaries {
			if len(only) > 0 && !slices.Contains(only, b.Name) {
				continue
			}
			if !executable(filepath.Join(dir, b.Name)) {
				m = append(m, i)
			}
		}
		return m
	}
	if len(missing()) == 0 {
		return nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	todo := missing()
	if len(todo) == 0 {
		return nil
	}
	b := &builder{log: filepath.Join(dir, "build.log"), start: time.Now()}
	logf("building %d Kubernetes v%s components into %s (cold: 10-20 min on 2 cores, longer on a busy machine; log %s)", len(todo), k8sVersion, dir, b.log)
	mod := filepath.Join(dir, ".mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(mod, "go.sum")); err != nil {
		_ = os.Remove(filepath.Join(mod, "go.mod"))
		if err := b.run(mod, "go mod init", nil, "go", "mod", "init", "queuejob-cluster-k8s"); err != nil {
			return err
		}
		out, err := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@v"+k8sVersion).Output()
		if err != nil {
			return fmt.Errorf("go mod download k8s.io/kubernetes@v%s: %w", k8sVersion, err)
		}
		var info struct{ GoMod string }
		if err := json.Unmarshal(out, &info); err != nil {
			return err
		}
		gomod, err := os.ReadFile(info.GoMod)
		if err != nil {
			return err
		}
		reps := stagingReplaces(string(gomod), k8sVersion)
		if len(reps) == 0 {
			return fmt.Errorf("no staging modules in %s", info.GoMod)
		}
		if err := b.run(mod, "pin the staging modules", nil, "go", append([]string{"mod", "edit"}, reps...)...); err != nil {
			return err
		}
		if err := b.run(mod, "go get k8s.io/kubernetes@v"+k8sVersion, nil, "go", "get", "k8s.io/kubernetes@v"+k8sVersion); err != nil {
			return err
		}
	}
	for n, i := range todo {
		bin := k8sBinaries[i]
		env := []string{"CGO_ENABLED=0"}
		if bin.CGO {
			env = nil
		}
		tmp := filepath.Join(dir, "."+bin.Name+".tmp")
		what := fmt.Sprintf("[%d/%d] %s", n+1, len(todo), bin.Name)
		if err := b.run(mod, what, env, "go", "build", "-trimpath", "-ldflags", k8sLdflags(k8sVersion),
			"-o", tmp, "k8s.io/kubernetes/cmd/"+bin.Name); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, bin.Name)); err != nil {
			return err
		}
	}
	logf("built the Kubernetes components in %s", since(b.start))
	return nil
}

const containerdTools = `//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
`

// ensureContainerd builds containerd, its runc shim and ctr into dir if missing.
func ensureContainerd(dir string) error {
	have := func() bool {
		for _, n := range containerdBinaries {
			if !executable(filepath.Join(dir, n)) {
				return false
			}
		}
		return true
	}
	if have() {
		return nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	if have() {
		return nil
	}
	b := &builder{log: filepath.Join(dir, "build.log"), start: time.Now()}
	logf("building containerd %s, containerd-shim-runc-v2 and ctr into %s (cold: 2-6 min; log %s)", containerdVersion, dir, b.log)
	mod := filepath.Join(dir, ".mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(mod, "go.sum")); err != nil {
		_ = os.Remove(filepath.Join(mod, "go.mod"))
		if err := b.run(mod, "go mod init", nil, "go", "mod", "init", "queuejob-cluster-containerd"); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(mod, "tools.go"), []byte(containerdTools), 0o644); err != nil {
			return err
		}
		if err := b.run(mod, "go get containerd "+containerdVersion, nil, "go", "get", "github.com/containerd/containerd/v2@"+containerdVersion); err != nil {
			return err
		}
		if err := b.run(mod, "go mod tidy", nil, "go", "mod", "tidy"); err != nil {
			return err
		}
	}
	tmp := filepath.Join(dir, ".out")
	_ = os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	args := []string{"build", "-trimpath", "-tags", "no_btrfs", "-ldflags", containerdLdflags(containerdVersion), "-o", tmp + "/"}
	for _, n := range containerdBinaries {
		args = append(args, "github.com/containerd/containerd/v2/cmd/"+n)
	}
	if err := b.run(mod, "containerd, containerd-shim-runc-v2, ctr", nil, "go", args...); err != nil {
		return err
	}
	for _, n := range containerdBinaries {
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	_ = os.RemoveAll(tmp)
	return nil
}

// envtestDir runs hack/envtest.sh (kube-apiserver and etcd: the cache, or a build).
func envtestDir(repo string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "hack", "envtest.sh"))
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "ENVTEST_K8S_VERSION="+k8sVersion, "ENVTEST_ETCD_VERSION="+etcdVersion)
	cmd.Stderr = os.Stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/envtest.sh: %w", err)
	}
	return strings.TrimSpace(out.String()), nil
}

// ensureComponents builds only the named Kubernetes components (e.g.
// kube-controller-manager for make bench) and returns their paths.
func ensureComponents(cache string, names []string) ([]string, error) {
	dir := filepath.Join(cache, "k8s", "v"+k8sVersion)
	var paths []string
	for _, n := range names {
		if !slices.ContainsFunc(k8sBinaries, func(b k8sBinary) bool { return b.Name == n }) {
			return nil, fmt.Errorf("no component %q: the components are kube-controller-manager, kube-scheduler, kube-proxy, kubectl and kubelet", n)
		}
		paths = append(paths, filepath.Join(dir, n))
	}
	return paths, ensureK8s(dir, names...)
}

// ensureBinaries provides every binary, building what the caches lack.
func ensureBinaries(repo, cache string) (Bins, error) {
	k8sDir := filepath.Join(cache, "k8s", "v"+k8sVersion)
	ctrdDir := filepath.Join(cache, "containerd", containerdVersion)
	et, err := envtestDir(repo)
	if err != nil {
		return Bins{}, err
	}
	if err := ensureContainerd(ctrdDir); err != nil {
		return Bins{}, err
	}
	if err := ensureK8s(k8sDir); err != nil {
		return Bins{}, err
	}
	return Bins{
		Etcd:           filepath.Join(et, "etcd"),
		APIServer:      filepath.Join(et, "kube-apiserver"),
		ControllerMgr:  filepath.Join(k8sDir, "kube-controller-manager"),
		Scheduler:      filepath.Join(k8sDir, "kube-scheduler"),
		Kubelet:        filepath.Join(k8sDir, "kubelet"),
		Proxy:          filepath.Join(k8sDir, "kube-proxy"),
		Kubectl:        filepath.Join(k8sDir, "kubectl"),
		Containerd:     filepath.Join(ctrdDir, "containerd"),
		ContainerdShim: filepath.Join(ctrdDir, "containerd-shim-runc-v2"),
		Ctr:            filepath.Join(ctrdDir, "ctr"),
	}, nil
}

// ensureKueue builds Kueue's manager (sigs.k8s.io/kueue/cmd/kueue, static, as upstream's
// image) into dir/kueue if missing, in a throwaway module like the others, and returns its
// path. Kueue's go.mod has no replace directives, so plain `go get` resolves it as upstream.
func ensureKueue(dir string) (string, error) {
	bin := filepath.Join(dir, "kueue")
	if executable(bin) {
		return bin, nil
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return "", err
	}
	defer unlock()
	if executable(bin) {
		return bin, nil
	}
	b := &builder{log: filepath.Join(dir, "build.log"), start: time.Now()}
	logf("building Kueue %s's manager into %s (cold: ~4 min on 2 cores; log %s)", kueueVersion, dir, b.log)
	mod := filepath.Join(dir, ".mod")
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(mod, "go.mod")); err != nil {
		if err := b.run(mod, "go mod init", nil, "go", "mod", "init", "queuejob-cluster-kueue"); err != nil {
			return "", err
		}
		if err := b.run(mod, "go get "+kueueModule+"@"+kueueVersion, nil, "go", "get", kueueModule+"@"+kueueVersion); err != nil {
			return "", err
		}
	}
	tmp := filepath.Join(dir, ".kueue.tmp")
	ld := "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=" + kueueVersion
	// nice: it often builds beside a running cluster.
	if err := b.run(mod, "kueue", []string{"CGO_ENABLED=0"}, "nice", "-n", "10", "go", "build", "-trimpath", "-ldflags", ld,
		"-o", tmp, kueueModule+"/cmd/kueue"); err != nil {
		return "", err
	}
	return bin, os.Rename(tmp, bin)
}
