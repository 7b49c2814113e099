package rabbitmq

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The backend tests run against real servers that TestMain starts on free ports.
var (
	rabbitServer *servers.RabbitMQ
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		// One broker for all tests.
		rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{})
	}))
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// silentServer accepts TCP connections and never answers: a hung broker.
func silentServer(t *testing.T) string {
	t.Helper()
	addr, stop, err := servers.Silent()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return addr
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ps, err := servers.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ps[0])
}
