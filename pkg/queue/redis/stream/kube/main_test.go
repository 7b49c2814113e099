package kube

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The tests of the backend open connections against a real server that TestMain starts on
// a free port.
var authRedis *servers.Server

const redisPassword = "s3cret-redis-pass"

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		authRedis = g.Redis(servers.RedisOptions{Password: redisPassword})
	}))
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
