package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// ManagementLag is how old the management API's counts may be: twice the plugin's default
// collect_statistics_interval of 5 s. A RabbitMQ queue must look drained this long
// before a wave ends, whatever drainGracePeriodSeconds says.
const ManagementLag = 10 * time.Second

// managementCounts is what the management API counted, as of its last statistics.
type managementCounts struct {
	unacked  int64 // messages_unacknowledged
	messages int64 // messages: ready and unacknowledged
}

// rabbitManagement is the broker's management API, through rabbit-hole.
type rabbitManagement struct {
	endpoint           string // scheme://host[:port][/prefix], without credentials
	addr               string // host[:port], the only part of the URL a message may name
	username, password string
	timeout            time.Duration
	transport          *http.Transport
}

func newRabbitManagement(raw string, amqpURI amqp.URI, timeout time.Duration, tlsConfig *tls.Config) (*rabbitManagement, error) {
	u, err := parseManagementURL(raw)
	if err != nil {
		return nil, err
	}
	m := &rabbitManagement{addr: u.Host, username: amqpURI.Username, password: amqpURI.Password, timeout: timeout}
	if u.User != nil {
		m.username = u.User.Username()
		m.password, _ = u.User.Password()
	} else if u.Hostname() != amqpURI.Host || (amqpURI.Scheme == "amqps" && u.Scheme != "https") {
		// The AMQP URL's credentials go only to the broker's own host, and never over
		// plain HTTP when the AMQP URL asked for TLS.
		return nil, errManagementCredentials
	}
	u.User = nil
	m.endpoint = strings.TrimSuffix(u.String(), "/")
	dialer := &net.Dialer{Timeout: timeout}
	if tlsConfig != nil {
		// The CA of the TLS settings; their server name only towards the AMQP URL's host.
		tlsConfig = tlsConfig.Clone()
		if u.Hostname() != amqpURI.Host {
			tlsConfig.ServerName = ""
		}
	}
	m.transport = &http.Transport{
		TLSClientConfig:       tlsConfig,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          1,
		IdleConnTimeout:       time.Minute,
	}
	return m, nil
}

// statusTransport makes every request of rabbit-hole (which takes no context) obey the
// probe's context, and keeps the status code of the response: rabbit-hole reports a 401
// as an error with no code.
type statusTransport struct {
	ctx    context.Context
	base   http.RoundTripper
	status int
}

func (t *statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req.WithContext(t.ctx))
	if resp != nil {
		t.status = resp.StatusCode
		// No redirect is followed (Go's client stops at a 3xx without a Location): the
		// management URL is where the probe goes, and the only place
		// --allowed-queue-addresses has checked.
		resp.Header.Del("Location")
	}
	return resp, err
}

// counts returns the queue's messages_unacknowledged and messages (GET
// /api/queues/{vhost}/{queue}). known is false while the plugin has no statistics of the
// queue yet (a queue declared less than collect_statistics_interval ago), whose counts
// are then absent.
func (m *rabbitManagement) counts(ctx context.Context, vhost, name string) (mc managementCounts, known bool, err error) {
	c, err := rabbithole.NewClient(m.endpoint, m.username, m.password)
	if err != nil {
		return mc, false, errManagementURL
	}
	t := &statusTransport{ctx: ctx, base: m.transport}
	c.SetTransport(t)
	c.SetTimeout(m.timeout)
	q, err := c.GetQueue(vhost, name)
	if err != nil {
		return mc, false, m.failure(ctx, t.status, err, vhost, name)
	}
	known = q.MessagesUnacknowledgedDetails != nil || q.MessagesUnacknowledged != 0 || q.Messages != 0
	return managementCounts{unacked: int64(q.MessagesUnacknowledged), messages: int64(q.Messages)}, known, nil
}

// failure classifies a failed GET of the queue's statistics: by the HTTP status of the
// answer if it had one, then by the error (status 0: no answer).
func (m *rabbitManagement) failure(ctx context.Context, status int, err error, vhost, name string) error {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return queue.Errorf(queue.ReasonAuthFailed, "the RabbitMQ management API at %s answered with an HTTP error: "+
			"the credentials were refused: check the user and password in the Secret of "+
			"spec.queue.rabbitmq.managementURLSecretRef, or with spec.queue.rabbitmq.managementURL those of the AMQP URL; "+
			"the user needs the monitoring (or management) tag and access to the virtual host", m.addr)
	case status == http.StatusNotFound:
		return queue.Errorf(queue.ReasonQueueNotFound, "the RabbitMQ management API at %s answered with an HTTP error: "+
			"not found: there is no queue %q in virtual host %q: declare it, or check spec.queue.rabbitmq.queue and "+
			"that managementURL is the management API of the same broker", m.addr, name, vhost)
	case status >= 300 || (status != 0 && status < 200):
		// A peer chose the status and its text: neither is repeated.
		return queue.Errorf(queue.ReasonConnectionFailed, "the RabbitMQ management API at %s answered with an "+
			"unexpected HTTP status: check spec.queue.rabbitmq.managementURL and the broker's health", m.addr)
	case timedOut(ctx, err):
		// Before the 2xx case: http.Client.Timeout also covers reading the body, so a 2xx
		// whose body stalls is no answer too. By the error, not only ctx.Err(): the
		// client's own timeout of the same length may fire first.
		e := queue.Errorf(queue.ReasonConnectionFailed, "the RabbitMQ management API at %s did not answer within %s", m.addr, m.timeout)
		e.NoAnswer = true
		return e
	case status != 0:
		return queue.Errorf(queue.ReasonConnectionFailed, "the server at %s is not the management API (it sent no "+
			"queue statistics): check that managementURL is the base URL of the management API", m.addr)
	}
	if cause, ok := queue.TLSCause(err); ok {
		return queue.Unanswered(queue.Errorf(queue.ReasonTLSFailed, "cannot reach the RabbitMQ management API at %s over TLS: %s: "+
			"check spec.queue.rabbitmq.tls.caSecretRef (the CA that signed its certificate) and that the "+
			"management URL is https:// on the management plugin's TLS port", m.addr, cause), err)
	}
	return queue.Unanswered(queue.Errorf(queue.ReasonConnectionFailed, "cannot reach the RabbitMQ management API at %s: %s",
		m.addr, queue.NetCause(err)), err)
}

// timedOut reports whether a request ran out of time: the probe's context, a deadline,
// or http.Client.Timeout (a net.Error whose Timeout is true, also while reading the body).
// A resolver that timed out is not the management API not answering: NetCause names it.
func timedOut(ctx context.Context, err error) bool {
	var netErr net.Error
	var dnsErr *net.DNSError
	if ctx.Err() == nil && errors.As(err, &dnsErr) {
		return false
	}
	return ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout())
}
