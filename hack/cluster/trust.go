package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// The state directory lives in world-writable /var/tmp and holds what root executes and
// trusts (cluster.json names the binaries; host-state.json what down restores). Every
// subcommand therefore refuses a state directory that another user could have made or
// can change, and runs only binaries that only root can replace.

// statFunc returns the owner and mode of a path without following a final symlink (the
// tests pass fakes for other owners).
type statFunc func(path string) (uid uint32, mode os.FileMode, err error)

func lstatOwner(p string) (uint32, os.FileMode, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return 0, 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("%s: no owner", p)
	}
	return st.Uid, fi.Mode(), nil
}

// rootOnly checks that p is owned by root and not writable by group or others; a
// world-writable directory with the sticky bit (/tmp) passes when stickyOK.
func rootOnly(p string, uid uint32, mode os.FileMode, stickyOK bool) error {
	if uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root", p, uid)
	}
	if mode&0o022 != 0 && !(stickyOK && mode.IsDir() && mode&os.ModeSticky != 0) {
		return fmt.Errorf("%s is writable by group or others (mode %v)", p, mode)
	}
	return nil
}

// checkStateDir refuses a state directory (and its cluster.json and host-state.json)
// that is not a real directory owned by root and writable by root alone. A directory that
// does not exist yields an error wrapping os.ErrNotExist.
func checkStateDir(dir string) error { return checkStateDirWith(dir, lstatOwner) }

func checkStateDirWith(dir string, stat statFunc) error {
	refuse := func(err error) error {
		return fmt.Errorf("refusing the state directory: %w (it must be root's and writable only by root; if you did not make it, someone else may have: inspect it, remove it, and run cluster up again)", err)
	}
	uid, mode, err := stat(dir)
	if err != nil {
		return err
	}
	if !mode.IsDir() {
		return refuse(fmt.Errorf("%s is not a directory (mode %v)", dir, mode))
	}
	if err := rootOnly(dir, uid, mode, false); err != nil {
		return refuse(err)
	}
	for _, f := range []string{"cluster.json", "host-state.json"} {
		p := filepath.Join(dir, f)
		uid, mode, err := stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !mode.IsRegular() {
			return refuse(fmt.Errorf("%s is not a regular file (mode %v)", p, mode))
		}
		if err := rootOnly(p, uid, mode, false); err != nil {
			return refuse(err)
		}
	}
	return nil
}

// makeStateDir creates dir with mode 0700 (its parents 0755), or checks and tightens an
// existing one to 0700.
func makeStateDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := checkStateDir(dir); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700) // Mkdir's mode went through the umask; an older up made it 0755
}

// trustedBinary checks, before root runs p, that p (symlinks resolved) is a regular file
// owned by root and not writable by group or others, in directories that only root can
// change: otherwise someone else could replace what runs as root.
func trustedBinary(p string) error { return trustedBinaryWith(p, lstatOwner) }

func trustedBinaryWith(p string, stat statFunc) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("binary %q: not an absolute path", p)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return fmt.Errorf("binary %s: %w", p, err)
	}
	uid, mode, err := stat(real)
	if err != nil {
		return err
	}
	if !mode.IsRegular() {
		return fmt.Errorf("binary %s is not a regular file", real)
	}
	if err := rootOnly(real, uid, mode, false); err != nil {
		return fmt.Errorf("not running %s: %w", p, err)
	}
	for d := filepath.Dir(real); ; d = filepath.Dir(d) {
		uid, mode, err := stat(d)
		if err != nil {
			return err
		}
		if err := rootOnly(d, uid, mode, true); err != nil {
			return fmt.Errorf("not running %s: %w", p, err)
		}
		if d == "/" {
			return nil
		}
	}
}

// binsFromCache points the binaries that down may run (containerd, to remove the pods)
// at the cache directory instead of cluster.json, where they exist.
func (c *Cluster) binsFromCache(cacheDir string) {
	ctrd := filepath.Join(cacheDir, "containerd", containerdVersion)
	if p := filepath.Join(ctrd, "containerd"); executable(p) {
		c.Bins.Containerd = p
	}
	if p := filepath.Join(ctrd, "containerd-shim-runc-v2"); executable(p) {
		c.Bins.ContainerdShim = p
	}
}
