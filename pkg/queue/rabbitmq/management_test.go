package rabbitmq

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// stallingManagement is a fake management API that sends a 200 and its headers if
// sendHeaders, and then nothing more until the test ends.
func stallingManagement(t *testing.T, sendHeaders bool) string {
	t.Helper()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sendHeaders {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for the handlers
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestRabbitMQManagementNoAnswer: a management API that does not answer in time says so
// with its timeout and NoAnswer, whether its headers never come or its body stalls after a
// 200 (http.Client.Timeout covers the body), and whichever of the probe's context and the
// client's own timeout fires first.
func TestRabbitMQManagementNoAnswer(t *testing.T) {
	cases := []struct {
		name        string
		sendHeaders bool
		probeCtx    func(t testing.TB) context.Context
	}{
		{name: "body stalled after 200", sendHeaders: true, probeCtx: ctx},
		{name: "headers never sent, the client's timeout first", probeCtx: ctx},
		{name: "headers never sent, the probe's context first", probeCtx: func(t testing.TB) context.Context {
			c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			t.Cleanup(cancel)
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := stallingManagement(t, tc.sendHeaders)
			m, err := newRabbitManagement("http://guest:St4llPw@"+addr, amqp.URI{Host: "127.0.0.1", Scheme: "amqp"}, time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = m.counts(tc.probeCtx(t), "/", "stalled")
			var qe *queue.Error
			if !errors.As(err, &qe) {
				t.Fatalf("counts = %v, want a *queue.Error", err)
			}
			if !strings.Contains(qe.Message, "did not answer within") || !qe.NoAnswer || qe.Reason != queue.ReasonConnectionFailed {
				t.Errorf("counts = %q (reason %s, NoAnswer %t), want %s, NoAnswer and \"did not answer within\"",
					qe.Message, qe.Reason, qe.NoAnswer, queue.ReasonConnectionFailed)
			}
		})
	}
}

// TestRabbitMQManagementDNSTimeout: a resolver that does not answer is not the management
// API not answering: the message says the host name could not be resolved, as the AMQP
// side's does.
func TestRabbitMQManagementDNSTimeout(t *testing.T) {
	m := &rabbitManagement{addr: "rabbitmq.example:15672", timeout: 5 * time.Second}
	dns := &url.Error{Op: "Get", URL: "http://rabbitmq.example:15672/api/queues/%2F/q",
		Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "i/o timeout", Name: "rabbitmq.example", IsTimeout: true}}}
	err := m.failure(context.Background(), 0, dns, "/", "q")
	if msg := err.Error(); strings.Contains(msg, "did not answer") || !strings.Contains(msg, "resolve") {
		t.Errorf("failure = %q; want it to say the host name could not be resolved", msg)
	}
	if !queue.NoAnswer(err) {
		t.Errorf("failure = %v: want NoAnswer (nothing answered)", err)
	}
}
