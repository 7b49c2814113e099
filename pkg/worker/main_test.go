package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The tests run against real servers that TestMain starts on free ports.
var (
	redisServer  *servers.Server
	rabbitServer *servers.RabbitMQ
	// tlsRedis accepts only TLS, with a certificate of testCA, and the ACL user aclUser.
	tlsRedis *servers.Server
	testCA   *servers.CA
)

const (
	aclUser     = "worker"
	aclPassword = "W0rker-acl-pass"
	// envHelper makes the test binary a worker process (see helperMain) instead of
	// running the tests: the tests kill such workers with SIGKILL and SIGTERM.
	envHelper = "QUEUEJOB_WORKER_TEST_HELPER"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(servers.Main(m, func(g *servers.Group) {
		redisServer = g.Redis(servers.RedisOptions{})
		testCA = g.CA("queuejob worker test CA")
		tlsRedis = g.Redis(servers.RedisOptions{TLS: testCA,
			Users: []string{aclUser + " on >" + aclPassword + " ~* +@all"}})
		rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{})
	}))
}

// helperMain is a worker process configured from its environment, as in a pod:
//
//   - hold: leases one item, prints "leased <item>", and waits to be killed;
//   - run: Run until SIGTERM, with a handler that prints "leased <item>" and waits for
//     its context; prints "run returned: <error>" and exits 0 if Run returned the
//     context's error.
func helperMain(mode string) int {
	w, err := FromEnv()
	if err != nil {
		fmt.Println("FromEnv:", err)
		return 2
	}
	defer w.Close()
	switch mode {
	case "hold":
		it, err := w.Lease(context.Background())
		if err != nil {
			fmt.Println("Lease:", err)
			return 2
		}
		fmt.Printf("leased %s\n", it.Data())
		select {}
	case "run":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		_, err := w.Run(ctx, func(ctx context.Context, it *Item) error {
			fmt.Printf("leased %s\n", it.Data())
			<-ctx.Done()
			return ctx.Err()
		}, RunOptions{})
		fmt.Println("run returned:", err)
		if errors.Is(err, context.Canceled) {
			return 0
		}
		return 1
	}
	return 2
}

// helper is a worker process of the test binary.
type helper struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

// startHelper starts a worker process in mode with env (QUEUEJOB_* variables).
func startHelper(t *testing.T, mode string, env ...string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), envHelper+"="+mode), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, lines: make(chan string, 100), done: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			t.Logf("worker process %d: %s", cmd.Process.Pid, s.Text())
			h.lines <- s.Text()
		}
		_ = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	return h
}

// expect waits for the next line of the helper's output, which must start with prefix,
// and returns the rest.
func (h *helper) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case l := <-h.lines:
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("worker process printed %q, want %q...", l, prefix)
		}
		return strings.TrimPrefix(l, prefix)
	case <-h.done:
		t.Fatalf("worker process exited (%v) before printing %q", h.cmd.ProcessState, prefix)
	case <-time.After(60 * time.Second):
		t.Fatalf("worker process printed no %q within 60s", prefix)
	}
	return ""
}

// wait waits for the helper to exit and returns its exit code.
func (h *helper) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(60 * time.Second):
		t.Fatal("worker process did not exit within 60s")
	}
	return h.cmd.ProcessState.ExitCode()
}

func redisEnv(k string, extra ...string) []string {
	return append([]string{
		queue.EnvBackend + "=redis",
		redis.EnvAddress + "=" + redisServer.Addr(),
		redis.EnvKey + "=" + k,
	}, extra...)
}

// testCtx is a context for one test, bounded generously for a loaded machine.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// newWorker is a Worker with options o, logging into the test's log unless o has a
// Logger, closed after the test.
func newWorker(t testing.TB, o Options) *Worker {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	w, err := New(testCtx(t), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// testLogger writes the worker's log lines into the test's log while the test runs, and
// to stderr after (a keeper goroutine may outlive its test).
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.over.Store(true) })
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	t    testing.TB
	over atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.over.Load() {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

var _ io.Writer = &testWriter{}

// rdb is a plain client for the test to play producer and inspector.
func rdb(t testing.TB) *goredis.Client {
	t.Helper()
	return redisServer.RedisClient(t)
}

// key is a fresh list name per test.
func key(t testing.TB) string { return "wq-" + strings.ReplaceAll(t.Name(), "/", "-") }

// itemData describes a leased item in a message: its data, or <nil>.
func itemData(it *Item) string {
	if it == nil {
		return "<nil>"
	}
	return fmt.Sprintf("item %q (attempt %d)", it.Data(), it.Attempt())
}
