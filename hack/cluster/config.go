package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// Versions of everything the cluster runs. kube-apiserver and etcd come from hack/envtest.sh.
const (
	k8sVersion        = "1.37.2"
	etcdVersion       = "v3.7.3"
	containerdVersion = "v2.3.4"
	// Kueue runs only with up --kueue (kueue.go).
	kueueVersion = "v0.17.0"

	defaultStateDir = "/var/tmp/queuejob-cluster"
	defaultNodeName = "queuejob-node"

	serviceCIDR = "10.96.0.0/16"
	serviceIP   = "10.96.0.1"
	podCIDR     = "10.88.0.0/24"
	apiPort     = 6443

	pauseImage = "queuejob.local/pause:1"
	smokeImage = "queuejob.local/cluster-smoke:1"

	// stateMarker is written first into a state directory; down removes only a directory
	// holding it.
	stateMarker = ".queuejob-cluster"
)

// Cluster is what up decided once and wrote to cluster.json: later runs of up, down and
// status read it instead of deciding again.
type Cluster struct {
	StateDir     string `json:"stateDir"`
	NodeName     string `json:"nodeName"`
	NodeIP       string `json:"nodeIP"`
	APIPort      int    `json:"apiPort"`
	EtcdPort     int    `json:"etcdPort"`
	EtcdPeerPort int    `json:"etcdPeerPort"`
	// EtcdTLS is true for a cluster whose etcd serves TLS with client-certificate
	// authentication; a state directory from before is not reused (run down first).
	EtcdTLS bool `json:"etcdTLS"`
	Bins    Bins `json:"bins"`
	// Kueue is set while up --kueue has Kueue on the cluster (kueue.go).
	Kueue *KueueState `json:"kueue,omitempty"`
}

// Bins holds the absolute paths of the binaries the cluster runs.
type Bins struct {
	Etcd           string `json:"etcd"`
	APIServer      string `json:"kube-apiserver"`
	ControllerMgr  string `json:"kube-controller-manager"`
	Scheduler      string `json:"kube-scheduler"`
	Kubelet        string `json:"kubelet"`
	Proxy          string `json:"kube-proxy"`
	Kubectl        string `json:"kubectl"`
	Containerd     string `json:"containerd"`
	ContainerdShim string `json:"containerd-shim-runc-v2"`
	Ctr            string `json:"ctr"`
	Runc           string `json:"runc"`
	CNIDir         string `json:"cniDir"`
}

func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

func (c *Cluster) serverURL() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP, fmt.Sprint(c.APIPort)))
}

// etcd serves clients and its peer port only over TLS with client certificates of etcd-ca.
func (c *Cluster) etcdURL() string    { return fmt.Sprintf("https://127.0.0.1:%d", c.EtcdPort) }
func (c *Cluster) peerURL() string    { return fmt.Sprintf("https://127.0.0.1:%d", c.EtcdPeerPort) }
func (c *Cluster) socket() string     { return c.path("run", "containerd.sock") }
func (c *Cluster) kubeconfig() string { return c.path("kubeconfig") }
func (c *Cluster) kubeconfigFor(user string) string {
	return c.path("kubeconfigs", user+".kubeconfig")
}

func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(c.path("cluster.json"), append(b, '\n'), 0o644)
}

// loadCluster reads dir/cluster.json; os.ErrNotExist when up never got that far. It
// refuses a state directory that is not root's alone (checkStateDir).
func loadCluster(dir string) (*Cluster, error) {
	if err := checkStateDir(dir); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "cluster.json"))
	if err != nil {
		return nil, err
	}
	c := &Cluster{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("%s/cluster.json: %w", dir, err)
	}
	c.StateDir = dir
	return c, nil
}

// detectNodeIP returns the IPv4 address of the interface holding the default route, or
// else the first global IPv4 address. Never loopback: the kubelet refuses it, and pods
// must reach the API server and the host's brokers on it.
func detectNodeIP() (string, error) {
	if dev := defaultRouteDevice("/proc/net/route"); dev != "" {
		if ifi, err := net.InterfaceByName(dev); err == nil {
			if ip := firstIPv4(ifi); ip != "" {
				return ip, nil
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback != 0 || ifs[i].Flags&net.FlagUp == 0 {
			continue
		}
		if ip := firstIPv4(&ifs[i]); ip != "" {
			return ip, nil
		}
	}
	return "", errors.New("found no non-loopback IPv4 address: pass --node-ip")
}

func firstIPv4(ifi *net.Interface) string {
	addrs, err := ifi.Addrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}

// defaultRouteDevice parses /proc/net/route for the interface of destination 0.0.0.0/0.
func defaultRouteDevice(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return parseDefaultRoute(string(b))
}

func parseDefaultRoute(table string) string {
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			return f[0]
		}
	}
	return ""
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) { return freePortOn("127.0.0.1") }

// freePortOn asks the kernel for a free TCP port on the address ip.
func freePortOn(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
