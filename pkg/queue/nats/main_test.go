package nats_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The backend's tests run against a real nats-server that TestMain starts on a free port
// (TestConformance starts one of its own: the suite kills and freezes it).
var natsServer *servers.NATS

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		natsServer = g.NATS(servers.NATSOptions{User: "queuejob", Password: servers.RandomString(16)})
	}))
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
