package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// RabbitMQ queues are counted with a passive queue declare, which gives the number of
// ready messages. AMQP does not tell how many messages are delivered and unacknowledged,
// so InFlight is always zero: a message a crashed worker never acknowledged goes back to
// ready by the broker's own rules, and the next wave takes it.

// Environment variables of RabbitMQ workers.
const (
	EnvRabbitMQURL   = "QUEUEJOB_RABBITMQ_URL"
	EnvRabbitMQQueue = "QUEUEJOB_RABBITMQ_QUEUE"
	// EnvBrokerURL and EnvQueue are the names the Kubernetes docs' job-wq-1 worker reads.
	EnvBrokerURL = "BROKER_URL"
	EnvQueue     = "QUEUE"
)

// RabbitMQKind is the RabbitMQ queue backend.
var RabbitMQKind = Kind{
	Name:     "rabbitmq",
	Selected: func(s *qjv1.QueueSource) bool { return s.RabbitMQ != nil },
	SecretRefs: func(s *qjv1.QueueSource) []*corev1.SecretKeySelector {
		if s.RabbitMQ.URLSecretRef == nil {
			return nil
		}
		return []*corev1.SecretKeySelector{s.RabbitMQ.URLSecretRef}
	},
	Open: func(src Source) (Backend, error) {
		r := src.Spec.RabbitMQ
		url := r.URL
		if r.URLSecretRef != nil {
			url = src.Secret(r.URLSecretRef)
		}
		return NewRabbitMQ(RabbitMQOptions{URL: url, Queue: r.Queue}), nil
	},
	WorkerEnv: func(s *qjv1.QueueSource) []corev1.EnvVar {
		r := s.RabbitMQ
		url := corev1.EnvVar{Name: EnvRabbitMQURL, Value: r.URL}
		if r.URLSecretRef != nil {
			url = corev1.EnvVar{Name: EnvRabbitMQURL, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: r.URLSecretRef.DeepCopy()}}
		}
		broker := *url.DeepCopy()
		broker.Name = EnvBrokerURL
		return []corev1.EnvVar{
			url,
			{Name: EnvRabbitMQQueue, Value: r.Queue},
			broker,
			{Name: EnvQueue, Value: r.Queue},
		}
	},
}

// RabbitMQOptions locate a RabbitMQ queue.
type RabbitMQOptions struct {
	URL, Queue string
	// Timeout bounds dialing and each probe; 5s if zero.
	Timeout time.Duration
}

// RabbitMQ is a RabbitMQ queue. It keeps one connection and opens a channel per probe
// (a passive declare of a missing queue closes its channel).
//
// Each probe's AMQP work runs in a worker goroutine on a socket the backend dialed itself;
// when the probe's time is up, the probe closes that socket, which fails every pending
// amqp091 call at once, and returns without waiting for the broker (a graceful AMQP close
// waits for the broker's close-ok, which a hung broker never sends). At most one worker
// runs at a time: a probe waits, within its own bound, for the worker of a timed-out one.
type RabbitMQ struct {
	opts RabbitMQOptions
	// uri is opts.URL parsed, or uriErr says why it cannot be used.
	uri    amqp.URI
	uriErr error

	mu sync.Mutex
	// conn is the open connection, nil while there is none; raw is the socket of conn,
	// or of the connection a worker is opening.
	conn *amqp.Connection
	raw  net.Conn
	// gen changes whenever conn and raw are dropped: a worker that started before keeps
	// nothing it opens.
	gen uint64
	// worker is closed when the last probe's worker has returned; nil before the first.
	worker chan struct{}
}

// NewRabbitMQ returns a RabbitMQ backend; it connects on first use.
func NewRabbitMQ(o RabbitMQOptions) *RabbitMQ {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	uri, err := parseRabbitURL(o.URL)
	return &RabbitMQ{opts: o, uri: uri, uriErr: err}
}

// Probe counts the queue's ready messages. It returns within opts.Timeout whatever the
// broker does.
func (r *RabbitMQ) Probe(ctx context.Context) (Counts, error) {
	if r.uriErr != nil {
		return Counts{}, r.uriErr
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	r.mu.Lock()
	prev := r.worker
	r.mu.Unlock()
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			return Counts{}, r.timeoutError()
		}
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.worker = done
	r.mu.Unlock()
	var n int
	var err error
	go func() {
		defer close(done)
		n, err = r.declarePassive(ctx)
	}()
	select {
	case <-done:
		if err != nil {
			return Counts{}, err
		}
		return Counts{Ready: int64(n), InFlightUnknown: true}, nil
	case <-ctx.Done():
		// A broker that accepts TCP and never answers, or answers too slowly: close the
		// socket, which ends the worker at once, and do not wait for it.
		r.drop(nil)
		return Counts{}, r.timeoutError()
	}
}

func (r *RabbitMQ) timeoutError() error {
	return Errorf(ReasonConnectionFailed, "RabbitMQ at %s did not answer within %s", rabbitAddr(r.uri), r.opts.Timeout)
}

// declarePassive is a probe's worker: it counts the queue's ready messages over the open
// connection, opening one first if there is none.
func (r *RabbitMQ) declarePassive(ctx context.Context) (int, error) {
	conn, err := r.connection(ctx)
	if err != nil {
		return 0, err
	}
	ch, err := conn.Channel()
	if err != nil {
		r.drop(conn)
		return 0, rabbitError(err, rabbitAddr(r.uri))
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(r.opts.Queue, false, false, false, false, nil)
	if err != nil {
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.NotFound {
			// Not a missing queue, which closes only the channel: the connection may be
			// broken, and the next probe opens a new one.
			r.drop(conn)
		}
		return 0, rabbitError(err, rabbitAddr(r.uri))
	}
	return q.Messages, nil
}

// connection returns the open connection, or opens one whose socket drop can close at
// any moment, the AMQP handshake included.
func (r *RabbitMQ) connection(ctx context.Context) (*amqp.Connection, error) {
	r.mu.Lock()
	if r.conn != nil && !r.conn.IsClosed() {
		conn := r.conn
		r.mu.Unlock()
		return conn, nil
	}
	gen := r.gen
	r.mu.Unlock()
	var raw net.Conn
	conn, err := amqp.DialConfig(r.opts.URL, amqp.Config{
		Dial: func(network, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Bounds the handshake too; amqp091 clears the deadline once it is done.
			if deadline, ok := ctx.Deadline(); ok {
				_ = c.SetDeadline(deadline)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.gen != gen {
				_ = c.Close()
				return nil, context.DeadlineExceeded
			}
			if r.raw != nil {
				_ = r.raw.Close() // the socket of a connection that broke
			}
			raw, r.raw = c, c
			return c, nil
		},
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "queuejob-operator probe"},
	})
	if err != nil {
		return nil, rabbitError(err, rabbitAddr(r.uri))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen || r.raw != raw {
		// Dropped while opening: its socket is closed already.
		_ = raw.Close()
		return nil, Errorf(ReasonConnectionFailed, "the connection to RabbitMQ at %s was closed", rabbitAddr(r.uri))
	}
	r.conn = conn
	return conn, nil
}

// drop closes the socket of the connection, or of the one being opened, without a word to
// the broker. With a non-nil conn, it only drops that connection if it is still the
// current one.
func (r *RabbitMQ) drop(conn *amqp.Connection) {
	r.mu.Lock()
	if conn != nil && conn != r.conn {
		r.mu.Unlock()
		return
	}
	raw := r.raw
	r.conn, r.raw = nil, nil
	r.gen++
	r.mu.Unlock()
	if raw != nil {
		_ = raw.Close()
	}
}

// Close closes the connection: gracefully if the broker answers within the probe timeout
// (at most 2s), otherwise by closing its socket. It never waits longer than that.
func (r *RabbitMQ) Close() error {
	r.mu.Lock()
	conn, raw := r.conn, r.raw
	r.conn, r.raw = nil, nil
	r.gen++
	r.mu.Unlock()
	if raw == nil {
		return nil
	}
	if conn == nil || conn.IsClosed() {
		return raw.Close()
	}
	wait := min(r.opts.Timeout, 2*time.Second)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = conn.CloseDeadline(time.Now().Add(wait))
	}()
	select {
	case <-closed:
	case <-time.After(wait):
	}
	// Closing a closed socket does no harm; an unclosed one would leak.
	_ = raw.Close()
	return nil
}

// errRabbitURL is returned for a RabbitMQ URL that cannot be used. It quotes no part of the
// URL: a URL with an unescaped reserved character in its password is split in the wrong
// place, and then any part of it (a "host", a "port", a "vhost") may be the password.
var errRabbitURL = &Error{Reason: ReasonConnectionFailed, Message: "the RabbitMQ URL is not a valid AMQP URL: " +
	"check spec.queue.rabbitmq.url or the Secret of urlSecretRef; special characters in the user " +
	"and the password (such as / ? # @ : %) must be percent-encoded"}

// parseRabbitURL parses and checks an AMQP URL before any library sees it, so that no
// library error that quotes the URL ever becomes a message. Besides what amqp091 rejects,
// it rejects what amqp091 accepts although the URL was split at an unescaped character of
// the password: an '@' after the host (amqp://u:12/ab@host/ parses as host u, port 12),
// a port out of range, and anything but amqp:// or amqps:// followed by an authority.
func parseRabbitURL(raw string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(raw)
	if err != nil {
		return amqp.URI{}, errRabbitURL
	}
	rest, ok := strings.CutPrefix(raw, uri.Scheme+"://")
	if !ok {
		return amqp.URI{}, errRabbitURL
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	if strings.Contains(rest[end:], "@") || uri.Port < 1 || uri.Port > 65535 {
		return amqp.URI{}, errRabbitURL
	}
	return uri, nil
}

// rabbitAddr is the host:port of a parsed URL, the only part of it a message may name.
func rabbitAddr(uri amqp.URI) string {
	return net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port))
}

// rabbitError classifies an error of amqp091. Its message is built from the broker's reply
// text, amqp091's own fixed errors and the host:port of the URL, never from the text of an
// error that may quote the URL.
func rabbitError(err error, addr string) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused:
			return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials (%s): check the URL's user and password", ae.Reason)
		case amqp.NotFound:
			return Errorf(ReasonQueueNotFound, "RabbitMQ has no such queue (%s): declare it, or fix spec.queue.rabbitmq.queue", ae.Reason)
		}
		if !ae.Server {
			// amqp091's own error of a failed read or write, which names addresses only.
			return Errorf(ReasonConnectionFailed, "cannot reach RabbitMQ at %s: %s", addr, ae.Reason)
		}
		return Errorf(ReasonConnectionFailed, "RabbitMQ at %s: %s", addr, ae.Reason)
	}
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials: check the URL's user and password")
	case errors.Is(err, amqp.ErrSASL):
		return Errorf(ReasonAuthFailed, "RabbitMQ offers no SASL mechanism the probe can use")
	case errors.Is(err, amqp.ErrVhost):
		return Errorf(ReasonAuthFailed, "RabbitMQ denied access to the URL's virtual host: check that it exists and that the user may use it")
	}
	return Errorf(ReasonConnectionFailed, "cannot reach RabbitMQ at %s: %s", addr, netCause(err))
}

// netCause says in a few fixed words why a connection failed.
func netCause(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	var errno syscall.Errno
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &dnsErr):
		return "cannot resolve the host name"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time"
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &certErr):
		return "its TLS certificate was not accepted"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, amqp.ErrClosed):
		return "the connection was closed"
	default:
		return "the connection failed"
	}
}
