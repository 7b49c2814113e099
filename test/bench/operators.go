package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// Operator is an operator's manager running as a process of its own, talking to the API
// server through a CountingProxy, with its metrics (and for ours, pprof) on loopback.
type Operator struct {
	Name       string
	Proc       *Proc
	Proxy      *CountingProxy
	MetricsURL string
	PprofURL   string
	// Controller is the controller-runtime controller name whose reconciles count.
	Controller string
	third      string // the third loopback address launch gave it
}

func (op *Operator) Stop() {
	if op == nil {
		return
	}
	logf("%s's API requests: %s", op.Name, orDash(formatCounts(op.Proxy.Counts())))
	op.Proc.Stop()
	op.Proxy.Close()
}

// Reconciles is the controller's reconcile count so far.
func (op *Operator) Reconciles(ctx context.Context) (float64, error) {
	fams, err := scrape(ctx, op.MetricsURL)
	if err != nil {
		return 0, err
	}
	return sumMetric(fams, "controller_runtime_reconcile_total", map[string]string{"controller": op.Controller}), nil
}

// Sample is what a process has used so far.
type Sample struct {
	At         time.Time
	CPU        time.Duration
	Mem        Memory
	Requests   map[string]int64
	Reconciles float64
}

func (op *Operator) Sample(ctx context.Context) (Sample, error) {
	s := Sample{At: time.Now(), Requests: op.Proxy.Counts()}
	var err error
	if s.CPU, err = op.Proc.CPU(); err != nil {
		return s, err
	}
	if s.Mem, err = op.Proc.Memory(); err != nil {
		return s, err
	}
	s.Reconciles, err = op.Reconciles(ctx)
	return s, err
}

// Profile saves a pprof profile (heap, or profile?seconds=N for CPU) to path.
func (op *Operator) Profile(ctx context.Context, name, path string) error {
	if op.PprofURL == "" {
		return fmt.Errorf("%s serves no pprof", op.Name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, op.PprofURL+"/debug/pprof/"+name, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s", name, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, p *Proc, url string, timeout time.Duration) error {
	return waitFor(ctx, timeout, 200*time.Millisecond, "GET "+url, func() (bool, error) {
		if done, err := p.Exited(); done {
			return false, fmt.Errorf("%s exited (%v); see its log", p.Name, err)
		}
		resp, err := http.Get(url)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// launch starts an operator's manager as a process talking to the API server through a
// counting proxy, with metrics (and, if args uses it, a third port) on loopback, and
// waits until it is ready. args gets the metrics, health-probe and third addresses.
func (b *bench) launch(ctx context.Context, cp *ControlPlane, name, file, controller, bin string, env []string,
	args func(metrics, health, third string) []string) (*Operator, error) {
	proxy, err := startCountingProxy(cp.Config)
	if err != nil {
		return nil, err
	}
	kc := filepath.Join(b.o.Work, file+".kubeconfig")
	ports, err := servers.FreePorts(3)
	if err == nil {
		err = writeKubeconfig(kc, proxy.URL)
	}
	if err != nil {
		proxy.Close()
		return nil, err
	}
	addr := func(p int) string { return "127.0.0.1:" + strconv.Itoa(p) }
	p, err := startProc(name, filepath.Join(b.o.Work, file+".log"), append(env, "KUBECONFIG="+kc), bin,
		args(addr(ports[0]), addr(ports[1]), addr(ports[2]))...)
	if err != nil {
		proxy.Close()
		return nil, err
	}
	op := &Operator{Name: name, Proc: p, Proxy: proxy, Controller: controller,
		MetricsURL: "http://" + addr(ports[0]) + "/metrics", third: "http://" + addr(ports[2])}
	if err := waitHTTP(ctx, p, "http://"+addr(ports[1])+"/readyz", 2*time.Minute); err != nil {
		op.Stop()
		return nil, err
	}
	return op, nil
}

// startManager starts the operator's manager as the chart runs it, save that metrics are
// plain HTTP on loopback and pprof is on.
func (b *bench) startManager(ctx context.Context, cp *ControlPlane, tag string, extra ...string) (*Operator, error) {
	op, err := b.launch(ctx, cp, "queuejob-operator", tag+"-manager", "queuejob", b.o.Manager, nil,
		func(metrics, health, pprof string) []string {
			return append([]string{
				"--metrics-bind-address=" + metrics,
				"--health-probe-bind-address=" + health,
				"--pprof-bind-address=" + pprof,
				"--zap-encoder=json", "--zap-log-level=info",
			}, extra...)
		})
	if err != nil {
		return nil, err
	}
	op.PprofURL = op.third
	b.res.Settings["API rate limits"] = "queuejob-operator its default (50 a second, burst 100) unless a row says otherwise; KEDA its default (20, burst 30); kube-controller-manager 1000 (burst 2000) in sections 2-4, its default (20, burst 30) in section 1"
	return op, nil
}
