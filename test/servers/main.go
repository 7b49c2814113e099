package servers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main is the body of a test package's TestMain: start asks the Group for the servers
// (and binaries) the package needs, then the tests run, then everything is stopped and
// removed, the last started first. If anything fails to start, Main prints why, runs no
// test and returns 1:
//
//	func TestMain(m *testing.M) {
//		os.Exit(servers.Main(m, func(g *servers.Group) {
//			redisServer = g.Redis(servers.RedisOptions{})
//			rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{})
//		}))
//	}
func Main(m *testing.M, start func(g *Group)) int {
	g := &Group{}
	defer g.stop()
	start(g)
	if g.err != nil {
		fmt.Fprintln(os.Stderr, g.err)
		return 1
	}
	return m.Run()
}

// Group starts what a TestMain needs and remembers how to stop it. After the first
// failure it starts nothing more and its methods return nil; Main reports the failure.
type Group struct {
	err   error
	stops []func()
}

func (g *Group) stop() {
	for i := len(g.stops) - 1; i >= 0; i-- {
		g.stops[i]()
	}
}

// Redis starts a redis-server (StartRedisWith).
func (g *Group) Redis(o RedisOptions) *Server {
	if g.err != nil {
		return nil
	}
	s, err := StartRedisWith(o)
	if err != nil {
		g.err = fmt.Errorf("starting redis-server: %w", err)
		return nil
	}
	g.stops = append(g.stops, s.Close)
	return s
}

// RabbitMQ starts a rabbitmq-server (StartRabbitMQWith), ready once it accepts an AMQP
// connection.
func (g *Group) RabbitMQ(o RabbitMQOptions) *RabbitMQ {
	if g.err != nil {
		return nil
	}
	r, err := StartRabbitMQWith(AMQPReady, o)
	if err != nil {
		g.err = fmt.Errorf("starting rabbitmq-server: %w", err)
		return nil
	}
	g.stops = append(g.stops, r.Close)
	return r
}

// CA makes a test CA (NewCA).
func (g *Group) CA(name string) *CA {
	if g.err != nil {
		return nil
	}
	ca, err := NewCA(name)
	if err != nil {
		g.err = fmt.Errorf("making a CA: %w", err)
	}
	return ca
}

// GoBuild builds the Go package pkg (an import path, or "." for the package under test)
// static, as in an image, into a temporary directory, and returns the binary's path,
// named name. The directory is removed after the tests.
func (g *Group) GoBuild(name, pkg string) string {
	if g.err != nil {
		return ""
	}
	dir, err := os.MkdirTemp("", name+"-test-")
	if err != nil {
		g.err = err
		return ""
	}
	g.stops = append(g.stops, func() { _ = os.RemoveAll(dir) })
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		g.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		return ""
	}
	return out
}
