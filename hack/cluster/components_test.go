package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func testCluster() *Cluster {
	return &Cluster{
		StateDir: "/st", NodeName: "node-a", NodeIP: "192.0.2.10", APIPort: 6443, EtcdPort: 23790, EtcdPeerPort: 23800,
		Bins: Bins{Etcd: "/b/etcd", APIServer: "/b/kube-apiserver", ControllerMgr: "/b/kcm", Scheduler: "/b/ks",
			Kubelet: "/b/kubelet", Proxy: "/b/kube-proxy", Containerd: "/c/containerd", ContainerdShim: "/c/containerd-shim-runc-v2",
			Runc: "/usr/sbin/runc", CNIDir: "/usr/lib/cni"},
	}
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func TestComponentArgs(t *testing.T) {
	c := testCluster()
	comps := c.components()
	for _, n := range componentOrder {
		if comps[n].Name != n || comps[n].Bin == "" {
			t.Errorf("component %s: %+v", n, comps[n])
		}
		for _, a := range comps[n].Args {
			// Everything a component writes lives in the state directory.
			for _, bad := range []string{"/var/lib/kubelet", "/etc/kubernetes", "/var/run/kubernetes", "127.0.0.1:6443"} {
				if strings.Contains(a, bad) {
					t.Errorf("%s: argument %q refers to %s", n, a, bad)
				}
			}
		}
	}
	api := comps[cAPIServer].Args
	for flag, want := range map[string]string{
		"bind-address":                     "192.0.2.10",
		"advertise-address":                "192.0.2.10",
		"secure-port":                      "6443",
		"etcd-servers":                     "https://127.0.0.1:23790",
		"service-cluster-ip-range":         "10.96.0.0/16",
		"authorization-mode":               "Node,RBAC",
		"service-account-key-file":         "/st/pki/sa.pub",
		"service-account-signing-key-file": "/st/pki/sa.key",
		"service-account-issuer":           "https://kubernetes.default.svc.cluster.local",
		"client-ca-file":                   "/st/pki/ca.crt",
	} {
		if got, ok := flagValue(api, flag); !ok || got != want {
			t.Errorf("kube-apiserver --%s=%q (set: %v), want %q", flag, got, ok, want)
		}
	}
	if v, ok := flagValue(api, "disable-admission-plugins"); ok && strings.Contains(v, "ServiceAccount") {
		t.Error("kube-apiserver disables the ServiceAccount admission plugin")
	}
	kcm := comps[cCtrlMgr].Args
	for flag, want := range map[string]string{
		"controllers":                      "*",
		"service-account-private-key-file": "/st/pki/sa.key",
		"root-ca-file":                     "/st/pki/ca.crt",
		"cluster-signing-cert-file":        "/st/pki/ca.crt",
		"cluster-signing-key-file":         "/st/pki/ca.key",
		"leader-elect":                     "false",
		"kubeconfig":                       "/st/kubeconfigs/kube-controller-manager.kubeconfig",
	} {
		if got, ok := flagValue(kcm, flag); !ok || got != want {
			t.Errorf("kube-controller-manager --%s=%q, want %q", flag, got, want)
		}
	}
	kubelet := comps[cKubelet].Args
	for flag, want := range map[string]string{
		"node-ip":           "192.0.2.10",
		"hostname-override": "node-a",
		"root-dir":          "/st/kubelet/root",
		"kubeconfig":        "/st/kubeconfigs/kubelet.kubeconfig",
	} {
		if got, ok := flagValue(kubelet, flag); !ok || got != want {
			t.Errorf("kubelet --%s=%q, want %q", flag, got, want)
		}
	}
	// containerd finds its shim on PATH.
	if !slices.Contains(comps[cContainerd].Env, "PATH=/c:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") {
		t.Errorf("containerd's environment: %v", comps[cContainerd].Env)
	}
}

func TestKubeletConfig(t *testing.T) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(testCluster().kubeletConfig()), &m); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"kind":                     "KubeletConfiguration",
		"failCgroupV1":             false,
		"cgroupDriver":             "cgroupfs",
		"oomScoreAdj":              float64(0),
		"containerRuntimeEndpoint": "unix:///st/run/containerd.sock",
		"address":                  "192.0.2.10",
		"volumePluginDir":          "/st/kubelet/volume-plugins",
		"podLogsDir":               "/st/kubelet/podlogs",
		"tlsCertFile":              "/st/pki/kubelet-serving.crt",
	} {
		if m[k] != want {
			t.Errorf("kubelet config %s = %#v, want %#v", k, m[k], want)
		}
	}
	authn := m["authentication"].(map[string]any)
	if authn["webhook"].(map[string]any)["enabled"] != true || authn["anonymous"].(map[string]any)["enabled"] != false {
		t.Errorf("kubelet authentication: %v", authn)
	}
	if m["authorization"].(map[string]any)["mode"] != "Webhook" {
		t.Errorf("kubelet authorization: %v", m["authorization"])
	}
	if m["evictionHard"].(map[string]any)["nodefs.available"] != "1%" {
		t.Errorf("evictionHard: %v", m["evictionHard"])
	}
}

func TestKubeProxyConfig(t *testing.T) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(testCluster().kubeProxyConfig()), &m); err != nil {
		t.Fatal(err)
	}
	if m["mode"] != "iptables" || m["clusterCIDR"] != podCIDR || m["hostnameOverride"] != "node-a" {
		t.Errorf("kube-proxy config: %v", m)
	}
	ct := m["conntrack"].(map[string]any)
	if ct["maxPerCore"] != float64(0) || ct["min"] != float64(0) {
		t.Errorf("kube-proxy would change conntrack sysctls: %v", ct)
	}
	if m["iptables"].(map[string]any)["localhostNodePorts"] != false {
		t.Error("kube-proxy would set route_localnet")
	}
	if m["clientConnection"].(map[string]any)["kubeconfig"] != "/st/kubeconfigs/kube-proxy.kubeconfig" {
		t.Errorf("clientConnection: %v", m["clientConnection"])
	}
}

func TestContainerdAndCNIConfig(t *testing.T) {
	c := testCluster()
	cfg := c.containerdConfig()
	for _, want := range []string{
		"restrict_oom_score_adj = true",
		"sandbox = '" + pauseImage + "'",
		"address = '/st/run/containerd.sock'",
		"root = '/st/containerd/root'",
		"BinaryName = '/usr/sbin/runc'",
		"Root = '/st/runc'",
		"SystemdCgroup = false",
		"conf_dir = '/st/cni/net.d'",
		"bin_dirs = ['/usr/lib/cni']",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("containerd config lacks %q", want)
		}
	}
	var cni struct {
		Plugins []struct {
			Type string
			IPAM struct {
				Ranges  [][]struct{ Subnet string }
				DataDir string
			}
		}
	}
	if err := json.Unmarshal([]byte(c.cniConfig()), &cni); err != nil {
		t.Fatal(err)
	}
	if len(cni.Plugins) != 2 || cni.Plugins[0].Type != "ptp" || cni.Plugins[0].IPAM.Ranges[0][0].Subnet != podCIDR ||
		cni.Plugins[0].IPAM.DataDir != "/st/cni/ipam" {
		t.Errorf("CNI config: %+v", cni)
	}
	for p := range c.configFiles() {
		if !strings.HasPrefix(p, "/st/") {
			t.Errorf("config file %s outside the state directory", p)
		}
	}
}

func TestStagingReplaces(t *testing.T) {
	gomod := `module k8s.io/kubernetes
replace (
	k8s.io/api => ./staging/src/k8s.io/api
	k8s.io/client-go => ./staging/src/k8s.io/client-go
	k8s.io/api => ./staging/src/k8s.io/api
	github.com/x/y => github.com/x/z v1.0.0
)
`
	got := stagingReplaces(gomod, "1.37.2")
	want := []string{"-replace=k8s.io/api=k8s.io/api@v0.37.2", "-replace=k8s.io/client-go=k8s.io/client-go@v0.37.2"}
	if !slices.Equal(got, want) {
		t.Errorf("stagingReplaces = %v, want %v", got, want)
	}
	ld := k8sLdflags("1.37.2")
	for _, w := range []string{"k8s.io/component-base/version.gitVersion=v1.37.2", "k8s.io/client-go/pkg/version.gitMinor=37", "gitMajor=1 "} {
		if !strings.Contains(ld, w) {
			t.Errorf("ldflags %q lack %q", ld, w)
		}
	}
}

func TestParsers(t *testing.T) {
	route := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
	if got := parseDefaultRoute(route); got != "eth0" {
		t.Errorf("parseDefaultRoute = %q", got)
	}
	stat := "1234 (kube proxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 10 0 987654 1000 100"
	if got, err := parseStatStartTime(stat); err != nil || got != "987654" {
		t.Errorf("parseStatStartTime = %q, %v", got, err)
	}
	if _, err := parseStatStartTime("1 (x) Z 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5"); err == nil {
		t.Error("a zombie counts as running")
	}
}

func TestRefsWithDigest(t *testing.T) {
	ls := `REF                                    TYPE                                    DIGEST                                                                  SIZE    PLATFORMS   LABELS
ghcr.io/queuejob/pi:0.1.0              application/vnd.oci.image.index.v1+json sha256:24ec                                                             1.5 MiB linux/amd64 -
ghcr.io/queuejob/queuejob-worker:0.1.0 application/vnd.oci.image.index.v1+json sha256:b7f8                                                             7.1 MiB linux/amd64 -
sha256:b7f8                            application/vnd.oci.image.index.v1+json sha256:b7f8                                                             7.1 MiB linux/amd64 -
`
	got := refsWithDigest(ls, map[string]bool{"sha256:b7f8": true})
	if !slices.Equal(got, []string{"ghcr.io/queuejob/queuejob-worker:0.1.0"}) {
		t.Errorf("refsWithDigest = %v", got)
	}
}

func TestIsContainerdShim(t *testing.T) {
	for exe, want := range map[string]bool{
		"/root/.cache/queuejob-operator/containerd/v2.3.4/containerd-shim-runc-v2":           true,
		"/root/.cache/queuejob-operator/containerd/v2.3.4/containerd-shim-runc-v2 (deleted)": true,
		"/root/.cache/queuejob-operator/containerd/v2.3.4/ctr":                               false,
		"/usr/bin/ctr":             false,
		"/usr/bin/bash":            false,
		"/tmp/x/containerd-shim-x": false,
	} {
		if got := isContainerdShim(exe, 0); got != want {
			t.Errorf("isContainerdShim(%q) = %v", exe, got)
		}
	}
	if isContainerdShim("/c/containerd-shim-runc-v2", 1000) {
		t.Error("a process of uid 1000 counts as a shim")
	}
}
