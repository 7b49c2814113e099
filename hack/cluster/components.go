package main

import (
	"fmt"
	"strings"
)

// component is one process of the cluster: how to start it and how to tell it is up.
type component struct {
	Name string
	Bin  string
	Args []string
	Env  []string // added to a minimal environment
}

// The order up starts them in; down stops them in reverse (with special steps for the
// kubelet and containerd, see down.go).
const (
	cEtcd       = "etcd"
	cContainerd = "containerd"
	cAPIServer  = "kube-apiserver"
	cCtrlMgr    = "kube-controller-manager"
	cScheduler  = "kube-scheduler"
	cKubelet    = "kubelet"
	cProxy      = "kube-proxy"
)

var componentOrder = []string{cEtcd, cContainerd, cAPIServer, cCtrlMgr, cScheduler, cKubelet, cProxy}

func (c *Cluster) components() map[string]component {
	pki := func(f string) string { return c.path("pki", f) }
	env := []string{"PATH=" + strings.Join([]string{dirOf(c.Bins.ContainerdShim), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}, ":")}
	return map[string]component{
		cEtcd: {Name: cEtcd, Bin: c.Bins.Etcd, Env: env, Args: []string{
			"--name=queuejob",
			"--data-dir=" + c.path("etcd"),
			"--listen-client-urls=" + c.etcdURL(),
			"--advertise-client-urls=" + c.etcdURL(),
			"--listen-peer-urls=" + c.peerURL(),
			"--initial-advertise-peer-urls=" + c.peerURL(),
			"--initial-cluster=queuejob=" + c.peerURL(),
			"--cert-file=" + pki("etcd-server.crt"),
			"--key-file=" + pki("etcd-server.key"),
			"--client-cert-auth=true",
			"--trusted-ca-file=" + pki("etcd-ca.crt"),
			"--peer-cert-file=" + pki("etcd-peer.crt"),
			"--peer-key-file=" + pki("etcd-peer.key"),
			"--peer-client-cert-auth=true",
			"--peer-trusted-ca-file=" + pki("etcd-ca.crt"),
			// A throwaway development cluster on a shared, busy disk: speed over durability.
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		}},
		cContainerd: {Name: cContainerd, Bin: c.Bins.Containerd, Env: env, Args: []string{
			"--config=" + c.path("containerd", "config.toml"),
		}},
		cAPIServer: {Name: cAPIServer, Bin: c.Bins.APIServer, Env: env, Args: []string{
			"--etcd-servers=" + c.etcdURL(),
			"--etcd-cafile=" + pki("etcd-ca.crt"),
			"--etcd-certfile=" + pki("apiserver-etcd-client.crt"),
			"--etcd-keyfile=" + pki("apiserver-etcd-client.key"),
			// Not 127.0.0.1: the `kubernetes` Service's endpoint is the advertise address,
			// and pods reach it there through kube-proxy.
			"--bind-address=" + c.NodeIP,
			"--advertise-address=" + c.NodeIP,
			fmt.Sprintf("--secure-port=%d", c.APIPort),
			"--cert-dir=" + c.path("apiserver"),
			"--tls-cert-file=" + pki("apiserver.crt"),
			"--tls-private-key-file=" + pki("apiserver.key"),
			"--client-ca-file=" + pki("ca.crt"),
			"--kubelet-client-certificate=" + pki("apiserver-kubelet-client.crt"),
			"--kubelet-client-key=" + pki("apiserver-kubelet-client.key"),
			"--kubelet-certificate-authority=" + pki("ca.crt"),
			"--kubelet-preferred-address-types=InternalIP,Hostname",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--authorization-mode=Node,RBAC",
			// ServiceAccount is on by default; envtest turns it off, a real cluster must not.
			"--enable-admission-plugins=NodeRestriction",
			"--service-account-key-file=" + pki("sa.pub"),
			"--service-account-signing-key-file=" + pki("sa.key"),
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--allow-privileged=true",
			"--profiling=false",
			"--v=1",
		}},
		cCtrlMgr: {Name: cCtrlMgr, Bin: c.Bins.ControllerMgr, Env: env, Args: []string{
			"--kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
			"--authentication-kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
			"--authorization-kubeconfig=" + c.kubeconfigFor("kube-controller-manager"),
			"--bind-address=127.0.0.1",
			"--cert-dir=" + c.path("kube-controller-manager"),
			"--controllers=*",
			"--leader-elect=false",
			"--use-service-account-credentials=true",
			"--service-account-private-key-file=" + pki("sa.key"),
			"--root-ca-file=" + pki("ca.crt"),
			"--cluster-signing-cert-file=" + pki("ca.crt"),
			"--cluster-signing-key-file=" + pki("ca.key"),
			"--cluster-name=queuejob",
			"--service-cluster-ip-range=" + serviceCIDR,
			"--allocate-node-cidrs=false",
			"--profiling=false",
			"--v=1",
		}},
		cScheduler: {Name: cScheduler, Bin: c.Bins.Scheduler, Env: env, Args: []string{
			"--kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
			"--authentication-kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
			"--authorization-kubeconfig=" + c.kubeconfigFor("kube-scheduler"),
			"--bind-address=127.0.0.1",
			"--cert-dir=" + c.path("kube-scheduler"),
			"--leader-elect=false",
			"--profiling=false",
			"--v=1",
		}},
		cKubelet: {Name: cKubelet, Bin: c.Bins.Kubelet, Env: env, Args: []string{
			"--config=" + c.path("kubelet", "config.yaml"),
			"--kubeconfig=" + c.kubeconfigFor("kubelet"),
			"--root-dir=" + c.path("kubelet", "root"),
			"--cert-dir=" + c.path("kubelet", "pki"),
			"--hostname-override=" + c.NodeName,
			"--node-ip=" + c.NodeIP,
			"--v=1",
		}},
		cProxy: {Name: cProxy, Bin: c.Bins.Proxy, Env: env, Args: []string{
			"--config=" + c.path("kube-proxy", "config.yaml"),
			"--v=1",
		}},
	}
}

func dirOf(p string) string {
	if i := strings.LastIndex(p, "/"); i > 0 {
		return p[:i]
	}
	return "/"
}

// containerdConfig keeps everything containerd writes in the state directory (root, state,
// runc's root, CDI spec dirs, the plugins' paths) except the shims' socket directory
// /run/containerd/s, which is hard-coded. The sandbox image is the local pause image.
func (c *Cluster) containerdConfig() string {
	s := c.StateDir
	return fmt.Sprintf(`version = 3
root = '%[1]s/containerd/root'
state = '%[1]s/containerd/state'
oom_score = 0

[grpc]
  address = '%[1]s/run/containerd.sock'

[ttrpc]
  address = '%[1]s/run/containerd.sock.ttrpc'

[debug]
  level = 'info'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '%[1]s/containerd/opt'

  [plugins.'io.containerd.nri.v1.nri']
    disable = true

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '%[2]s'

  [plugins.'io.containerd.cri.v1.runtime']
    # This VM lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj below
    # containerd's own, and every sandbox fails without this.
    restrict_oom_score_adj = true
    cdi_spec_dirs = ['%[1]s/cdi']
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '%[3]s'
          Root = '%[1]s/runc'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['%[4]s']
      conf_dir = '%[1]s/cni/net.d'

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
`, s, pauseImage, c.Bins.Runc, c.Bins.CNIDir)
}

// cniConfig is a ptp network with host-local addresses from podCIDR. No masquerading:
// pods only talk to this node (the API server through the Service IP, brokers on the node
// IP), and replies route back over the ptp veth.
func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "queuejob-ptp",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "loopback"}
  ]
}
`, podCIDR, c.path("cni", "ipam"))
}

func (c *Cluster) kubeletConfig() string {
	s := c.StateDir
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%[1]s/run/containerd.sock
failSwapOn: false
address: %[2]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %[1]s/pki/kubelet-serving.crt
tlsPrivateKeyFile: %[1]s/pki/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[1]s/pki/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podLogsDir: %[1]s/kubelet/podlogs
volumePluginDir: %[1]s/kubelet/volume-plugins
# No CAP_SYS_RESOURCE in this VM: the kubelet cannot lower its own score.
oomScoreAdj: 0
`, s, c.NodeIP)
}

// kubeProxyConfig runs the iptables mode and leaves the host's conntrack sysctls and
// route_localnet alone (nothing for down to restore).
func (c *Cluster) kubeProxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
bindAddress: %s
clusterCIDR: %s
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
`, c.kubeconfigFor("kube-proxy"), c.NodeName, c.NodeIP, podCIDR)
}

// configFiles maps each path under the state directory to its content.
func (c *Cluster) configFiles() map[string]string {
	return map[string]string{
		c.path("containerd", "config.toml"):            c.containerdConfig(),
		c.path("cni", "net.d", "10-queuejob.conflist"): c.cniConfig(),
		c.path("kubelet", "config.yaml"):               c.kubeletConfig(),
		c.path("kube-proxy", "config.yaml"):            c.kubeProxyConfig(),
	}
}
