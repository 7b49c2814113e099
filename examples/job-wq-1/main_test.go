// Package jobwq1 tests the article's example 2 (coarse parallel processing, job-wq-1):
// one message per pod, printed and acked, which is queuejob-worker running cat (see
// README.md). It has no code of its own.
package jobwq1

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/test/servers"
)

var (
	rabbitServer *servers.RabbitMQ
	// binary is queuejob-worker, built by TestMain.
	binary string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "job-wq-1-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "queuejob-worker")
	build := exec.Command("go", "build", "-o", binary, "github.com/queuejob/queuejob-operator/cmd/queuejob-worker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build queuejob-worker: %v\n%s", err, b)
		return 1
	}
	if rabbitServer, err = servers.StartRabbitMQ(func(url string) error {
		c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		fmt.Fprintln(os.Stderr, "starting rabbitmq-server:", err)
		return 1
	}
	defer rabbitServer.Close()
	return m.Run()
}
