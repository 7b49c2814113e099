// Command cluster runs a one-node Kubernetes v1.37.2 cluster on this machine without
// Docker: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet on
// containerd (runc, ptp CNI) and kube-proxy, all built from source through the Go module
// proxy and cached outside the clone. Nothing is pulled: the pause and smoke images are
// built here, dist/images/*.tar are imported.
//
//	cluster up      start (or finish starting) the cluster; prints `export KUBECONFIG=…`
//	cluster down    stop it and undo its changes to the host; removes the state directory
//	cluster status  what runs; -o json for scripts (nodeIP, kubeconfig, stateDir, …)
//	cluster load    import dist/images/*.tar into the cluster's containerd
//	cluster build   only provide the Debian packages and binaries (or the named components)
//	cluster kueue-down  take Kueue (up --kueue) off the cluster, which keeps running
//
// See docs/local-cluster.md, "A local cluster without Docker".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func usage() {
	fmt.Fprintf(os.Stderr, `usage: cluster up|down|status|load|restart|build|kueue-down [flags]

  up      build what is missing (cold: 25-50 min on 2 cores), start the cluster, wait until
          the node is Ready and a smoke pod has Succeeded, print export KUBECONFIG=...
  down    stop everything up started, undo its host changes, remove the state directory
  status  show the cluster (-o json: stateDir, kubeconfig, nodeIP, apiServer, components)
  load    import dist/images/*.tar into the cluster's containerd
  restart COMPONENT
          stop one component (SIGTERM) and start it again, e.g. kube-apiserver for the
          e2e suite's restart spec; waits until the API server is ready again
  build [COMPONENT...]
          only install the Debian packages and build the binaries (what up does first);
          with components (e.g. kube-controller-manager, for make bench), build just those
          and print their paths
  kueue-down
          take Kueue off the cluster (which keeps running): its webhook configurations,
          then its CRDs with every Kueue object, then its process and files; up --kueue
          puts it back

flags (every subcommand):
`)
	flagSet(&options{}).PrintDefaults()
}

func flagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	def := os.Getenv("QUEUEJOB_CLUSTER_DIR")
	if def == "" {
		def = defaultStateDir
	}
	fs.StringVar(&o.StateDir, "state-dir", def, "directory holding all of the cluster's state (env QUEUEJOB_CLUSTER_DIR)")
	fs.StringVar(&o.CacheDir, "cache-dir", defaultCacheDir(), "cache of the built binaries")
	fs.StringVar(&o.Repo, "repo", "", "the queuejob-operator clone (default: found from the working directory)")
	fs.StringVar(&o.NodeIP, "node-ip", "", "the node's address, not loopback (default: the address of the default route's interface)")
	fs.StringVar(&o.NodeName, "node-name", defaultNodeName, "the node's name")
	fs.DurationVar(&o.Timeout, "smoke-timeout", 3*time.Minute, "how long up waits for the smoke pod")
	fs.BoolVar(&o.Install, "install", true, "install missing Debian packages (runc, containernetworking-plugins, iptables) with apt-get")
	fs.BoolVar(&o.Kueue, "kueue", false, "up: also run Kueue "+kueueVersion+" (built on first use, ~4 min), its CRDs and webhooks; remove it alone with kueue-down")
	fs.StringVar(&o.Output, "o", "", "status output: json, kubeconfig (only its path, if the cluster is up), or empty for text")
	return fs
}

func main() {
	if len(os.Args) < 2 || strings.HasPrefix(os.Args[1], "-") {
		usage()
		os.Exit(2)
	}
	sub := os.Args[1]
	o := &options{}
	fs := flagSet(o)
	fs.Usage = usage
	args, err := parseInterspersed(fs, os.Args[2:])
	if err != nil {
		os.Exit(2)
	}
	abs, err := filepath.Abs(o.StateDir)
	if err != nil || abs == "/" {
		logf("bad --state-dir %q", o.StateDir)
		os.Exit(2)
	}
	o.StateDir = abs
	if o.Repo == "" {
		o.Repo = findRepo()
	}
	switch sub {
	case "up":
		err = up(*o)
	case "down":
		err = down(*o)
	case "status":
		err = status(*o)
	case "load":
		err = load(*o)
	case "restart":
		err = restart(*o, firstArg(args))
	case "kueue-down":
		err = kueueDown(*o)
	case "build":
		if len(args) > 0 {
			var paths []string
			if paths, err = ensureComponents(o.CacheDir, args); err == nil {
				fmt.Println(strings.Join(paths, "\n"))
			}
			break
		}
		if err = ensurePackages(o.Install); err == nil {
			var b Bins
			if b, err = ensureBinaries(o.Repo, o.CacheDir); err == nil {
				logf("binaries ready: kubectl is %s", b.Kubectl)
			}
		}
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		logf("cluster %s: %v", sub, err)
		if sub == "up" {
			logf("what up started keeps running (logs in %s/logs); `make cluster-down` removes it", o.StateDir)
		}
		os.Exit(1)
	}
}

// parseInterspersed parses flags before, between and after the positional arguments
// (build kube-controller-manager --cache-dir X) and returns the positional ones; "--"
// ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// firstArg is args[0], or "" if there is none.
func firstArg(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// findRepo walks up from the working directory to the clone's go.mod.
func findRepo() string {
	wd, _ := os.Getwd()
	for d := wd; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/queuejob/queuejob-operator\n") {
			return d
		}
		if d == "/" {
			return wd
		}
	}
}

// Status is `status -o json`.
type Status struct {
	StateDir   string            `json:"stateDir"`
	Kubeconfig string            `json:"kubeconfig"`
	NodeName   string            `json:"nodeName"`
	NodeIP     string            `json:"nodeIP"`
	APIServer  string            `json:"apiServer"`
	Kubectl    string            `json:"kubectl"`
	Components map[string]int    `json:"components"` // pid, 0 if not running; kueue only with up --kueue, and not counted in up
	NodeReady  bool              `json:"nodeReady"`
	Up         bool              `json:"up"`
	Logs       map[string]string `json:"logs"`
}

func status(o options) error {
	c, err := loadCluster(o.StateDir)
	if errors.Is(err, os.ErrNotExist) {
		if o.Output == "kubeconfig" {
			return fmt.Errorf("no cluster in %s: run make cluster-up", o.StateDir)
		}
		if o.Output == "json" {
			fmt.Println(`{"up": false}`)
		} else {
			fmt.Printf("no cluster in %s\n", o.StateDir)
		}
		return nil
	}
	if err != nil {
		return err
	}
	s := Status{StateDir: c.StateDir, Kubeconfig: c.kubeconfig(), NodeName: c.NodeName, NodeIP: c.NodeIP,
		APIServer: c.serverURL(), Kubectl: c.Bins.Kubectl, Components: map[string]int{}, Logs: map[string]string{}}
	all := true
	for _, n := range componentOrder {
		pid, ok := c.running(n)
		if !ok {
			pid, all = 0, false
		}
		s.Components[n] = pid
		s.Logs[n] = c.logFile(n)
	}
	if c.Kueue != nil {
		pid, ok := c.running(cKueue)
		if !ok {
			pid = 0
		}
		s.Components[cKueue], s.Logs[cKueue] = pid, c.logFile(cKueue)
	}
	if cs, err := c.clientset(); err == nil {
		s.NodeReady = nodeReady(cs, c.NodeName) == nil
	}
	s.Up = all && s.NodeReady
	if o.Output == "kubeconfig" {
		// For scripts: KUBECONFIG=$(queuejob-cluster status -o kubeconfig).
		if !s.Up {
			return fmt.Errorf("the cluster in %s is not up: run make cluster-up", o.StateDir)
		}
		fmt.Println(s.Kubeconfig)
		return nil
	}
	if o.Output == "json" {
		b, _ := json.MarshalIndent(s, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	fmt.Printf("state dir:  %s\nnode:       %s, IP %s, Ready=%v\nAPI server: %s\nkubectl:    %s\n", s.StateDir, s.NodeName, s.NodeIP, s.NodeReady, s.APIServer, s.Kubectl)
	names := componentOrder
	if c.Kueue != nil {
		names = append(slices.Clip(names), cKueue)
	}
	for _, n := range names {
		st := "not running"
		if pid := s.Components[n]; pid != 0 {
			st = fmt.Sprintf("running, pid %d", pid)
		}
		fmt.Printf("  %-24s %s\n", n, st)
	}
	if cs, err := c.clientset(); err == nil && s.NodeReady {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
			fmt.Printf("pods:       %d\n", len(pods.Items))
		}
	}
	fmt.Printf("export KUBECONFIG=%s\n", s.Kubeconfig)
	return nil
}

func load(o options) error {
	c, err := loadCluster(o.StateDir)
	if err != nil {
		return fmt.Errorf("no cluster in %s (make cluster-up): %w", o.StateDir, err)
	}
	if _, ok := c.running(cContainerd); !ok {
		return fmt.Errorf("containerd of the cluster in %s is not running: make cluster-up", o.StateDir)
	}
	tars := distImages(o.Repo)
	if len(tars) == 0 {
		logf("no dist/images/*.tar in %s (make image writes them)", o.Repo)
		return nil
	}
	return c.loadDist(o.Repo)
}

// restart stops one component and starts it again with the same arguments, then waits
// until the API server answers /readyz.
func restart(o options, name string) error {
	c, err := loadCluster(o.StateDir)
	if err != nil {
		return fmt.Errorf("no cluster in %s: %w", o.StateDir, err)
	}
	if !c.EtcdTLS {
		return fmt.Errorf("the cluster in %s was made before etcd served TLS; restarting a component with today's arguments would break it: run cluster down, then up", o.StateDir)
	}
	comp, ok := c.components()[name]
	if !ok {
		return fmt.Errorf("no component %q: one of %s", name, strings.Join(componentOrder, ", "))
	}
	if _, err := c.stop(name, 30*time.Second); err != nil {
		return err
	}
	pid, err := c.start(comp)
	if err != nil {
		return err
	}
	logf("restarted %s (pid %d, log %s)", name, pid, c.logFile(name))
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	return c.waitAPIServerReady(cs)
}
