package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/test/servers"
)

var (
	redisServer *servers.Server
	binary      string
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		binary = g.GoBuild("job-wq-2", ".")
		redisServer = g.Redis(servers.RedisOptions{})
	}))
}

// The article's example 3: the list job2 holds 9 items and two workers drain it. Each
// item is worked on once, each worker prints worker.py's lines and exits 0, and the list
// is empty, nothing in flight.
func TestTwoWorkersDrainJob2(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := goredis.NewClient(&goredis.Options{Addr: redisServer.Addr(), DisableIdentity: true})
	defer c.Close()
	const k = "job2"
	items := []string{"apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon", "orange"}
	c.Del(ctx, k, redis.ProcessingKey(k), redis.FailedKey(k), redis.AttemptsKey(k))
	// As the article's redis-cli session: rpush job2 "apple" ...
	if err := c.RPush(ctx, k, toAny(items)...).Err(); err != nil {
		t.Fatal(err)
	}

	// A little work per item, so that both workers get some and the one that finds the
	// list empty first waits for the other's item in flight.
	outs := make([]bytes.Buffer, 2)
	var wg sync.WaitGroup
	for i := range outs {
		cmd := exec.CommandContext(ctx, binary, "--sleep=100ms")
		cmd.Env = append(os.Environ(), queue.EnvBackend+"=redis", redis.EnvAddress+"="+redisServer.Addr(), redis.EnvKey+"="+k)
		cmd.Stdout = &outs[i]
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Run()
			t.Logf("worker %d: %v\nstdout:\n%s\nstderr:\n%s", i, err, outs[i].String(), errOut.String())
			if err != nil {
				t.Errorf("worker %d exited with %v, want 0", i, err)
			}
		}()
	}
	wg.Wait()

	var worked []string
	session := regexp.MustCompile(`^Worker with sessionID: \S+$`)
	state := regexp.MustCompile(`^Initial queue state: empty=(True|False)$`)
	for i := range outs {
		lines := strings.Split(strings.TrimSuffix(outs[i].String(), "\n"), "\n")
		if len(lines) < 3 || !session.MatchString(lines[0]) || !state.MatchString(lines[1]) || lines[len(lines)-1] != "Queue empty, exiting" {
			t.Errorf("worker %d printed %q, want worker.py's sessionID and initial state lines first, and \"Queue empty, exiting\" last", i, lines)
			continue
		}
		for _, l := range lines[2 : len(lines)-1] {
			item, ok := strings.CutPrefix(l, "Working on ")
			if !ok {
				t.Errorf("worker %d printed %q, want \"Working on <item>\"", i, l)
			}
			worked = append(worked, item)
		}
	}
	slices.Sort(worked)
	if want := slices.Sorted(slices.Values(items)); !slices.Equal(worked, want) {
		t.Errorf("items worked on %q, want each of %q once", worked, want)
	}
	for _, l := range []string{k, redis.ProcessingKey(k), redis.FailedKey(k)} {
		if n := c.LLen(ctx, l).Val(); n != 0 {
			t.Errorf("%s has %d items, want 0", l, n)
		}
	}
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
