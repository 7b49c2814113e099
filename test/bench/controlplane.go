package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ControlPlane is envtest's kube-apiserver and etcd plus a real kube-controller-manager
// running the Job, garbage-collector and TTL-after-finished controllers, so that Jobs
// get pods, finished Jobs are deleted after their TTL and dependents are collected.
// No scheduler and no kubelet: the status writer (statuswriter.go) plays the kubelet.
type ControlPlane struct {
	Env        *envtest.Environment
	Config     *rest.Config
	Clientset  *kubernetes.Clientset
	Kubeconfig string // the admin's, a file
	KCM        *Proc
	dir        string
}

// startControlPlane starts envtest with the given CRD directories, then
// kube-controller-manager (kcmBin) against it.
// kcmQPS > 0 raises kube-controller-manager's client rate limit from its default (20 a
// second, burst 30).
func startControlPlane(dir, kcmBin string, crdDirs []string, kcmQPS int) (*ControlPlane, error) {
	env := &envtest.Environment{
		CRDDirectoryPaths:        crdDirs,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: 3 * time.Minute,
		ControlPlaneStopTimeout:  20 * time.Second,
	}
	// Room for 20 000 pods and two operators' watches on a 2-core machine.
	env.ControlPlane.GetAPIServer().Configure().
		Set("max-requests-inflight", "1000").
		Set("max-mutating-requests-inflight", "500")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest (KUBEBUILDER_ASSETS=%q): %w", os.Getenv("KUBEBUILDER_ASSETS"), err)
	}
	cp := &ControlPlane{Env: env, Config: cfg, dir: dir}
	cfg.QPS, cfg.Burst = 2000, 4000
	if cp.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		cp.Stop()
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		cp.Stop()
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + cp.Kubeconfig,
		"--controllers=job-controller,garbage-collector-controller,ttl-after-finished-controller",
		"--leader-elect=false",
		"--secure-port=0",
		"--v=1",
	}
	if kcmQPS > 0 {
		args = append(args, fmt.Sprintf("--kube-api-qps=%d", kcmQPS), fmt.Sprintf("--kube-api-burst=%d", 2*kcmQPS))
	}
	cp.KCM, err = startProc("kube-controller-manager", filepath.Join(dir, "kube-controller-manager.log"), nil, kcmBin, args...)
	if err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) Stop() {
	cp.KCM.Stop()
	if err := cp.Env.Stop(); err != nil {
		logf("stop envtest: %v", err)
	}
}

// kcmVersion is what `kube-controller-manager --version` prints.
func binVersion(bin string) string {
	out, err := runOut(bin, "--version")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(out)
}

// CountingProxy stands between an operator and the API server and counts its requests by
// verb and resource, as the API server's own apiserver_request_total would, but for that
// client alone. The operator talks plain HTTP to it on loopback; the proxy talks to the
// API server as the envtest admin.
type CountingProxy struct {
	URL      string
	srv      *http.Server
	mu       sync.Mutex
	counts   map[string]int64 // "verb resource[/subresource]"
	infoFact *request.RequestInfoFactory
}

func startCountingProxy(cfg *rest.Config) (*CountingProxy, error) {
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	tr, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &CountingProxy{
		URL:    "http://" + l.Addr().String(),
		counts: map[string]int64{},
		infoFact: &request.RequestInfoFactory{
			APIPrefixes:          sets.NewString("api", "apis"),
			GrouplessAPIPrefixes: sets.NewString("api"),
		},
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport:     tr,
		FlushInterval: -1, // watches stream
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, context.Canceled) { // a client that went away, as watches do
				logf("proxy: %s %s: %v", r.Method, r.URL.Path, err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := p.count(r)
		t0 := time.Now()
		rp.ServeHTTP(w, r)
		if strings.HasPrefix(key, "watch ") && os.Getenv("BENCH_DEBUG_WATCH") != "" {
			logf("proxy: %s %s ended after %s", key, r.URL.RawQuery, time.Since(t0).Round(time.Millisecond))
		}
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

func (p *CountingProxy) count(r *http.Request) string {
	key := r.Method + " " + r.URL.Path
	if info, err := p.infoFact.NewRequestInfo(r); err == nil && info.IsResourceRequest {
		key = info.Verb + " " + info.Resource
		if info.Subresource != "" {
			key += "/" + info.Subresource
		}
	}
	p.mu.Lock()
	p.counts[key]++
	p.mu.Unlock()
	return key
}

// Counts is a copy of the counts so far.
func (p *CountingProxy) Counts() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

func (p *CountingProxy) Close() { _ = p.srv.Close() }

// countsDelta is after−before, and their sum.
func countsDelta(before, after map[string]int64) (map[string]int64, int64) {
	d := map[string]int64{}
	var total int64
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			d[k] = n
			total += n
		}
	}
	return d, total
}

// formatCounts lists counts largest first: "list pods 3, get queuejobs 2".
func formatCounts(c map[string]int64) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c[a] != c[b] {
			return int(c[b] - c[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + strconv.FormatInt(c[k], 10)
	}
	return strings.Join(parts, ", ")
}

// writeKubeconfig writes a kubeconfig for an unauthenticated plain-HTTP server (the proxy).
func writeKubeconfig(path, server string) error {
	c := clientcmdapi.NewConfig()
	c.Clusters["bench"] = &clientcmdapi.Cluster{Server: server}
	c.AuthInfos["bench"] = &clientcmdapi.AuthInfo{}
	c.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench", Namespace: "default"}
	c.CurrentContext = "bench"
	return clientcmd.WriteToFile(*c, path)
}

// waitFor polls cond every interval until it is true, fails, or ctx ends.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s", what, timeout)
		case <-t.C:
		}
	}
}
