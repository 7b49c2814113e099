package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A pid file holds "<pid> <start time>" (field 22 of /proc/<pid>/stat): a pid that the
// kernel reused for another process does not match, so down never signals a stranger.

func (c *Cluster) pidFile(name string) string { return c.path("pids", name+".pid") }
func (c *Cluster) logFile(name string) string { return c.path("logs", name+".log") }

func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	return parseStatStartTime(string(b))
}

// parseStatStartTime returns field 22 of a /proc/<pid>/stat line; the command name (field
// 2) is in parentheses and may hold spaces.
func parseStatStartTime(stat string) (string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return "", errors.New("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return "", errors.New("malformed stat")
	}
	if strings.HasPrefix(f[0], "Z") {
		return "", errors.New("zombie")
	}
	return f[19], nil
}

// running returns the pid of component name if the process of its pid file still runs.
func (c *Cluster) running(name string) (int, bool) {
	b, err := os.ReadFile(c.pidFile(name))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return 0, false
	}
	st, err := procStartTime(pid)
	if err != nil || st != f[1] {
		return pid, false
	}
	return pid, true
}

// start runs comp in a session of its own, detached (it outlives this program), with
// output appended to logs/<name>.log, and records its pid.
func (c *Cluster) start(comp component) (int, error) {
	if err := trustedBinary(comp.Bin); err != nil {
		return 0, fmt.Errorf("start %s: %w", comp.Name, err)
	}
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(c.path("pids"), 0o755); err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(c.logFile(comp.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "\n==== %s %s %s\n", time.Now().UTC().Format(time.RFC3339), comp.Bin, strings.Join(comp.Args, " "))
	cmd := exec.Command(comp.Bin, comp.Args...)
	cmd.Dir = c.StateDir
	cmd.Env = append([]string{"HOME=" + c.StateDir}, comp.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", comp.Name, err)
	}
	pid := cmd.Process.Pid
	st, err := procStartTime(pid)
	if err != nil {
		return 0, fmt.Errorf("%s exited at once: see %s", comp.Name, c.logFile(comp.Name))
	}
	if err := writeFileAtomic(c.pidFile(comp.Name), []byte(fmt.Sprintf("%d %s\n", pid, st)), 0o644); err != nil {
		return 0, err
	}
	// Reap it if it dies while this program still runs; afterwards init does.
	go func() { _ = cmd.Wait() }()
	return pid, nil
}

// stop sends SIGTERM to component name, waits up to grace, then SIGKILLs it. It removes
// the pid file. A component that is not running is not an error.
func (c *Cluster) stop(name string, grace time.Duration) (bool, error) {
	pid, ok := c.running(name)
	if !ok {
		_ = os.Remove(c.pidFile(name))
		return false, nil
	}
	if err := terminate(pid, grace); err != nil {
		return true, fmt.Errorf("%s (pid %d): %w", name, pid, err)
	}
	return true, os.Remove(c.pidFile(name))
}

// terminate signals pid with SIGTERM, then SIGKILL after grace, and waits until it is gone.
func terminate(pid int, grace time.Duration) error {
	st, err := procStartTime(pid)
	if err != nil {
		return nil
	}
	gone := func() bool { s, err := procStartTime(pid); return err != nil || s != st }
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if gone() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for i := 0; i < 50; i++ {
		if gone() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("still running after SIGKILL")
}

// shimsWithArg returns the containerd shims (root's containerd-shim-runc-v2 processes)
// whose command line holds arg, the cluster's containerd socket: they outlive a killed
// containerd. Other processes naming the socket (an admin's ctr) are left alone.
func shimsWithArg(arg string) []int {
	var shims []int
	for _, pid := range pidsMatching(func(a string) bool { return a == arg }) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		if err != nil {
			continue
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && isContainerdShim(exe, st.Uid) {
			shims = append(shims, pid)
		}
	}
	return shims
}

// pidsWithArgUnder returns the processes with an argument naming a path in dir (every
// component of the cluster has one).
func pidsWithArgUnder(dir string) []int {
	return pidsMatching(func(a string) bool { return strings.Contains(a, dir+"/") })
}

func pidsMatching(match func(arg string) bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if match(a) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// isContainerdShim tells whether a process with executable exe (/proc/PID/exe) and owner
// uid is a containerd runc shim run by root.
func isContainerdShim(exe string, uid uint32) bool {
	return uid == 0 && filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "containerd-shim-runc-v2"
}
