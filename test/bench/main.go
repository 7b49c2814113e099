// Command bench is make bench: the operator measured beside its peers in one run on one
// machine, against a real control plane (envtest's kube-apiserver and etcd plus a real
// kube-controller-manager), real redis-server and rabbitmq-server, and the operator's
// and KEDA's managers as processes of their own. It writes a Markdown table and JSON under
// bench/results. Benchmarks are not tests: nothing here asserts a time.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/redis/go-redis/v9"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// sections, in the order they run.
var allSections = []string{"reaction", "api", "memory", "cleanup", "probe", "drain", "reclaim", "waves"}

type options struct {
	Out       string
	Stem      string
	Only      string
	Repo      string
	Trials    int
	QueueJobs int
	// IdleInterval is the probe interval of the idle QueueJobs and the polling interval
	// of the idle ScaledJobs in sections 2 and 3; 0: each its default.
	IdleInterval int
	Pods         int
	KCM          string
	Manager      string
	KEDA         string
	KEDACRDs     string
	KEDAVersion  string
	Worker       string
	Work         string
}

func main() {
	var o options
	home, _ := os.UserHomeDir()
	cache := filepath.Join(home, ".cache", "queuejob-operator")
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		cache = filepath.Join(d, "queuejob-operator")
	}
	flag.StringVar(&o.Out, "out", "bench/results", "directory the results go to")
	flag.StringVar(&o.Stem, "stem", "", "file name of the results without extension (default: <date>-<revision>)")
	flag.StringVar(&o.Only, "only", "", "comma-separated sections to run (default all): "+strings.Join(allSections, ","))
	flag.StringVar(&o.Repo, "repo", ".", "the queuejob-operator clone")
	flag.IntVar(&o.Trials, "trials", 100, "reaction-latency trials per operator and setting")
	flag.IntVar(&o.QueueJobs, "queuejobs", 1000, "idle QueueJobs (and ScaledJobs) for the API-cost and memory sections")
	flag.IntVar(&o.Pods, "pods", 10000, "owned pods, then unrelated pods, for the memory section")
	flag.IntVar(&o.IdleInterval, "idle-interval", 0, "probe interval of the idle QueueJobs and polling interval of the idle ScaledJobs, in seconds (0: each its default, 2 and 30)")
	flag.StringVar(&o.KCM, "kube-controller-manager", filepath.Join(cache, "k8s", "v1.37.2", "kube-controller-manager"), "kube-controller-manager binary (make cluster-tool && bin/queuejob-cluster build)")
	flag.StringVar(&o.Manager, "manager", "bin/manager", "the operator's manager binary")
	flag.StringVar(&o.KEDA, "keda", "bin/keda-operator-v2.21.0", "KEDA's operator binary (make keda); missing: KEDA's rows say so")
	flag.StringVar(&o.KEDAVersion, "keda-version", "v2.21.0", "the version of -keda, for the results")
	flag.StringVar(&o.KEDACRDs, "keda-crds", "", "directory of KEDA's CRDs, config/crd/bases of the KEDA module (make bench passes it); empty: KEDA's rows say so")
	flag.StringVar(&o.Worker, "worker", "bin/queuejob-worker", "queuejob-worker binary")
	flag.StringVar(&o.Work, "work-dir", "", "directory for logs and kubeconfigs (default: a temporary one, removed unless a section failed)")
	flag.Parse()

	// envtest logs through controller-runtime's logger; its errors come back as errors.
	ctrllog.SetLogger(logr.Discard())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		logf("bench: %v", err)
		os.Exit(1)
	}
}

func (o options) runs(section string) bool {
	if o.Only == "" {
		return true
	}
	for _, s := range strings.Split(o.Only, ",") {
		if strings.TrimSpace(s) == section {
			return true
		}
	}
	return false
}

func run(ctx context.Context, o options) error {
	for _, s := range strings.Split(o.Only, ",") {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(allSections, s) {
			return fmt.Errorf("-only: unknown section %q; sections: %s", s, strings.Join(allSections, ","))
		}
	}
	res := &Results{Started: time.Now(), Versions: map[string]string{}, Settings: map[string]string{}}
	res.Machine = machine()
	res.Machine.LoadAvgStart = loadAvg()
	res.Versions["go"] = runtime.Version()
	res.Versions["queuejob-operator"] = gitRevision(o.Repo)
	if o.Stem == "" {
		o.Stem = time.Now().UTC().Format("2006-01-02") + "-" + strings.TrimSuffix(gitShort(o.Repo), "\n")
	}
	if o.Work == "" {
		d, err := os.MkdirTemp("", "queuejob-bench-")
		if err != nil {
			return err
		}
		o.Work = d
		// Kept when a section failed, for its logs.
		defer func() {
			if !res.failed() {
				_ = os.RemoveAll(d)
			}
		}()
	}
	logf("work dir (logs, kubeconfigs): %s", o.Work)
	// The profiles go there as the sections run.
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return err
	}

	b := &bench{o: o, res: res}
	defer b.close()
	for _, s := range allSections {
		if !o.runs(s) || ctx.Err() != nil {
			continue
		}
		logf("== %s", s)
		if err := b.section(ctx, s); err != nil {
			logf("%s: %v", s, err)
			res.missing(sectionTitle[s], "(section)", err.Error())
		}
	}
	res.Machine.LoadAvgEnd = loadAvg()
	res.Finished = time.Now()
	md, err := res.write(o.Out, o.Stem)
	if err != nil {
		return err
	}
	logf("wrote %s and %s.json", md, strings.TrimSuffix(md, ".md"))
	return ctx.Err()
}

var sectionTitle = map[string]string{
	"reaction": "1. Reaction latency: items pushed into an empty queue → the Job created",
	"api":      "2. API cost with idle QueueJobs",
	"memory":   "3. Memory: the manager's peak RSS",
	"cleanup":  "4. Cleanup latency: finished → deleted, past the TTL",
	"probe":    "5. Probe cost per backend",
	"drain":    "6. Drain throughput",
	"reclaim":  "7. Reclaim: a worker pod ended mid-item (deleted, or Failed) → the item ready again",
	"waves":    "8. Waves at once: an item pushed onto every idle queue at once → every Job created",
}

// bench holds what sections share: the control plane and the operators, started on first
// use and stopped at the end.
type bench struct {
	o      options
	res    *Results
	redis  *servers.Server
	scaled bool // sections 2 and 3 ran together
}

func (b *bench) close() {
	if b.redis != nil {
		b.redis.Close()
	}
}

func (b *bench) section(ctx context.Context, s string) error {
	switch s {
	case "reaction":
		return b.reaction(ctx)
	case "api":
		b.scaled = true
		return b.scale(ctx, true, b.o.runs("memory"))
	case "memory":
		if b.scaled {
			return nil
		}
		return b.scale(ctx, false, true)
	case "cleanup":
		return b.cleanup(ctx)
	case "probe":
		return benchProbe(ctx, b.res, []int{1, 100, 1000})
	case "drain":
		return benchDrain(ctx, b.res, b.o.Worker, 20000, []int{1, 4, 8})
	case "reclaim":
		return b.reclaim(ctx)
	case "waves":
		return b.waves(ctx)
	}
	return fmt.Errorf("unknown section %q", s)
}

// redisServer is the redis-server of sections 1 to 4, started on first use.
func (b *bench) redisServer() (*servers.Server, error) {
	if b.redis != nil {
		return b.redis, nil
	}
	s, err := servers.StartRedis("")
	if err != nil {
		return nil, err
	}
	b.redis = s
	if v, err := runOut("redis-server", "--version"); err == nil {
		b.res.Versions["redis-server"] = strings.TrimSpace(v)
	}
	return s, nil
}

// redisClient is the shared redis-server and a client of it, to close.
func (b *bench) redisClient() (*servers.Server, *redis.Client, error) {
	rs, err := b.redisServer()
	if err != nil {
		return nil, nil, err
	}
	return rs, redis.NewClient(&redis.Options{Addr: rs.Addr(), DisableIdentity: true}), nil
}

// controlPlane starts a control plane of its own for a section, so that no section's
// objects weigh on another's figures.
// setup starts a section's control plane and a client of it; done stops the control
// plane, after whatever ran under ctx (watches, the status writer) has ended.
func (b *bench) setup(ctx context.Context, tag string, kcmQPS int) (context.Context, *ControlPlane, client.Client, func(), error) {
	cp, err := b.controlPlane(ctx, tag, kcmQPS)
	if err != nil {
		return ctx, nil, nil, nil, err
	}
	c, err := newClient(cp)
	if err != nil {
		cp.Stop()
		return ctx, nil, nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	return ctx, cp, c, func() { cancel(); cp.Stop() }, nil
}

// kcmQPS > 0 raises kube-controller-manager's client rate limit (see startControlPlane).
func (b *bench) controlPlane(ctx context.Context, tag string, kcmQPS int) (*ControlPlane, error) {
	if _, err := os.Stat(b.o.KCM); err != nil {
		return nil, fmt.Errorf("kube-controller-manager: %w (make bench builds it with bin/queuejob-cluster build)", err)
	}
	dir := filepath.Join(b.o.Work, tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	crds := []string{filepath.Join(b.o.Repo, "config", "crd", "bases")}
	if b.o.KEDACRDs != "" {
		crds = append(crds, b.o.KEDACRDs)
	}
	t0 := time.Now()
	cp, err := startControlPlane(dir, b.o.KCM, crds, kcmQPS)
	if err != nil {
		return nil, err
	}
	logf("control plane for %s up in %s", tag, time.Since(t0).Round(time.Millisecond))
	if _, ok := b.res.Versions["kube-apiserver"]; !ok {
		if v, err := cp.Clientset.Discovery().ServerVersion(); err == nil {
			b.res.Versions["kube-apiserver"] = v.GitVersion + " (envtest)"
		}
		b.res.Versions["kube-controller-manager"] = binVersion(b.o.KCM)
	}
	return cp, nil
}

func runOut(bin string, args ...string) (string, error) {
	out, err := exec.Command(bin, args...).CombinedOutput()
	return string(out), err
}

func gitRevision(repo string) string {
	out, err := runOut("git", "-C", repo, "describe", "--always", "--dirty", "--abbrev=12")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}

func gitShort(repo string) string {
	out, err := runOut("git", "-C", repo, "rev-parse", "--short=7", "HEAD")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(out)
}

func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}

func machine() Machine {
	m := Machine{Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.Atoi(f[1])
				m.MemTotalMiB = kb >> 10
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = "Linux " + charsToString(u.Release[:])
	}
	return m
}

func charsToString(c []int8) string {
	b := make([]byte, 0, len(c))
	for _, x := range c {
		if x == 0 {
			break
		}
		b = append(b, byte(x))
	}
	return string(b)
}
