package kube

import (
	"os"
	"testing"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The watcher's tests run against a real nats-server that TestMain starts on a free port.
var natsServer *servers.NATS

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		natsServer = g.NATS(servers.NATSOptions{User: "queuejob", Password: servers.RandomString(16)})
	}))
}
