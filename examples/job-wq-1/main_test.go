// Package jobwq1 tests the article's example 2 (coarse parallel processing, job-wq-1):
// one message per pod, printed and acked, which is queuejob-worker running cat (see
// README.md). It has no code of its own.
package jobwq1

import (
	"os"
	"testing"

	"github.com/queuejob/queuejob-operator/test/servers"
)

var (
	rabbitServer *servers.RabbitMQ
	// binary is queuejob-worker, built by TestMain.
	binary string
)

func TestMain(m *testing.M) {
	os.Exit(servers.Main(m, func(g *servers.Group) {
		binary = g.GoBuild("queuejob-worker", "github.com/queuejob/queuejob-operator/cmd/queuejob-worker")
		rabbitServer = g.RabbitMQ(servers.RabbitMQOptions{})
	}))
}
