package kube

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/queuejob/queuejob-operator/test/servers"
)

// The tests of the backend open connections against real servers that TestMain starts on free
// ports.
var (
	rabbitServer *servers.RabbitMQ
	testCA       *servers.CA
	// otherCA signed no server's certificate.
	otherCA *servers.CA
)

// Secrets of the Redis tests, which secretsIn looks for too.
const (
	redisPassword = "s3cret-redis-pass"
	aclPassword   = "Al1ce-acl-pass"
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		testCA = g.CA("queuejob test CA")
		otherCA = g.CA("another CA")
		// One broker for all tests, with amqps and https listeners besides the plain ones.
		rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{TLS: testCA})
	}))
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
