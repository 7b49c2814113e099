// Command demo is `make demo`: it runs the seed article's three examples on the operator,
// installed with helm, in a real cluster, and shows what they did.
//
//	go run ./hack/demo [run]   # the demo (make demo)
//	go run ./hack/demo clean   # delete what it made (make demo-clean)
//
// The cluster is the one KUBECONFIG names, if its API server answers; else the local
// cluster of hack/cluster, brought up first (make cluster-up). redis-server and
// rabbitmq-server from Debian run on this machine, on the node's address where the
// cluster's pods reach them, detached so that the QueueJobs can still be looked at after
// the demo; `clean` stops them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/test/e2e/framework"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// Namespace holds the demo's QueueJobs; Release is the chart's release.
const Namespace = "queuejob-demo"

var release = framework.Release{Name: "queuejob-operator", Namespace: "queuejob-system", Chart: "charts/queuejob-operator"}

type options struct {
	kubectl, helm, qj string
	images            framework.Images
	clusterCmd        []string
	timeout           time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.kubectl, "kubectl", "", "kubectl binary; default: the local cluster's kubectl v1.37.2 on the local cluster, else kubectl on PATH")
	flag.StringVar(&o.helm, "helm", "bin/helm", "helm binary")
	flag.StringVar(&o.qj, "qj", "bin/qj", "the qj CLI (make qj)")
	flag.StringVar(&o.images.Repo, "image-repo", "ghcr.io/queuejob", "repository of the project's images (make image)")
	flag.StringVar(&o.images.Tag, "image-tag", "0.1.0", "tag of the project's images")
	cluster := flag.String("cluster", "bin/queuejob-cluster", "the local cluster's command and its flags, which go after the subcommand (up, load, status)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long the examples may take")
	flag.Parse()
	o.clusterCmd = strings.Fields(*cluster)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var err error
	switch flag.Arg(0) {
	case "", "run":
		err = run(ctx, o)
	case "clean":
		err = clean(ctx, o)
	default:
		err = fmt.Errorf("unknown command %q: use run or clean", flag.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		if flag.Arg(0) != "clean" {
			fmt.Fprintln(os.Stderr, "demo: `make demo-clean` removes what it made (namespace, release, brokers); `make demo` may be run again")
		}
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

// connect returns the cluster KUBECONFIG names if it answers, else brings up the local
// cluster; local says which.
func connect(ctx context.Context, o options) (c *framework.Cluster, local bool, err error) {
	if os.Getenv("KUBECONFIG") != "" {
		if c, err := framework.Connect("", 10*time.Second); err == nil {
			step("Using the cluster of KUBECONFIG=%s (%s)", os.Getenv("KUBECONFIG"), c.Config.Host)
			return c, isLocal(ctx, o, os.Getenv("KUBECONFIG")), nil
		} else {
			fmt.Printf("KUBECONFIG=%s does not answer (%v): using the local cluster instead.\n", os.Getenv("KUBECONFIG"), err)
		}
	}
	step("Bringing up the local cluster (make cluster-up; cold, building Kubernetes, etcd and containerd from source takes 25-50 min on 2 cores)")
	if err := runCmd(ctx, o.clusterArgs("up")...); err != nil {
		return nil, false, err
	}
	kc, err := localKubeconfig(ctx, o)
	if err != nil {
		return nil, false, err
	}
	c, err = framework.Connect(kc, 30*time.Second)
	if err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// clusterArgs is the cluster tool's command line for a subcommand: the tool, the
// subcommand, then the tool's flags and args.
func (o options) clusterArgs(sub string, args ...string) []string {
	out := []string{o.clusterCmd[0], sub}
	out = append(out, o.clusterCmd[1:]...)
	return append(out, args...)
}

// clusterStatus is what `hack/cluster status -o json` prints.
type clusterStatus struct {
	Kubeconfig string `json:"kubeconfig"`
	NodeIP     string `json:"nodeIP"`
	StateDir   string `json:"stateDir"`
	Running    bool   `json:"up"`
	Kubectl    string `json:"kubectl"`
}

func localStatus(ctx context.Context, o options) (clusterStatus, error) {
	var st clusterStatus
	args := o.clusterArgs("status", "-o", "json")
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
	if err != nil {
		return st, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("%s printed %q: %w", strings.Join(args, " "), out, err)
	}
	return st, nil
}

func localKubeconfig(ctx context.Context, o options) (string, error) {
	st, err := localStatus(ctx, o)
	if err != nil {
		return "", err
	}
	if !st.Running || st.Kubeconfig == "" {
		return "", errors.New("the local cluster is not running after cluster-up")
	}
	return st.Kubeconfig, nil
}

// isLocal says whether kubeconfig is the local cluster's (its images can be loaded).
func isLocal(ctx context.Context, o options, kubeconfig string) bool {
	st, err := localStatus(ctx, o)
	if err != nil || !st.Running {
		return false
	}
	a, _ := filepath.Abs(st.Kubeconfig)
	b, _ := filepath.Abs(kubeconfig)
	return a == b
}

func runCmd(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return nil
}

func run(ctx context.Context, o options) error {
	fmt.Println("queuejob-operator demo: the seed article's three examples (pi, job-wq-1 on RabbitMQ, job-wq-2 on Redis),")
	fmt.Println("run by QueueJobs in a real cluster. On a cold machine the builds take a while; each step says what it does.")
	c, local, err := connect(ctx, o)
	if err != nil {
		return err
	}
	c.Kubectl, c.Helm = o.kubectl, o.helm
	if c.Kubectl == "" {
		c.Kubectl = "kubectl"
		if st, err := localStatus(ctx, o); err == nil && local && st.Kubectl != "" {
			c.Kubectl = st.Kubectl // built with the cluster: there may be no other
		}
	}
	if local {
		step("Importing the images of make image into the node (make cluster-load)")
		if err := runCmd(ctx, o.clusterArgs("load")...); err != nil {
			return err
		}
	} else {
		fmt.Printf("Not the local cluster: its nodes must be able to pull %s and the example images.\n", o.images.Ref("queuejob-operator"))
	}
	host, err := c.NodeAddress(ctx)
	if err != nil {
		return err
	}
	if h := os.Getenv("DEMO_BROKER_HOST"); h != "" {
		host = h
	}
	step("Starting redis-server and rabbitmq-server on %s, where the pods reach them", host)
	b, err := startBrokers(host)
	if err != nil {
		return err
	}
	fmt.Printf("redis %s, rabbitmq %s (management %d); logs under %s and %s\n", b.Redis, b.RabbitMQ, b.ManagementPort, b.Dirs[0], b.Dirs[1])

	step("Installing the operator: helm upgrade --install %s %s -n %s", release.Name, release.Chart, release.Namespace)
	r := release
	r.Values = map[string]string{
		"image.repository": o.images.Repo + "/queuejob-operator",
		"image.tag":        o.images.Tag,
		// A new image under the same tag rolls the manager.
		"podAnnotations.image-digest": framework.ImageDigest(filepath.Join("dist", "images", "queuejob-operator.tar")),
	}
	if out, err := c.Install(ctx, r); err != nil {
		return err
	} else {
		fmt.Print(lastLines(out, 6))
	}

	step("Creating namespace %s with the three samples of config/samples, each with the project's image of its worker", Namespace)
	if err := resetNamespace(ctx, c); err != nil {
		return err
	}
	for _, sec := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "rabbitmq-url", Namespace: Namespace}, StringData: map[string]string{"url": b.amqpURL}},
		{ObjectMeta: metav1.ObjectMeta{Name: "redis", Namespace: Namespace}, StringData: map[string]string{"password": b.redisPassword}},
	} {
		if err := c.Client.Create(ctx, sec); err != nil {
			return err
		}
	}
	for _, name := range []string{"pi", "job-wq-1", "job-wq-2"} {
		qj, err := framework.Sample(".", name)
		if err != nil {
			return err
		}
		if err := framework.Localize(qj, o.images, framework.Brokers{RedisAddress: b.Redis, RedisPasswordSecret: "redis"}); err != nil {
			return err
		}
		qj.Namespace = Namespace
		if err := c.Client.Create(ctx, qj); err != nil {
			return fmt.Errorf("creating QueueJob %s: %w", name, err)
		}
		fmt.Printf("queuejob.batch.queuejob.io/%s created (image %s)\n", name, qj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Image)
	}

	step("Filling the queues with qj enqueue: 8 messages for job-wq-1, 9 items for job-wq-2")
	qjArgs := []string{"-n", Namespace}
	if c.Kubeconfig != "" {
		qjArgs = append(qjArgs, "--kubeconfig", c.Kubeconfig)
	}
	msgs := demoMessages
	if err := runCmd(ctx, append(append([]string{o.qj, "enqueue", "job-wq-1", "--declare"}, qjArgs...), msgs...)...); err != nil {
		return err
	}
	if err := runCmd(ctx, append(append([]string{o.qj, "enqueue", "job-wq-2", "--fifo"}, qjArgs...), append(slices.Clone(msgs), "orange")...)...); err != nil {
		return err
	}

	step("Watching: kubectl get qj -n %s -w (until all three are finished)", Namespace)
	if err := watch(ctx, c, o.timeout); err != nil {
		return err
	}
	return results(ctx, c, b)
}

// demoMessages are the items of both queues, as in the article.
var demoMessages = []string{"apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon"}

// watch streams kubectl get qj -w until every QueueJob in the namespace finished.
func watch(ctx context.Context, c *framework.Cluster, timeout time.Duration) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	cmd := exec.CommandContext(wctx, c.Kubectl, "get", "qj", "-n", Namespace, "-w")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { stop(); _ = cmd.Wait() }()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := wait.PollUntilContextCancel(tctx, time.Second, true, func(ctx context.Context) (bool, error) {
		var l qjv1.QueueJobList
		if err := c.Client.List(ctx, &l, client.InNamespace(Namespace)); err != nil {
			return false, nil
		}
		for _, q := range l.Items {
			if q.Status.State != qjv1.StateComplete && q.Status.State != qjv1.StateFailed {
				return false, nil
			}
		}
		return len(l.Items) == 3, nil
	})
	if err != nil {
		return fmt.Errorf("the examples did not finish within %s: %w (look with kubectl get qj,jobs,pods -n %s)", timeout, err, Namespace)
	}
	// Let kubectl print the last rows.
	time.Sleep(2 * time.Second)
	return nil
}

func results(ctx context.Context, c *framework.Cluster, b *brokerState) error {
	step("Results")
	failed := false
	for _, name := range []string{"pi", "job-wq-1", "job-wq-2"} {
		var q qjv1.QueueJob
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: Namespace, Name: name}, &q); err != nil {
			return err
		}
		cond := meta.FindStatusCondition(q.Status.Conditions, qjv1.ConditionComplete)
		reason := ""
		if cond != nil {
			reason = cond.Reason
		}
		fmt.Printf("%-9s %-9s completions %-8s succeeded %d failed %d duration %s %s\n", name, q.Status.State, q.Status.Completions, q.Status.Succeeded, q.Status.Failed, q.Status.Duration, reason)
		if q.Status.State != qjv1.StateComplete {
			failed = true
		}
	}
	logs, err := c.PodLogs(ctx, Namespace, map[string]string{"batch.kubernetes.io/job-name": "pi"})
	if err != nil {
		return err
	}
	for _, l := range logs {
		l = strings.TrimSpace(l)
		fmt.Printf("\npi (kubectl logs job/pi -n %s): %d digits\n  %s…%s\n", Namespace, len(strings.TrimPrefix(l, "3."))+1, head(l, 70), tailStr(l, 10))
	}
	// A pod's log holds queuejob-worker's log lines (stderr) and what cat printed: the
	// message, without a newline.
	var processed []string
	pods := 0
	all, err := c.PodLogs(ctx, Namespace, nil)
	if err != nil {
		return err
	}
	for pod, l := range all {
		if !strings.HasPrefix(pod, "job-wq-1-") {
			continue
		}
		pods++
		for _, m := range demoMessages {
			if strings.Contains(l, m) {
				processed = append(processed, m)
			}
		}
	}
	sort.Strings(processed)
	fmt.Printf("\njob-wq-1: %d pods printed %d messages: %s\n", pods, len(processed), strings.Join(processed, " "))
	var worked []string
	for pod, l := range all {
		if strings.HasPrefix(pod, "job-wq-2-") {
			for _, line := range strings.Split(l, "\n") {
				if s, ok := strings.CutPrefix(line, "Working on "); ok {
					worked = append(worked, s)
				}
			}
		}
	}
	fmt.Printf("job-wq-2: the workers took %d items: %s\n", len(worked), strings.Join(worked, " "))
	left, err := b.leftovers(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("queues now: %s\n", left)

	step("Look around")
	kc := ""
	if c.Kubeconfig != "" {
		kc = "export KUBECONFIG=" + c.Kubeconfig + "\n  "
	}
	if c.Kubectl != "kubectl" {
		kc += "alias kubectl=" + c.Kubectl + "   # the kubectl the demo used\n  "
	}
	fmt.Printf("  %skubectl get qj,jobs,pods -n %[2]s -o wide\n  kubectl describe qj job-wq-2 -n %[2]s\n  bin/qj status job-wq-1 -n %[2]s\n  kubectl logs -n %[2]s job/pi\n  kubectl logs -n %[3]s deploy/%[4]s\n",
		kc, Namespace, release.Namespace, release.Name)
	fmt.Printf("Clean up: make demo-clean (the namespace, the release, the brokers); make cluster-down (the local cluster).\n")
	if failed {
		return errors.New("not every example completed")
	}
	return nil
}

func resetNamespace(ctx context.Context, c *framework.Cluster) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}
	if err := c.Client.Delete(ctx, ns); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := wait.PollUntilContextCancel(tctx, time.Second, true, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		return fmt.Errorf("namespace %s from an earlier demo is still terminating: %w", Namespace, err)
	}
	return c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}})
}

func clean(ctx context.Context, o options) error {
	if c, err := framework.Connect("", 10*time.Second); err == nil {
		c.Helm = o.helm
		step("Deleting namespace %s and the release %s", Namespace, release.Name)
		if err := c.Client.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if out, err := c.Uninstall(ctx, release); err != nil {
			return err
		} else {
			fmt.Print(out)
		}
	} else if kc, kerr := localKubeconfig(ctx, o); kerr == nil {
		os.Setenv("KUBECONFIG", kc)
		return clean(ctx, o)
	} else {
		fmt.Println("No cluster answers: nothing to delete in a cluster.")
	}
	step("Stopping the demo's brokers")
	return stopBrokers()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

func head(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func tailStr(s string, n int) string {
	if len(s) <= n {
		return ""
	}
	return s[len(s)-n:]
}

// brokerState is what the demo records about the brokers it started, so that a later
// run reuses them and clean stops them.
type brokerState struct {
	Redis          string `json:"redis"`
	RabbitMQ       string `json:"rabbitmq"`
	ManagementPort int    `json:"managementPort"`
	PIDs           []int  `json:"pids"`
	// StartTimes are the PIDs' start times (/proc/PID/stat), so that a reused PID is
	// never signalled.
	StartTimes []string `json:"startTimes"`
	Dirs       []string `json:"dirs"`
	// Not written to the file: the credentials.
	redisPassword, amqpURL string
}

func stateFile() string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "queuejob-operator", "demo-brokers.json")
}

// startBrokers starts detached brokers on host, after stopping those of an earlier run
// (their data is the earlier demo's).
func startBrokers(host string) (*brokerState, error) {
	if err := stopBrokers(); err != nil {
		return nil, err
	}
	// Reachable from the pods, so not open: a random password (and RabbitMQ's only user
	// is a random one).
	password := servers.RandomString(24)
	rs, err := servers.StartRedisWith(servers.RedisOptions{Host: host, Detach: true, Password: password})
	if err != nil {
		return nil, fmt.Errorf("starting redis-server (make servers installs it): %w", err)
	}
	st := &brokerState{Redis: rs.Addr(), redisPassword: password, PIDs: []int{rs.PID()}, Dirs: []string{rs.Dir()}}
	rb, err := servers.StartRabbitMQWith(servers.AMQPReady, servers.RabbitMQOptions{Host: host, Detach: true})
	if err != nil {
		rs.Close()
		return nil, fmt.Errorf("starting rabbitmq-server (make servers installs it): %w", err)
	}
	st.RabbitMQ, st.ManagementPort, st.amqpURL = rb.Addr(), rb.ManagementPort(), rb.URL()
	st.PIDs = append(st.PIDs, rb.PID(), rb.EPMD().PID())
	st.Dirs = append(st.Dirs, rb.Dir(), rb.EPMD().Dir())
	for _, pid := range st.PIDs {
		st.StartTimes = append(st.StartTimes, startTime(pid))
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.MkdirAll(filepath.Dir(stateFile()), 0o755); err != nil {
		return nil, err
	}
	return st, os.WriteFile(stateFile(), b, 0o600)
}

// stopBrokers stops the brokers the state file names (each its own session: the whole
// process group) and removes their directories.
func stopBrokers() error {
	b, err := os.ReadFile(stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st brokerState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", stateFile(), err)
	}
	// Only processes that are still the ones started: same PID and start time.
	var pids []int
	for i, pid := range st.PIDs {
		if pid > 0 && i < len(st.StartTimes) && st.StartTimes[i] != "" && startTime(pid) == st.StartTimes[i] {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		_ = syscall.Kill(-pid, syscall.SIGTERM) // its own session and process group
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
	for _, d := range st.Dirs {
		// Only the servers' own temporary directories.
		if filepath.Dir(d) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(d), "queuejob-") {
			_ = os.RemoveAll(d)
		}
	}
	fmt.Printf("stopped the demo's redis-server %s and rabbitmq-server %s\n", st.Redis, st.RabbitMQ)
	return os.Remove(stateFile())
}

// leftovers reports what the queues still hold: job-wq-1's RabbitMQ queue, job-wq-2's
// Redis list and its :processing list of leased items.
func (b *brokerState) leftovers(ctx context.Context) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: b.Redis, Password: b.redisPassword})
	defer rc.Close()
	ready, err := rc.LLen(ctx, "job2").Result()
	if err != nil {
		return "", err
	}
	leased, err := rc.LLen(ctx, "job2:processing").Result()
	if err != nil {
		return "", err
	}
	conn, err := amqp.Dial(b.amqpURL)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return "", err
	}
	q, err := ch.QueueDeclarePassive("job1", true, false, false, false, nil)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("RabbitMQ job1 %d messages; Redis job2 %d items, job2:processing %d", q.Messages, ready, leased), nil
}

// startTime is field 22 of /proc/PID/stat (the start time in clock ticks since boot),
// "" if the process is gone.
func startTime(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}
