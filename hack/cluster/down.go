package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// down stops what up started and undoes what it changed on the host. It works on a
// partial state directory (a crashed or interrupted up) and does nothing the second time.
func down(o options) error {
	dir := filepath.Clean(o.StateDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		logf("no cluster in %s: nothing to do", dir)
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, stateMarker)); err != nil {
		return fmt.Errorf("%s has no %s: not a cluster state directory, left alone", dir, stateMarker)
	}
	if os.Geteuid() != 0 {
		return errors.New("cluster down needs root (as up did): sudo make cluster-down")
	}
	if err := checkStateDir(dir); err != nil {
		return err
	}
	t0 := time.Now()
	c, err := loadCluster(dir)
	if err != nil {
		logf("no usable cluster.json (%v): cleaning up what the state directory shows", err)
		c = &Cluster{StateDir: dir}
	}
	// What down runs comes from the cache, not from cluster.json where it can; start
	// checks that only root can change it either way.
	c.binsFromCache(o.CacheDir)
	hs, err := loadHostState(c.path("host-state.json"), "/")
	if err != nil {
		logf("no host record (%v): up started nothing on the host", err)
		hs = nil
	}
	var errs []error
	note := func(err error) {
		if err != nil {
			logf("  %v", err)
			errs = append(errs, err)
		}
	}
	stop := func(name string, grace time.Duration) {
		ok, err := c.stop(name, grace)
		note(err)
		if ok && err == nil {
			logf("stopped %s", name)
		}
	}
	// Kueue (up --kueue) first; its CRDs and webhook configurations go with etcd's data.
	note(c.stopKueue())
	// Nothing may create or restart pods while they are removed.
	stop(cCtrlMgr, 10*time.Second)
	stop(cScheduler, 10*time.Second)
	stop(cKubelet, 20*time.Second)
	stop(cProxy, 10*time.Second)

	// Pods: through containerd's CRI (CNI DEL included). A containerd that died is started
	// again for that.
	if _, err := os.Stat(c.path("containerd", "root")); err == nil {
		if _, ok := c.running(cContainerd); !ok && executable(c.Bins.Containerd) {
			if pid, err := c.start(c.components()[cContainerd]); err == nil {
				logf("started containerd (pid %d) again to remove the pods", pid)
			}
		}
		if _, ok := c.running(cContainerd); ok {
			deadline := time.Now().Add(30 * time.Second)
			for criReady(c.socket()) != nil && time.Now().Before(deadline) {
				time.Sleep(300 * time.Millisecond)
			}
			n, err := removeAllPods(c.socket(), 2*time.Minute)
			note(err)
			logf("removed %d pod sandbox(es) and their containers", n)
		}
	}
	stop(cContainerd, 20*time.Second)
	// Shims (and what they run) outlive a containerd that was killed.
	if pids := shimsWithArg(c.socket()); len(pids) > 0 {
		for _, pid := range pids {
			note(terminate(pid, 5*time.Second))
		}
		logf("stopped %d leftover containerd shim(s)", len(pids))
	}
	if hs != nil && !hs.KubepodsExisted {
		if n := killCgroupProcs("/sys/fs/cgroup"); n > 0 {
			logf("killed %d leftover process(es) in the kubepods cgroups", n)
		}
	}
	stop(cAPIServer, 20*time.Second)
	stop(cEtcd, 10*time.Second)

	if hs != nil {
		// Not `kube-proxy --cleanup`: it flushes every kube-proxy rule, IPVS service and
		// nftables table on the host, another cluster's too. Only the KUBE-* chains that
		// were not there at up go (kube-proxy's and the kubelet's, in iptables and
		// ip6tables), after the jumps to them from other chains (PREROUTING, OUTPUT,
		// FORWARD, INPUT, POSTROUTING, ...).
		n, err := removeKubeChains(hs.Chains)
		note(err)
		if n > 0 {
			logf("removed %d KUBE-* iptables chain(s) and the rules jumping to them", n)
		}
	}

	n, err := unmountUnder(dir)
	note(err)
	if n > 0 {
		logf("unmounted %d mount(s) under %s", n, dir)
	}
	if hs != nil {
		for _, ns := range hs.newNetns() {
			p := filepath.Join("/run/netns", ns)
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
			if err := os.Remove(p); err != nil {
				note(fmt.Errorf("netns %s: %w", ns, err))
			} else {
				logf("removed network namespace %s", ns)
			}
		}
		if !hs.KubepodsExisted {
			n, err := removeCgroups("/sys/fs/cgroup")
			note(err)
			if n > 0 {
				logf("removed %d kubepods cgroup(s)", n)
			}
		}
		removed, err := hs.removeCreatedPaths(dir)
		note(err)
		if len(removed) > 0 {
			logf("removed %s", strings.Join(removed, ", "))
		}
		changed, kept, err := hs.restoreSysctls()
		note(err)
		if len(changed) > 0 {
			logf("restored sysctls: %s", strings.Join(changed, ", "))
		}
		if len(kept) > 0 {
			logf("left sysctls that someone changed after up: %s", strings.Join(kept, ", "))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster down left something (state dir %s kept; run cluster down again): %w", dir, errors.Join(errs...))
	}
	if mounts := mountsUnder(readMountinfo(), dir); len(mounts) > 0 {
		return fmt.Errorf("still mounted under %s: %s", dir, strings.Join(mounts, " "))
	}
	left := leftovers(dir, hs)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	logf("cluster down in %s: removed %s", since(t0), dir)
	if len(left) > 0 {
		return fmt.Errorf("left on the host: %s", strings.Join(left, "; "))
	}
	logf("checked: no process, mount, kubepods cgroup, CNI network namespace or new KUBE-* chain of the cluster is left; the sysctls the cluster set are back")
	return nil
}

// leftovers lists what of the cluster is still on the host.
func leftovers(dir string, hs *HostState) []string {
	var left []string
	if pids := pidsWithArgUnder(dir); len(pids) > 0 {
		left = append(left, fmt.Sprintf("processes %v", pids))
	}
	if m := mountsUnder(readMountinfo(), dir); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, " "))
	}
	if hs == nil {
		return left
	}
	if !hs.KubepodsExisted {
		if d := cgroupDirs("/sys/fs/cgroup"); len(d) > 0 {
			left = append(left, fmt.Sprintf("%d kubepods cgroups", len(d)))
		}
	}
	if ns := hs.newNetns(); len(ns) > 0 {
		left = append(left, "network namespaces "+strings.Join(ns, " "))
	}
	kept := map[string]bool{}
	for _, c := range hs.Chains {
		kept[c] = true
	}
	for _, c := range currentKubeChains() {
		if !kept[c] {
			left = append(left, "chain "+c)
		}
	}
	return append(left, hs.sysctlsLeft()...)
}

func readMountinfo() string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return string(b)
}

// unmountUnder unmounts everything mounted at or below dir, last mounted first (the
// kubelet's bind mount of its root dir, pods' volumes, containers' rootfs and shm).
func unmountUnder(dir string) (int, error) {
	n := 0
	for pass := 0; pass < 5; pass++ {
		mounts := mountsUnder(readMountinfo(), dir)
		if len(mounts) == 0 {
			return n, nil
		}
		for _, m := range mounts {
			if err := syscall.Unmount(m, 0); err != nil {
				if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
					continue
				}
			}
			n++
		}
	}
	if m := mountsUnder(readMountinfo(), dir); len(m) > 0 {
		return n, fmt.Errorf("cannot unmount %s", strings.Join(m, " "))
	}
	return n, nil
}

// killCgroupProcs SIGKILLs every process in a kubepods cgroup.
func killCgroupProcs(cgroupRoot string) int {
	n := 0
	for _, d := range cgroupDirs(cgroupRoot) {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					n++
				}
			}
		}
	}
	if n > 0 {
		time.Sleep(500 * time.Millisecond)
	}
	return n
}

// removeCgroups removes the kubepods cgroups of every hierarchy, depth first.
func removeCgroups(cgroupRoot string) (int, error) {
	n := 0
	var last error
	for pass := 0; pass < 10; pass++ {
		dirs := cgroupDirs(cgroupRoot)
		if len(dirs) == 0 {
			return n, nil
		}
		last = nil
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil {
				last = fmt.Errorf("rmdir %s: %w", d, err)
			} else {
				n++
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return n, last
}
