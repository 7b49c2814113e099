package protocol

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The backend tests run against real servers that TestMain starts on free ports.
var (
	redisServer  *servers.Server
	authRedis    *servers.Server
	rabbitServer *servers.RabbitMQ
)

const redisPassword = "s3cret-redis-pass"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if redisServer, err = servers.StartRedis(""); err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server:", err)
		return 1
	}
	defer redisServer.Close()
	if authRedis, err = servers.StartRedis(redisPassword); err != nil {
		fmt.Fprintln(os.Stderr, "starting redis-server with a password:", err)
		return 1
	}
	defer authRedis.Close()
	// One broker for all tests.
	if rabbitServer, err = servers.StartRabbitMQ(amqpReady); err != nil {
		fmt.Fprintln(os.Stderr, "starting rabbitmq-server:", err)
		return 1
	}
	defer rabbitServer.Close()
	return m.Run()
}

func amqpReady(url string) error {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
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
