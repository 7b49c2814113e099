package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// HostState is what up records about the host before it starts anything, so that down
// can put back what the kubelet, kube-proxy and the CNI plugins change outside the state
// directory. All paths are relative to Root ("/" on a real host; a temporary directory
// in the tests).
type HostState struct {
	Root string `json:"-"`
	// Sysctls maps a key under proc/sys (e.g. "vm/overcommit_memory") to its value before up.
	Sysctls map[string]string `json:"sysctls"`
	// Existed tells, for every tracked path, whether it existed before up.
	Existed map[string]bool `json:"existed"`
	// Netns lists the network namespaces in /run/netns before up.
	Netns []string `json:"netns"`
	// Chains lists the KUBE-* chains before up, as "iptables/nat/KUBE-X".
	Chains []string `json:"chains"`
	// KubepodsExisted is true if some kubelet's kubepods cgroup was there before up: down
	// then leaves the cgroups alone.
	KubepodsExisted bool `json:"kubepodsExisted"`
}

// trackedSysctls are the values the kubelet (setupKernelTunables), the ptp CNI plugin
// (ip_forward) and kube-proxy may write.
var trackedSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/ipv6/conf/all/forwarding",
	"net/bridge/bridge-nf-call-iptables",
}

type cleanup int

const (
	rmdirIfEmpty cleanup = iota // remove only if empty
	removeAll                   // remove with everything in it
	removeEmpty                 // remove its empty directories, depth first; never a file
)

// trackedPaths are the paths outside the state directory that the kubelet or containerd
// create (hard-coded in them), children before parents: down removes those that did
// not exist before up.
var trackedPaths = []struct {
	Path string
	How  cleanup
}{
	{"/var/lib/kubelet/device-plugins", removeAll},
	{"/var/lib/kubelet", rmdirIfEmpty},
	{"/var/log/containers", rmdirIfEmpty},
	{"/var/log/pods", rmdirIfEmpty},
	// Another containerd (with its own root) may use it too: only empty directories go.
	{"/run/containerd", removeEmpty},
	{"/run/netns", rmdirIfEmpty},
	// libcni's result cache (containerd's CNI) and util-linux's utab (the kubelet's mounts).
	{"/var/lib/cni", removeEmpty},
	{"/run/mount", removeEmpty},
	{"/opt/containerd", rmdirIfEmpty},
	{"/etc/cdi", rmdirIfEmpty},
	{"/run/cdi", rmdirIfEmpty},
	{"/run/nri", rmdirIfEmpty},
}

func (h *HostState) p(path string) string { return filepath.Join(h.Root, path) }

func (h *HostState) readSysctl(key string) (string, error) {
	b, err := os.ReadFile(h.p(filepath.Join("/proc/sys", key)))
	return strings.TrimSpace(string(b)), err
}

// recordHostState reads the current values of everything down restores.
func recordHostState(root string, chains []string) (*HostState, error) {
	h := &HostState{Root: root, Sysctls: map[string]string{}, Existed: map[string]bool{}, Chains: chains}
	for _, k := range trackedSysctls {
		v, err := h.readSysctl(k)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", k, err)
		}
		h.Sysctls[k] = v
	}
	for _, t := range trackedPaths {
		_, err := os.Lstat(h.p(t.Path))
		h.Existed[t.Path] = err == nil
	}
	h.Netns = listNetns(root)
	return h, nil
}

func listNetns(root string) []string {
	ents, err := os.ReadDir(filepath.Join(root, "/run/netns"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// newNetns returns the CNI namespaces (cni-*) in /run/netns that were not there at up.
func (h *HostState) newNetns() []string {
	old := map[string]bool{}
	for _, n := range h.Netns {
		old[n] = true
	}
	var out []string
	for _, n := range listNetns(h.Root) {
		if !old[n] && strings.HasPrefix(n, "cni-") {
			out = append(out, n)
		}
	}
	return out
}

// clusterSysctls are the values that the cluster's components write: the kubelet's
// setupKernelTunables, the ptp CNI plugin (ip_forward, IPv6 forwarding), kube-proxy
// (route_localnet, off in its configuration) and br_netfilter's default.
var clusterSysctls = map[string]string{
	"vm/overcommit_memory":               "1",
	"vm/panic_on_oom":                    "0",
	"kernel/panic":                       "10",
	"kernel/panic_on_oops":               "1",
	"kernel/keys/root_maxkeys":           "1000000",
	"kernel/keys/root_maxbytes":          "25000000",
	"net/ipv4/ip_forward":                "1",
	"net/ipv4/conf/all/route_localnet":   "1",
	"net/ipv6/conf/all/forwarding":       "1",
	"net/bridge/bridge-nf-call-iptables": "1",
}

// restoreSysctls writes back the recorded value of every sysctl that now holds the value
// the cluster sets (clusterSysctls) and held another before up. A sysctl with yet another
// value was set by someone else since and stays. It returns what it changed, as
// "key: now -> recorded", and what it kept although it differs from the record.
func (h *HostState) restoreSysctls() (changed, kept []string, _ error) {
	var errs []error
	keys := make([]string, 0, len(h.Sysctls))
	for k := range h.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := h.Sysctls[k]
		now, err := h.readSysctl(k)
		if err != nil || now == want {
			continue
		}
		if ours, known := clusterSysctls[k]; !known || now != ours {
			kept = append(kept, fmt.Sprintf("%s=%s (not the cluster's %s; was %s before up)", strings.ReplaceAll(k, "/", "."), now, ours, want))
			continue
		}
		if err := os.WriteFile(h.p(filepath.Join("/proc/sys", k)), []byte(want+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("sysctl %s=%s: %w", k, want, err))
			continue
		}
		changed = append(changed, fmt.Sprintf("%s: %s -> %s", strings.ReplaceAll(k, "/", "."), now, want))
	}
	return changed, kept, errors.Join(errs...)
}

// sysctlsLeft lists the sysctls that still hold the cluster's value instead of the one
// recorded before up.
func (h *HostState) sysctlsLeft() []string {
	var left []string
	for k, want := range h.Sysctls {
		now, err := h.readSysctl(k)
		if err == nil && now != want && now == clusterSysctls[k] {
			left = append(left, fmt.Sprintf("sysctl %s=%s (was %s)", strings.ReplaceAll(k, "/", "."), now, want))
		}
	}
	sort.Strings(left)
	return left
}

// removeCreatedPaths removes the tracked paths that did not exist at up. In
// /var/log/containers it first removes the symlinks into stateDir (the kubelet's), whether
// or not it created the directory.
func (h *HostState) removeCreatedPaths(stateDir string) ([]string, error) {
	var removed []string
	var errs []error
	logs := h.p("/var/log/containers")
	if ents, err := os.ReadDir(logs); err == nil {
		for _, e := range ents {
			p := filepath.Join(logs, e.Name())
			if t, err := os.Readlink(p); err == nil && strings.HasPrefix(t, stateDir+"/") {
				if err := os.Remove(p); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, p)
				}
			}
		}
	}
	for _, t := range trackedPaths {
		existed, known := h.Existed[t.Path]
		if !known || existed {
			continue
		}
		p := h.p(t.Path)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		var err error
		switch t.How {
		case removeAll:
			err = os.RemoveAll(p)
		case removeEmpty:
			removeEmptyDirs(p)
			if _, serr := os.Lstat(p); serr == nil {
				continue // something still in use is in it
			}
		default:
			if ents, _ := os.ReadDir(p); len(ents) > 0 {
				continue // someone else's files are in it now
			}
			err = os.Remove(p)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s existed not before up and stays: %w", t.Path, err))
			continue
		}
		removed = append(removed, p)
	}
	return removed, errors.Join(errs...)
}

func (h *HostState) save(file string) error {
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(file, append(b, '\n'), 0o644)
}

func loadHostState(file, root string) (*HostState, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	h := &HostState{Root: root}
	if err := json.Unmarshal(b, h); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return h, nil
}

// removeEmptyDirs removes dir and every directory below it that holds no file, depth first.
func removeEmptyDirs(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			removeEmptyDirs(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir) // fails unless empty
}

// cgroupDirs returns the kubepods cgroup (the kubelet's, cgroupfs driver) and everything
// below it, deepest first (the order rmdir needs): <root>/<hierarchy>/kubepods on cgroup
// v1, <root>/kubepods on a unified cgroup v2 host (cgroup.controllers at its root).
func cgroupDirs(cgroupRoot string) []string {
	var dirs, tops []string
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		tops = []string{filepath.Join(cgroupRoot, "kubepods")}
	} else {
		hier, _ := os.ReadDir(cgroupRoot)
		for _, hd := range hier {
			tops = append(tops, filepath.Join(cgroupRoot, hd.Name(), "kubepods"))
		}
	}
	for _, top := range tops {
		if fi, err := os.Stat(top); err != nil || !fi.IsDir() {
			continue
		}
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.SliceStable(dirs, func(i, j int) bool {
		di, dj := strings.Count(dirs[i], "/"), strings.Count(dirs[j], "/")
		if di != dj {
			return di > dj
		}
		return dirs[i] > dirs[j]
	})
	return dirs
}

// mountsUnder parses /proc/self/mountinfo content and returns the mount points at or
// below dir, the last mounted first: the order umount needs.
func mountsUnder(mountinfo, dir string) []string {
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMount(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
