package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHostStateRecordRestore(t *testing.T) {
	root := t.TempDir()
	sys := func(k string) string { return filepath.Join(root, "proc/sys", k) }
	writeFile(t, sys("vm/overcommit_memory"), "0\n")
	writeFile(t, sys("kernel/panic"), "1\n")
	writeFile(t, sys("kernel/panic_on_oops"), "0\n")
	writeFile(t, sys("net/ipv4/ip_forward"), "0\n")
	// /var/lib/kubelet exists before up; the rest does not.
	if err := os.MkdirAll(filepath.Join(root, "var/lib/kubelet"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "var/lib/kubelet/theirs"), "x")
	writeFile(t, filepath.Join(root, "run/netns/old"), "")

	hs, err := recordHostState(root, []string{"iptables/filter/KUBE-OLD"})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs.Sysctls) != 4 || hs.Sysctls["kernel/panic"] != "1" {
		t.Errorf("recorded sysctls %v", hs.Sysctls)
	}
	if !hs.Existed["/var/lib/kubelet"] || hs.Existed["/var/lib/kubelet/device-plugins"] || hs.Existed["/var/log/containers"] {
		t.Errorf("recorded paths %v", hs.Existed)
	}
	// Save and load: down reads what up wrote.
	file := filepath.Join(root, "host-state.json")
	if err := hs.save(file); err != nil {
		t.Fatal(err)
	}
	hs, err = loadHostState(file, root)
	if err != nil {
		t.Fatal(err)
	}

	// What a cluster does to the host.
	writeFile(t, sys("vm/overcommit_memory"), "1\n")
	writeFile(t, sys("kernel/panic"), "10\n")
	writeFile(t, sys("kernel/panic_on_oops"), "1\n")
	writeFile(t, sys("net/ipv4/ip_forward"), "1\n")
	writeFile(t, filepath.Join(root, "var/lib/kubelet/device-plugins/kubelet.sock"), "")
	state := "/var/tmp/qc"
	logs := filepath.Join(root, "var/log/containers")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(state+"/kubelet/podlogs/a/0.log", filepath.Join(logs, "ours.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/elsewhere/0.log", filepath.Join(logs, "theirs.log")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(root, "run/netns/cni-1234"), "")
	writeFile(t, filepath.Join(root, "run/netns/not-cni"), "")
	if err := os.MkdirAll(filepath.Join(root, "run/containerd/s"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "run/containerd/runc/k8s.io"), 0o755); err != nil {
		t.Fatal(err)
	}

	if got := hs.newNetns(); !slices.Equal(got, []string{"cni-1234"}) {
		t.Errorf("newNetns = %v", got)
	}
	changed, _, err := hs.restoreSysctls()
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 4 || !slices.Contains(changed, "kernel.panic: 10 -> 1") {
		t.Errorf("restoreSysctls changed %v", changed)
	}
	for k, want := range map[string]string{"vm/overcommit_memory": "0", "kernel/panic": "1", "kernel/panic_on_oops": "0", "net/ipv4/ip_forward": "0"} {
		b, _ := os.ReadFile(sys(k))
		if strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q after restore, want %s", k, b, want)
		}
	}
	// Another containerd's shim socket keeps /run/containerd/s, and nothing of it is removed.
	writeFile(t, filepath.Join(root, "run/containerd/s/theirs"), "")
	removeEmptyDirs(filepath.Join(root, "run/containerd"))
	if _, err := os.Stat(filepath.Join(root, "run/containerd/s/theirs")); err != nil {
		t.Error("removeEmptyDirs removed a file")
	}
	if _, err := os.Stat(filepath.Join(root, "run/containerd/runc")); err == nil {
		t.Error("removeEmptyDirs left an empty directory")
	}
	_ = os.RemoveAll(filepath.Join(root, "run/containerd/s"))
	if changed, _, _ := hs.restoreSysctls(); len(changed) != 0 {
		t.Errorf("a second restore changed %v", changed)
	}

	removed, err := hs.removeCreatedPaths(state)
	if err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(root, p)); return err == nil }
	for p, want := range map[string]bool{
		"var/lib/kubelet":                true,  // existed before
		"var/lib/kubelet/theirs":         true,  // not ours
		"var/lib/kubelet/device-plugins": false, // created by the kubelet
		"var/log/containers/ours.log":    false, // a symlink into the state dir
		"var/log/containers/theirs.log":  true,  // someone else's
		"var/log/containers":             true,  // created, but not empty
		"run/containerd":                 false, // created, removed with its content
		"run/netns/old":                  true,
	} {
		if exists(p) != want {
			t.Errorf("after removeCreatedPaths, %s exists=%v, want %v (removed %v)", p, !want, want, removed)
		}
	}
}

func TestCgroupDirsDepthFirst(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"memory/kubepods/burstable/pod1/c1", "memory/kubepods/besteffort", "cpu/kubepods/pod2", "cpu/other/kubepods-not", "pids/system"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dirs := cgroupDirs(root)
	if len(dirs) != 7 {
		t.Fatalf("cgroupDirs = %v", dirs)
	}
	pos := map[string]int{}
	for i, d := range dirs {
		pos[strings.TrimPrefix(d, root+"/")] = i
	}
	if pos["memory/kubepods/burstable/pod1/c1"] > pos["memory/kubepods/burstable/pod1"] ||
		pos["memory/kubepods/burstable"] > pos["memory/kubepods"] || pos["cpu/kubepods/pod2"] > pos["cpu/kubepods"] {
		t.Errorf("not depth first: %v", dirs)
	}
	n, err := removeCgroups(root)
	if err != nil || n != 7 {
		t.Errorf("removeCgroups = %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(root, "cpu/other/kubepods-not")); err != nil {
		t.Error("removed a cgroup outside kubepods")
	}
}

func TestMountsUnder(t *testing.T) {
	mi := `22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw
100 22 8:1 /var/tmp/qc/kubelet/root /var/tmp/qc/kubelet/root rw shared:2 - ext4 /dev/sda1 rw
101 100 0:50 / /var/tmp/qc/kubelet/root/pods/x/volumes/kubernetes.io~projected/kube-api-access-1 rw - tmpfs tmpfs rw
102 22 0:51 / /var/tmp/qc2/other rw - tmpfs tmpfs rw
103 22 0:52 / /var/tmp/qc/with\040space rw - tmpfs tmpfs rw
`
	got := mountsUnder(mi, "/var/tmp/qc/")
	want := []string{"/var/tmp/qc/with space", "/var/tmp/qc/kubelet/root/pods/x/volumes/kubernetes.io~projected/kube-api-access-1", "/var/tmp/qc/kubelet/root"}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %q, want %q", got, want)
	}
}

const sampleSave = `# Generated by iptables-nft-save
*mangle
:PREROUTING ACCEPT [0:0]
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
:MINE - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A MINE -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -j KUBE-SVC-NPX46M4PTMTKRN6Y
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-OLD - [0:0]
-A INPUT -j KUBE-OLD
COMMIT
`

func TestChainCleanup(t *testing.T) {
	chains := kubeChains("iptables", sampleSave)
	want := []string{"iptables/filter/KUBE-OLD", "iptables/mangle/KUBE-IPTABLES-HINT", "iptables/mangle/KUBE-KUBELET-CANARY",
		"iptables/nat/KUBE-SERVICES", "iptables/nat/KUBE-SVC-NPX46M4PTMTKRN6Y"}
	if !slices.Equal(chains, want) {
		t.Errorf("kubeChains = %v", chains)
	}
	var got []string
	for _, a := range chainCleanup("iptables", sampleSave, []string{"iptables/filter/KUBE-OLD"}) {
		got = append(got, strings.Join(a, "|"))
	}
	wantCmds := []string{
		"-t|nat|-D|PREROUTING|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES",
		"-t|nat|-D|OUTPUT|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES",
		"-t|mangle|-F|KUBE-IPTABLES-HINT",
		"-t|mangle|-F|KUBE-KUBELET-CANARY",
		"-t|nat|-F|KUBE-SERVICES",
		"-t|nat|-F|KUBE-SVC-NPX46M4PTMTKRN6Y",
		"-t|mangle|-X|KUBE-IPTABLES-HINT",
		"-t|mangle|-X|KUBE-KUBELET-CANARY",
		"-t|nat|-X|KUBE-SERVICES",
		"-t|nat|-X|KUBE-SVC-NPX46M4PTMTKRN6Y",
	}
	if !slices.Equal(got, wantCmds) {
		t.Errorf("chainCleanup =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantCmds, "\n"))
	}
	if got := splitRule(`-A X -m comment --comment "a \"quoted\" word" -j Y`); !slices.Equal(got, []string{"-A", "X", "-m", "comment", "--comment", `a "quoted" word`, "-j", "Y"}) {
		t.Errorf("splitRule = %q", got)
	}
}

// What kube-proxy (iptables mode) and the kubelet add next to another cluster's chains:
// jumps from the built-in chains of filter and nat, in iptables and ip6tables. Down
// removes its own jumps, then its chains, and leaves the other cluster's alone.
const sampleSaveFilterNat = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-OTHER - [0:0]
:KUBE-SERVICES - [0:0]
-A INPUT -j KUBE-OTHER
-A INPUT -j KUBE-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-OTHER -j KUBE-FORWARD
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-POSTROUTING - [0:0]
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-POSTROUTING -j MASQUERADE
COMMIT
`

func TestChainCleanupBuiltinJumps(t *testing.T) {
	for _, tool := range []string{"iptables", "ip6tables"} {
		keep := []string{tool + "/filter/KUBE-OTHER", tool + "/filter/KUBE-FIREWALL", "iptables6/filter/KUBE-SERVICES"}
		var got []string
		for _, a := range chainCleanup(tool, sampleSaveFilterNat, keep) {
			got = append(got, strings.Join(a, "|"))
		}
		want := []string{
			"-t|filter|-D|FORWARD|-m|comment|--comment|kubernetes forwarding rules|-j|KUBE-FORWARD",
			"-t|filter|-D|FORWARD|-m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES",
			"-t|filter|-D|OUTPUT|-m|conntrack|--ctstate|NEW|-m|comment|--comment|kubernetes service portals|-j|KUBE-SERVICES",
			// The kept chain's jump to a chain of this cluster goes too, or -X fails.
			"-t|filter|-D|KUBE-OTHER|-j|KUBE-FORWARD",
			"-t|nat|-D|POSTROUTING|-m|comment|--comment|kubernetes postrouting rules|-j|KUBE-POSTROUTING",
			"-t|filter|-F|KUBE-FORWARD",
			"-t|filter|-F|KUBE-SERVICES",
			"-t|nat|-F|KUBE-POSTROUTING",
			"-t|filter|-X|KUBE-FORWARD",
			"-t|filter|-X|KUBE-SERVICES",
			"-t|nat|-X|KUBE-POSTROUTING",
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: chainCleanup =\n%s\nwant\n%s", tool, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

// down puts a sysctl back only while it still holds the value the cluster set; a value
// someone changed since is theirs and stays.
func TestRestoreSysctlsOnlyOurValues(t *testing.T) {
	root := t.TempDir()
	sys := func(k string) string { return filepath.Join(root, "proc/sys", k) }
	for k, v := range map[string]string{"vm/overcommit_memory": "0", "kernel/panic": "0", "kernel/panic_on_oops": "0", "net/ipv4/ip_forward": "0"} {
		writeFile(t, sys(k), v+"\n")
	}
	hs, err := recordHostState(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The kubelet and the CNI plugin set theirs; then an admin sets two of them otherwise.
	writeFile(t, sys("vm/overcommit_memory"), "1\n")
	writeFile(t, sys("kernel/panic"), "10\n")
	writeFile(t, sys("kernel/panic_on_oops"), "1\n")
	writeFile(t, sys("net/ipv4/ip_forward"), "1\n")
	writeFile(t, sys("vm/overcommit_memory"), "2\n")
	writeFile(t, sys("kernel/panic"), "30\n")

	changed, kept, err := hs.restoreSysctls()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(changed, []string{"kernel.panic_on_oops: 1 -> 0", "net.ipv4.ip_forward: 1 -> 0"}) {
		t.Errorf("restored %v", changed)
	}
	if !slices.Equal(kept, []string{"kernel.panic=30 (not the cluster's 10; was 0 before up)", "vm.overcommit_memory=2 (not the cluster's 1; was 0 before up)"}) {
		t.Errorf("kept %v", kept)
	}
	for k, want := range map[string]string{"vm/overcommit_memory": "2", "kernel/panic": "30", "kernel/panic_on_oops": "0", "net/ipv4/ip_forward": "0"} {
		b, _ := os.ReadFile(sys(k))
		if strings.TrimSpace(string(b)) != want {
			t.Errorf("%s = %q after restore, want %s", k, b, want)
		}
	}
	if left := hs.sysctlsLeft(); len(left) != 0 {
		t.Errorf("sysctlsLeft = %v: values someone else set are no leftover of the cluster", left)
	}
}

// On a cgroup v2 (unified) host kubepods sits right under /sys/fs/cgroup.
func TestCgroupDirsUnified(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"kubepods/burstable/pod1/c1", "kubepods/besteffort", "system.slice/kubepods"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "cgroup.controllers"), "cpu memory pids\n")
	var got []string
	for _, d := range cgroupDirs(root) {
		got = append(got, strings.TrimPrefix(d, root+"/"))
	}
	want := []string{"kubepods/burstable/pod1/c1", "kubepods/burstable/pod1", "kubepods/burstable", "kubepods/besteffort", "kubepods"}
	if !slices.Equal(got, want) {
		t.Errorf("cgroupDirs on cgroup v2 = %v, want %v", got, want)
	}
}
