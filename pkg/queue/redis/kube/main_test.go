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
	authRedis *servers.Server
	// tlsRedis accepts only TLS, with a certificate of testCA, the default user's
	// redisPassword and the ACL user aclUser.
	tlsRedis *servers.Server
	testCA   *servers.CA
	// otherCA signed no server's certificate.
	otherCA *servers.CA
)

const (
	redisPassword = "s3cret-redis-pass"
	aclUser       = "alice"
	aclPassword   = "Al1ce-acl-pass"
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		authRedis = g.Redis(servers.RedisOptions{Password: redisPassword})
		testCA = g.CA("queuejob test CA")
		otherCA = g.CA("another CA")
		tlsRedis = g.Redis(servers.RedisOptions{TLS: testCA, Password: redisPassword,
			Users: []string{aclUser + " on >" + aclPassword + " ~* +@all"}})
	}))
}

func ctx(t testing.TB) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
