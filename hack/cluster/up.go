package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

type options struct {
	StateDir string
	CacheDir string
	Repo     string
	NodeIP   string
	NodeName string
	Timeout  time.Duration
	Install  bool
	Output   string
	Kueue    bool
}

const smokePod = "cluster-smoke"

// stateDirs are created by up under the state directory.
// pki/ is not among them: writePKI makes it 0700.
var stateDirs = []string{"run", "logs", "pids", "kubeconfigs", "etcd", "apiserver", "containerd/opt", "cdi", "runc",
	"cni/net.d", "cni/ipam", "kubelet/root", "kubelet/pki", "kubelet/podlogs", "kubelet/volume-plugins",
	"kube-controller-manager", "kube-scheduler", "kube-proxy", "images"}

func up(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("cluster up runs a kubelet, containerd and kube-proxy on this machine and needs root: run it as root (sudo make cluster-up)")
	}
	t0 := time.Now()
	if err := ensurePackages(o.Install); err != nil {
		return err
	}
	bins, err := ensureBinaries(o.Repo, o.CacheDir)
	if err != nil {
		return err
	}
	bins.Runc, bins.CNIDir = "/usr/sbin/runc", "/usr/lib/cni"
	if d := time.Since(t0); d > 5*time.Second {
		logf("binaries ready after %s", d.Round(time.Second))
	}

	c, err := prepareState(o, bins)
	if err != nil {
		return err
	}
	if allRunning(c) {
		cs, err := c.clientset()
		if err == nil && nodeReady(cs, c.NodeName) == nil {
			logf("the cluster in %s is already up (all %d components running, node %s Ready)", c.StateDir, len(componentOrder), c.NodeName)
			if err := c.loadDist(o.Repo); err != nil {
				return err
			}
			return c.finishUp(o, t0, false)
		}
	}
	comps := c.components()
	startIfDead := func(name string) error {
		if pid, ok := c.running(name); ok {
			logf("%s already running (pid %d)", name, pid)
			return nil
		}
		pid, err := c.start(comps[name])
		if err != nil {
			return err
		}
		logf("started %s (pid %d, log %s)", name, pid, c.logFile(name))
		return nil
	}

	// etcd and containerd first; the images build meanwhile.
	for _, n := range []string{cEtcd, cContainerd} {
		if err := startIfDead(n); err != nil {
			return err
		}
	}
	tars, err := c.buildLocalImages(o.Repo)
	if err != nil {
		return err
	}
	if err := c.waitFor(cEtcd, "etcd healthy", time.Minute, c.etcdHealthy); err != nil {
		return err
	}
	if err := startIfDead(cAPIServer); err != nil {
		return err
	}
	if err := c.waitFor(cContainerd, "containerd's CRI", time.Minute, func() error { return criReady(c.socket()) }); err != nil {
		return err
	}
	for _, t := range tars {
		if _, err := c.importImage(t); err != nil {
			return err
		}
	}
	logf("imported %s and %s into containerd", pauseImage, smokeImage)
	if err := c.loadDist(o.Repo); err != nil {
		return err
	}
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	if err := c.waitAPIServerReady(cs); err != nil {
		return err
	}
	for _, n := range []string{cCtrlMgr, cScheduler, cKubelet, cProxy} {
		if err := startIfDead(n); err != nil {
			return err
		}
	}
	if err := c.waitFor(cKubelet, "node "+c.NodeName+" Ready", 3*time.Minute, func() error { return nodeReady(cs, c.NodeName) }); err != nil {
		return err
	}
	if err := c.waitFor(cProxy, "kube-proxy synced", 2*time.Minute, func() error { return httpOK("http://127.0.0.1:10256/healthz") }); err != nil {
		return err
	}
	if err := c.runSmoke(cs, o.Timeout); err != nil {
		return err
	}
	return c.finishUp(o, t0, true)
}

// finishUp starts Kueue if asked to, or again if it is on the cluster (its webhooks
// registered) but its process died; then links kubectl and prints the summary.
func (c *Cluster) finishUp(o options, t0 time.Time, smoke bool) error {
	if o.Kueue || c.Kueue != nil {
		if err := c.upKueue(o.CacheDir); err != nil {
			return err
		}
	}
	c.linkKubectl(o.Repo)
	c.printUp(since(t0), smoke)
	return nil
}

// waitAPIServerReady waits until kube-apiserver answers /readyz.
func (c *Cluster) waitAPIServerReady(cs kubernetes.Interface) error {
	return c.waitFor(cAPIServer, "kube-apiserver ready", 4*time.Minute, func() error {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		return err
	})
}

// prepareState creates (or reuses) the state directory: cluster.json, the host record,
// certificates, kubeconfigs and configuration files.
func prepareState(o options, bins Bins) (*Cluster, error) {
	dir := o.StateDir
	c, err := loadCluster(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			if _, err := os.Stat(filepath.Join(dir, stateMarker)); err != nil {
				return nil, fmt.Errorf("%s is not empty and is no cluster state directory: choose another --state-dir", dir)
			}
		}
		c = &Cluster{StateDir: dir, NodeName: o.NodeName, NodeIP: o.NodeIP, APIPort: apiPort, EtcdTLS: true}
		if c.NodeIP == "" {
			if c.NodeIP, err = detectNodeIP(); err != nil {
				return nil, err
			}
		}
		if c.EtcdPort, err = freePort(); err != nil {
			return nil, err
		}
		if c.EtcdPeerPort, err = freePort(); err != nil {
			return nil, err
		}
		if c.EtcdPeerPort == c.EtcdPort {
			c.EtcdPeerPort++
		}
	case err != nil:
		return nil, err
	case !c.EtcdTLS:
		// Its etcd serves plain HTTP to every local user, and its data records http peer URLs.
		return nil, fmt.Errorf("the cluster in %s was made before etcd served TLS with client certificates: run cluster down first (make cluster-down), then up", dir)
	default:
		if o.NodeIP != "" && o.NodeIP != c.NodeIP {
			return nil, fmt.Errorf("the cluster in %s was made for node IP %s, not %s: run cluster down first", dir, c.NodeIP, o.NodeIP)
		}
	}
	c.Bins = bins
	if err := makeStateDir(dir); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, stateMarker), []byte("state of hack/cluster; removed by `cluster down`\n"), 0o644); err != nil {
		return nil, err
	}
	for _, d := range stateDirs {
		if err := os.MkdirAll(c.path(d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	// The record of the host is taken once, before anything of the cluster runs; a later
	// up (after a partial one) keeps the first.
	hsFile := c.path("host-state.json")
	if _, err := os.Stat(hsFile); errors.Is(err, os.ErrNotExist) {
		hs, err := recordHostState("/", currentKubeChains())
		if err != nil {
			return nil, err
		}
		hs.KubepodsExisted = len(cgroupDirs("/sys/fs/cgroup")) > 0
		if err := hs.save(hsFile); err != nil {
			return nil, err
		}
	}
	if err := writePKI(c.path("pki"), c.NodeName, c.NodeIP, time.Now()); err != nil {
		return nil, err
	}
	if err := writeKubeconfigs(c); err != nil {
		return nil, err
	}
	for p, content := range c.configFiles() {
		if err := writeFileAtomic(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func allRunning(c *Cluster) bool {
	for _, n := range componentOrder {
		if _, ok := c.running(n); !ok {
			return false
		}
	}
	return true
}

func (c *Cluster) clientset() (*kubernetes.Clientset, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig())
	if err != nil {
		return nil, err
	}
	cfg.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(cfg)
}

// waitFor polls f until it succeeds, failing early if component owner died.
func (c *Cluster) waitFor(owner, what string, timeout time.Duration, f func() error) error {
	t0 := time.Now()
	last := t0
	for {
		err := f()
		if err == nil {
			logf("%s after %s", what, since(t0))
			return nil
		}
		if _, ok := c.running(owner); !ok {
			return fmt.Errorf("waiting for %s: %s is not running; the end of %s:\n%s", what, owner, c.logFile(owner), tail(c.logFile(owner), 25))
		}
		if time.Since(t0) > timeout {
			return fmt.Errorf("no %s after %s: %v (see %s)", what, timeout, err, c.logFile(owner))
		}
		if time.Since(last) >= 15*time.Second {
			logf("  waiting for %s (%s): %v", what, since(t0), firstLine(err))
			last = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// etcdHealthy GETs etcd's /health with the API server's etcd client certificate.
func (c *Cluster) etcdHealthy() error {
	pki := func(f string) string { return c.path("pki", f) }
	cert, err := tls.LoadX509KeyPair(pki("apiserver-etcd-client.crt"), pki("apiserver-etcd-client.key"))
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(pki("etcd-ca.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return errors.New("pki/etcd-ca.crt: no certificate")
	}
	tc := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return httpGetOK(&http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}, c.etcdURL()+"/health")
}

func httpOK(url string) error {
	return httpGetOK(&http.Client{Timeout: 3 * time.Second}, url)
}

func httpGetOK(cl *http.Client, url string) error {
	defer cl.CloseIdleConnections()
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return nil
}

func nodeReady(cs kubernetes.Interface, node string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			if cond.Status == corev1.ConditionTrue {
				return nil
			}
			return fmt.Errorf("node %s: Ready=%s: %s", node, cond.Status, cond.Message)
		}
	}
	return fmt.Errorf("node %s has no Ready condition yet", node)
}

// smokePodSpec is a pod on the pod network running the smoke image: GET /api through the
// kubernetes Service with its token, and a read from tcpAddr on the node.
func smokePodSpec(tcpAddr string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: smokePod, Namespace: "default", Labels: map[string]string{"app": smokePod}},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name:            "smoke",
				Image:           smokeImage,
				ImagePullPolicy: corev1.PullNever,
				Env:             []corev1.EnvVar{{Name: "SMOKE_TCP", Value: tcpAddr}},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(true),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

// runSmoke runs the smoke pod to completion. Meanwhile a TCP listener on the node IP
// stands in for the e2e suite's brokers.
func (c *Cluster) runSmoke(cs kubernetes.Interface, timeout time.Duration) error {
	ctx := context.Background()
	if err := c.waitFor(cCtrlMgr, "service account default/default", time.Minute, func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return err
	}
	l, err := net.Listen("tcp", net.JoinHostPort(c.NodeIP, "0"))
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "hello from the node %s\n", c.NodeIP)
			conn.Close()
		}
	}()
	pods := cs.CoreV1().Pods("default")
	_ = pods.Delete(ctx, smokePod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	t0 := time.Now()
	var phase corev1.PodPhase
	err = c.waitFor(cKubelet, "smoke pod Succeeded", timeout, func() error {
		p, err := pods.Get(ctx, smokePod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = pods.Create(ctx, smokePodSpec(l.Addr().String()), metav1.CreateOptions{})
			if err == nil {
				err = errors.New("created")
			}
			return err
		}
		if err != nil {
			return err
		}
		if p.DeletionTimestamp != nil {
			return errors.New("the previous smoke pod is terminating")
		}
		phase = p.Status.Phase
		switch phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			return nil
		}
		return fmt.Errorf("phase %s", phase)
	})
	logs, lerr := pods.GetLogs(smokePod, &corev1.PodLogOptions{}).DoRaw(ctx)
	if lerr == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(logs)), "\n") {
			logf("  | %s", line)
		}
	}
	if err != nil {
		return err
	}
	if phase != corev1.PodSucceeded {
		return fmt.Errorf("smoke pod %s after %s (kubectl describe pod %s; logs above)", phase, since(t0), smokePod)
	}
	if lerr != nil {
		return fmt.Errorf("smoke pod Succeeded, but its logs through the API server (kubelet port 10250): %w", lerr)
	}
	_ = pods.Delete(ctx, smokePod, metav1.DeleteOptions{})
	return nil
}

// loadDist imports every dist/images/*.tar.
func (c *Cluster) loadDist(repo string) error {
	for _, t := range distImages(repo) {
		out, err := c.importImage(t)
		if err != nil {
			return err
		}
		logf("loaded %s: %s", filepath.Base(t), out)
	}
	return nil
}

// linkKubectl points bin/kubectl of the clone at the cached kubectl v1.37.2 (unless
// bin/kubectl is a file of someone else's).
func (c *Cluster) linkKubectl(repo string) {
	link := filepath.Join(repo, "bin", "kubectl")
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		logf("bin/kubectl is not a symlink; left alone (kubectl v%s is %s)", k8sVersion, c.Bins.Kubectl)
		return
	}
	_ = os.MkdirAll(filepath.Dir(link), 0o755)
	_ = os.Remove(link)
	if err := os.Symlink(c.Bins.Kubectl, link); err != nil {
		logf("cannot link %s: %v", link, err)
	}
}

func (c *Cluster) printUp(took time.Duration, smoke bool) {
	msg := "cluster up"
	if smoke {
		msg = "cluster up, node Ready, smoke pod Succeeded"
	}
	fmt.Fprintf(os.Stderr, `
%s (%s)
  state dir:  %s (logs in logs/)
  node:       %s, IP %s (pods reach TCP ports bound on this address: bind brokers there)
  API server: %s
  kubectl:    %s (v%s; linked as bin/kubectl)
  tear down:  make cluster-down
`, msg, took, c.StateDir, c.NodeName, c.NodeIP, c.serverURL(), c.Bins.Kubectl, k8sVersion)
	if c.Kueue != nil {
		fmt.Fprintf(os.Stderr, "  kueue:      %s, webhooks at %s (log logs/kueue.log); remove it alone: queuejob-cluster kueue-down\n", c.Kueue.Version, c.webhookURL())
	}
	fmt.Printf("export KUBECONFIG=%s\n", c.kubeconfig())
}
