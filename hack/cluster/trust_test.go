package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckStateDir(t *testing.T) {
	newDir := func() string {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "cluster.json"), "{}")
		writeFile(t, filepath.Join(dir, "host-state.json"), "{}")
		return dir
	}
	// This test runs as root (like the program); a fake stat stands in for other owners.
	root := func(p string) (uint32, os.FileMode, error) { return lstatOwner(p) }
	if os.Geteuid() != 0 {
		root = func(p string) (uint32, os.FileMode, error) { _, m, err := lstatOwner(p); return 0, m, err }
	}
	if err := checkStateDirWith(newDir(), root); err != nil {
		t.Errorf("a root-owned 0700 state dir: %v", err)
	}
	dir := newDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirWith(dir, root); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("a 0777 state dir: %v", err)
	}
	dir = newDir()
	if err := os.Chmod(filepath.Join(dir, "cluster.json"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirWith(dir, root); err == nil || !strings.Contains(err.Error(), "cluster.json") {
		t.Errorf("a world-writable cluster.json: %v", err)
	}
	dir = newDir()
	if err := os.Chmod(filepath.Join(dir, "host-state.json"), 0o620); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirWith(dir, root); err == nil || !strings.Contains(err.Error(), "host-state.json") {
		t.Errorf("a group-writable host-state.json: %v", err)
	}
	dir = newDir()
	user := func(owned string) statFunc {
		return func(p string) (uint32, os.FileMode, error) {
			_, m, err := root(p)
			if p == owned {
				return 1000, m, err
			}
			return 0, m, err
		}
	}
	for _, p := range []string{dir, filepath.Join(dir, "cluster.json"), filepath.Join(dir, "host-state.json")} {
		if err := checkStateDirWith(dir, user(p)); err == nil || !strings.Contains(err.Error(), "uid 1000") {
			t.Errorf("%s owned by uid 1000: %v", p, err)
		}
	}
	// A symlink planted in place of the directory or of cluster.json.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(newDir(), link); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirWith(link, root); err == nil {
		t.Error("a symlink as state dir passes")
	}
	dir = newDir()
	_ = os.Remove(filepath.Join(dir, "cluster.json"))
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "cluster.json")); err != nil {
		t.Fatal(err)
	}
	if err := checkStateDirWith(dir, root); err == nil {
		t.Error("a symlinked cluster.json passes")
	}
	// Files not there yet (a partial up) are fine.
	dir = newDir()
	_ = os.Remove(filepath.Join(dir, "host-state.json"))
	if err := checkStateDirWith(dir, root); err != nil {
		t.Errorf("a state dir without host-state.json: %v", err)
	}
}

func TestMakeStateDir(t *testing.T) {
	old := setUmask(0)
	defer setUmask(old)
	dir := filepath.Join(t.TempDir(), "a", "state")
	if err := makeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	// An existing 0755 directory (from an older up) is tightened.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := makeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("existing state dir mode %v after makeStateDir", fi.Mode().Perm())
	}
}

func TestTrustedBinary(t *testing.T) {
	base := t.TempDir()
	bin := filepath.Join(base, "cache", "containerd")
	writeFile(t, bin, "#!/bin/sh\n")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := func(uidOf map[string]uint32) statFunc {
		return func(p string) (uint32, os.FileMode, error) {
			_, m, err := lstatOwner(p)
			return uidOf[p], m, err
		}
	}
	if err := trustedBinaryWith(bin, stat(nil)); err != nil {
		t.Errorf("a root-owned binary: %v", err)
	}
	if err := trustedBinaryWith(bin, stat(map[string]uint32{bin: 1000})); err == nil {
		t.Error("a binary owned by uid 1000 passes")
	}
	if err := trustedBinaryWith(bin, stat(map[string]uint32{filepath.Dir(bin): 1000})); err == nil {
		t.Error("a binary in a directory of uid 1000 passes")
	}
	if err := os.Chmod(filepath.Dir(bin), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := trustedBinaryWith(bin, stat(nil)); err == nil {
		t.Error("a binary in a world-writable directory passes")
	}
	// World-writable with the sticky bit (/tmp, /var/tmp): others cannot replace root's file.
	if err := os.Chmod(filepath.Dir(bin), 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if err := trustedBinaryWith(bin, stat(nil)); err != nil {
		t.Errorf("a binary in a sticky directory: %v", err)
	}
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(bin, 0o775); err != nil {
		t.Fatal(err)
	}
	if err := trustedBinaryWith(bin, stat(nil)); err == nil {
		t.Error("a group-writable binary passes")
	}
	// A symlink is followed: its target is what runs.
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	if err := trustedBinaryWith(link, stat(map[string]uint32{bin: 1000})); err == nil {
		t.Error("a symlink to a binary of uid 1000 passes")
	}
}

func TestDownBinsFromCache(t *testing.T) {
	cache := t.TempDir()
	ctrd := filepath.Join(cache, "containerd", containerdVersion)
	for _, n := range containerdBinaries {
		writeFile(t, filepath.Join(ctrd, n), "")
		if err := os.Chmod(filepath.Join(ctrd, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := &Cluster{Bins: Bins{Containerd: "/home/mallory/containerd", ContainerdShim: "/home/mallory/shim", Proxy: "/home/mallory/kube-proxy"}}
	c.binsFromCache(cache)
	if c.Bins.Containerd != filepath.Join(ctrd, "containerd") || c.Bins.ContainerdShim != filepath.Join(ctrd, "containerd-shim-runc-v2") {
		t.Errorf("down's binaries: %+v", c.Bins)
	}
}

func setUmask(m int) int { return syscall.Umask(m) }
