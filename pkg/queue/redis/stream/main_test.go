package stream

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The backend's tests run against a real redis-server that TestMain starts on a free port
// (TestConformance starts one of its own, which it kills and freezes).
var redisServer *servers.Server

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		redisServer = g.Redis(servers.RedisOptions{})
	}))
}

func testCtx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// eventually polls cond for up to a minute.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within a minute: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
