package servers

import (
	"net/http"
	"os/exec"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func amqpReady(url string) error {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return c.Close()
}

// The broker starts with its management API, which answers the guest user, and Close
// leaves no process of it behind.
func TestStartRabbitMQ(t *testing.T) {
	start := time.Now()
	r, err := StartRabbitMQ(amqpReady)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rabbitmq-server with its management plugin started in %s", time.Since(start))
	defer r.Close()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(r.mgmtPort)+"/api/overview", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("management API: GET /api/overview = %s", resp.Status)
	}

	node := "rabbit-" + strconv.Itoa(r.Port()) + "@localhost"
	r.Close()
	// pgrep exits 1 when no process matches.
	for _, pattern := range []string{node, "epmd -port " + strconv.Itoa(r.epmd.Port())} {
		if out, err := exec.Command("pgrep", "-af", pattern).Output(); err == nil {
			t.Errorf("processes left after Close:\n%s", out)
		}
	}
}
