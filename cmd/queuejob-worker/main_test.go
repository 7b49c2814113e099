package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

// The tests build queuejob-worker and run it as a subprocess against a real redis-server,
// as a pod would run it.
var (
	redisServer *servers.Server
	// binary is the queuejob-worker built by TestMain.
	binary string
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		binary = g.GoBuild("queuejob-worker", ".")
		redisServer = g.Redis(servers.RedisOptions{})
	}))
}

// proc is a running queuejob-worker.
type proc struct {
	cmd   *exec.Cmd
	lines chan string // stdout, line by line
	done  chan struct{}

	mu     sync.Mutex
	stdout []string
	stderr []string
}

// startWorker runs queuejob-worker with args, the environment of a worker of list k plus
// env.
func startWorker(t *testing.T, k string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), redisEnv(k)...)
	cmd.Env = append(cmd.Env, env...)
	return startProc(t, cmd)
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errOut, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 1000), done: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Add(2)
	read := func(r io.Reader, name string, lines *[]string, ch chan string) {
		defer wg.Done()
		s := bufio.NewScanner(r)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			t.Logf("worker %d %s: %.200s", cmd.Process.Pid, name, s.Text())
			p.mu.Lock()
			*lines = append(*lines, s.Text())
			p.mu.Unlock()
			if ch != nil {
				ch <- s.Text()
			}
		}
	}
	go read(out, "stdout", &p.stdout, p.lines)
	go read(errOut, "stderr", &p.stderr, nil)
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// expect waits for a stdout line equal to want.
func (p *proc) expect(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(90 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if l == want {
				return
			}
		case <-p.done:
			t.Fatalf("the worker exited (%v) before printing %q", p.cmd.ProcessState, want)
		case <-timeout:
			t.Fatalf("the worker printed no %q within 90s", want)
		}
	}
}

// wait waits for the worker to exit and returns its exit code (-1 if a signal killed it).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the worker did not exit within 2m")
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output is the worker's stdout, line by line, once it has exited.
func (p *proc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.stdout...)
}

// lastLog is the worker's last line on stderr.
func (p *proc) lastLog() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.stderr) == 0 {
		return ""
	}
	return p.stderr[len(p.stderr)-1]
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderr, "\n")
}

// checkExit checks the exit code and that the last log line gives it with the reason.
func checkExit(t *testing.T, p *proc, code int, reason string) {
	t.Helper()
	if got := p.wait(t); got != code {
		t.Errorf("exit code %d, want %d; last log line: %s", got, code, p.lastLog())
	}
	last := p.lastLog()
	if !strings.Contains(last, fmt.Sprintf("code=%d", code)) || !strings.Contains(last, reason) {
		t.Errorf("last log line %q, want code=%d and %q", last, code, reason)
	}
}

func redisEnv(k string) []string {
	return []string{
		queue.EnvBackend + "=redis",
		redis.EnvAddress + "=" + redisServer.Addr(),
		redis.EnvKey + "=" + k,
	}
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return c
}

func rdb(t testing.TB) *goredis.Client {
	t.Helper()
	return redisServer.RedisClient(t)
}

// key is a fresh list per test.
func key(t testing.TB) string {
	k := "qjw-" + strings.ReplaceAll(t.Name(), "/", "-")
	c := rdb(t)
	c.Del(testCtx(t), k, redis.ProcessingKey(k), redis.FailedKey(k), redis.AttemptsKey(k))
	return k
}

// push adds items as a producer does (rpush job2 "apple" in the article): the first
// pushed is taken first.
func push(t testing.TB, k string, items ...string) {
	t.Helper()
	redisServer.RedisPush(t, k, items...)
}

func listOf(t testing.TB, k string) []string {
	t.Helper()
	return redisServer.RedisList(t, k)
}

func attemptsOf(t testing.TB, k, item string) int {
	t.Helper()
	n, err := redis.WQ{Client: rdb(t), Key: k}.Attempts(testCtx(t), item)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkLists compares the queue, processing and dead-letter lists with want.
func checkLists(t *testing.T, k string, ready, processing, failed []string) {
	t.Helper()
	for _, l := range []struct {
		name string
		key  string
		want []string
	}{{"queue", k, ready}, {"processing", redis.ProcessingKey(k), processing}, {"dead-letter list", redis.FailedKey(k), failed}} {
		got := listOf(t, l.key)
		if strings.Join(got, "|") != strings.Join(l.want, "|") {
			t.Errorf("%s %s = %q, want %q", l.name, l.key, got, l.want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out, errOut strings.Builder
	if code := run([]string{"--version"}, &out, &errOut); code != 0 {
		t.Fatalf("--version exited %d; stderr: %s", code, errOut.String())
	}
	// go test sets no -ldflags: the defaults of pkg/version.
	if got := out.String(); !strings.HasPrefix(got, "queuejob-worker dev (revision ") || !strings.HasSuffix(got, ")\n") {
		t.Errorf("--version printed %q, want \"queuejob-worker dev (revision ...)\"", got)
	}
}
