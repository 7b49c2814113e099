package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// debianPackage is a prerequisite from Debian: the files that tell it is installed.
type debianPackage struct {
	Name  string
	Files []string
}

var debianPackages = []debianPackage{
	{"runc", []string{"/usr/sbin/runc"}},
	{"containernetworking-plugins", []string{"/usr/lib/cni/ptp", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"}},
	{"iptables", []string{"/usr/sbin/iptables", "/usr/sbin/iptables-save", "/usr/sbin/iptables-restore"}},
}

func missingPackages(root string) []string {
	var missing []string
	for _, p := range debianPackages {
		for _, f := range p.Files {
			if !executable(filepath.Join(root, f)) {
				missing = append(missing, p.Name)
				break
			}
		}
	}
	return missing
}

// ensurePackages installs the missing Debian packages with apt-get (as root, with a
// policy-rc.d that keeps services from starting, like hack/install-servers.sh), or fails
// naming them and the command.
func ensurePackages(install bool) error {
	missing := missingPackages("/")
	if len(missing) == 0 {
		return nil
	}
	cmdline := "apt-get install -y --no-install-recommends " + strings.Join(missing, " ")
	if !install || os.Geteuid() != 0 {
		return fmt.Errorf("missing Debian package(s) %s: run 'sudo %s'", strings.Join(missing, ", "), cmdline)
	}
	logf("installing %s with apt-get", strings.Join(missing, " "))
	policy := "/usr/sbin/policy-rc.d"
	if _, err := os.Stat(policy); os.IsNotExist(err) {
		if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err == nil {
			defer os.Remove(policy)
		}
	}
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w (install them by hand: %s)", strings.Join(args, " "), err, cmdline)
		}
	}
	if m := missingPackages("/"); len(m) > 0 {
		return fmt.Errorf("still missing after apt-get: %s", strings.Join(m, ", "))
	}
	return nil
}
