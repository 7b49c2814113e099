// Package rabbitmq is everything on RabbitMQ's wire, without Kubernetes: the operator's
// probe (conn.go, management.go), the checks of AMQP and management URLs (url.go), the
// mandatory publisher with confirms (publish.go), the worker's read-back of its
// QUEUEJOB_RABBITMQ_* variables (env.go), a dial for workers and tools (client.go) and
// the fixed words its errors are classified in (errors.go). The Kubernetes side
// (spec.queue.rabbitmq -> Options) is pkg/queue/rabbitmq/kube.
package rabbitmq

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// RabbitMQ queues are counted with a passive queue declare, which gives the number of
// ready messages, live. AMQP does not tell how many messages are delivered and
// unacknowledged: with a management URL, the management API (the rabbitmq_management
// plugin, through rabbit-hole) counts them, as of its last statistics collection;
// without one, InFlightUnknown is set.

// FailedQueue is the queue RabbitMQ workers dead-letter a queue's messages to.
func FailedQueue(queue string) string { return queue + ".failed" }

// Options locate a RabbitMQ queue.
type Options struct {
	URL, Queue string
	// ManagementURL is the base URL of the broker's management API, with or without a
	// user and password (without, those of URL are used); empty if there is none.
	ManagementURL string
	// TLS is the TLS configuration of an amqps URL (its ServerName defaults to the URL's
	// host); nil for the defaults: the system's roots and the URL's host. Its RootCAs also
	// verify an https management URL, and its ServerName too when the management URL
	// names the AMQP URL's host. A non-nil TLS with an amqp:// URL is an error: TLS
	// settings that would silently not apply.
	TLS *tls.Config
	// Timeout bounds dialing and each probe; 5s if zero.
	Timeout time.Duration
}

// Conn is a connection to a RabbitMQ queue, for the operator's probe. It keeps one connection and one channel, opening another
// channel when the broker closed it (as a passive declare of a missing queue does). Its
// probes may be called concurrently: they run one at a time.
//
// Each probe's AMQP work runs in a worker goroutine on a socket the connection dialed itself;
// when the probe's time is up, the probe closes that socket, which fails every pending
// amqp091 call at once, and returns without waiting for the broker (a graceful AMQP close
// waits for the broker's close-ok, which a hung broker never sends). At most one worker
// runs at a time: a probe waits, within its own bound, for the worker of a timed-out one.
type Conn struct {
	opts Options
	// uri is opts.URL parsed, or uriErr says why it cannot be used.
	uri    amqp.URI
	uriErr error
	// tls is the TLS configuration of an amqps URL, nil for amqp.
	tls *tls.Config

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
	// ch is the channel the probes declare on, kept open between them (one round trip
	// a probe instead of three); chConn is its connection. Only a probe's worker uses
	// it, and the workers run one at a time.
	ch     *amqp.Channel
	chConn *amqp.Connection
	// dlCh and dlChConn are the same for the dead-letter queue, which has its own
	// channel: the broker closes a channel over a missing queue, and a missing
	// dead-letter queue is no error.
	dlCh     *amqp.Channel
	dlChConn *amqp.Connection
	// failedMissingAt is when the dead-letter queue was last found missing (zero if it
	// was not): while the queue has ready messages, it is not looked for again for
	// deadLetterRecheck (see declarePassive).
	failedMissingAt time.Time

	// mgmt is the management API, nil without a management URL.
	mgmt *rabbitManagement
}

// New returns a connection to the queue of o; it connects on first use.
func New(o Options) *Conn {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	r := &Conn{opts: o}
	r.uri, r.uriErr = parseRabbitURL(o.URL)
	switch {
	case r.uriErr != nil:
		return r
	case r.uri.Scheme == "amqps":
		r.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLS != nil {
			r.tls = o.TLS.Clone()
		}
		if r.tls.ServerName == "" {
			r.tls.ServerName = r.uri.Host
		}
	case o.TLS != nil:
		r.uriErr = errTLSWithoutAMQPS
		return r
	}
	if o.ManagementURL != "" {
		var err error
		if r.mgmt, err = newRabbitManagement(o.ManagementURL, r.uri, o.Timeout, o.TLS); err != nil {
			r.uriErr = err
		}
	}
	return r
}

// Probe counts the queue's ready messages, the messages of its dead-letter queue
// (<queue>.failed, 0 while there is none) and, with a management URL, its in-flight ones;
// if a count fails, the probe fails. The dead-letter queue is counted with a passive
// declare beside the queue's, live: the management API's statistics lag behind, and a
// message dead-lettered just before the last wave ended must be seen. It returns within
// opts.Timeout whatever the broker does.
func (r *Conn) Probe(ctx context.Context) (queue.Counts, error) {
	if r.uriErr != nil {
		return queue.Counts{}, r.uriErr
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	ready, deadLettered, err := r.countReady(ctx)
	if err != nil {
		return queue.Counts{}, err
	}
	if r.mgmt == nil {
		return queue.Counts{Ready: ready, DeadLettered: deadLettered, InFlightUnknown: true}, nil
	}
	snap, known, err := r.mgmt.counts(ctx, r.uri.Vhost, r.opts.Queue)
	if err != nil {
		return queue.Counts{}, err
	}
	// The management counts are a snapshot up to collect_statistics_interval old, the
	// ready count is live. A message the snapshot has and the live count has not was
	// taken, or acknowledged, since: count it as in flight, so that a message just taken
	// is never counted in neither.
	inFlight := max(snap.unacked, snap.messages-ready)
	return queue.Counts{Ready: ready, InFlight: inFlight, DeadLettered: deadLettered, InFlightUnknown: !known, Lag: ManagementLag}, nil
}

// countReady counts the queue's ready messages, and its dead-letter queue's, with
// passive declares in a worker. Workers run one at a time: they
// share the channels, whose replies amqp091 does not sort out between goroutines.
func (r *Conn) countReady(ctx context.Context) (int64, int64, error) {
	done := make(chan struct{})
	for {
		r.mu.Lock()
		prev := r.worker
		if prev == nil || isClosed(prev) {
			r.worker = done // taken in the same critical section as the check
			r.mu.Unlock()
			break
		}
		r.mu.Unlock()
		select {
		case <-prev:
		case <-ctx.Done():
			return 0, 0, r.timeoutError()
		}
	}
	// The worker's own variables: a timed-out probe returns while the worker may still
	// write them.
	var n, dead int
	var err error
	go func() {
		defer close(done)
		n, dead, err = r.declarePassive(ctx)
	}()
	select {
	case <-done:
		return int64(n), int64(dead), err
	case <-ctx.Done():
		// A broker that accepts TCP and never answers, or answers too slowly: close the
		// socket, which ends the worker at once, and do not wait for it.
		r.drop(nil)
		return 0, 0, r.timeoutError()
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (r *Conn) timeoutError() error {
	e := queue.Errorf(queue.ReasonConnectionFailed, "RabbitMQ at %s did not answer within %s", rabbitAddr(r.uri), r.opts.Timeout)
	e.NoAnswer = true
	return e
}

// deadLetterRecheck is how long a dead-letter queue found missing is taken as missing
// while its queue has ready messages.
const deadLetterRecheck = time.Minute

// declarePassive is a probe's worker: it counts the queue's ready messages over the open
// connection, opening one first if there is none, and the messages of the dead-letter
// queue, 0 if it does not exist (live counts: the management API's lag behind).
func (r *Conn) declarePassive(ctx context.Context) (ready, deadLettered int, err error) {
	conn, err := r.connection(ctx)
	if err != nil {
		return 0, 0, err
	}
	if ready, err = r.countOn(conn, &r.ch, &r.chConn, r.opts.Queue); err != nil {
		return ready, 0, err
	}
	if ready > 0 && time.Since(r.failedMissingAt) < deadLetterRecheck {
		// Each look for a missing queue costs the broker a channel error: a queue with
		// ready messages, which no QueueJob finishes on, is not looked for again yet.
		return ready, 0, nil
	}
	deadLettered, err = r.countOn(conn, &r.dlCh, &r.dlChConn, FailedQueue(r.opts.Queue))
	r.failedMissingAt = time.Time{}
	if queue.ReasonOf(err) == queue.ReasonQueueNotFound {
		deadLettered, err, r.failedMissingAt = 0, nil, time.Now()
	}
	return ready, deadLettered, err
}

// countOn counts a queue's ready messages with a passive declare on the channel kept in
// *chp (of connection *connp), opening one if it has none.
func (r *Conn) countOn(conn *amqp.Connection, chp **amqp.Channel, connp **amqp.Connection, name string) (int, error) {
	r.mu.Lock()
	ch := *chp
	if ch != nil && (*connp != conn || ch.IsClosed()) {
		ch = nil
	}
	r.mu.Unlock()
	if ch == nil {
		var err error
		if ch, err = conn.Channel(); err != nil {
			r.drop(conn)
			return 0, rabbitError(err, rabbitAddr(r.uri))
		}
		r.mu.Lock()
		*chp, *connp = ch, conn
		r.mu.Unlock()
	}
	q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
	if err != nil {
		// The broker closes the channel on any error (a missing queue too): the next
		// probe opens another.
		r.mu.Lock()
		if *chp == ch {
			*chp, *connp = nil, nil
		}
		r.mu.Unlock()
		_ = ch.Close()
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
func (r *Conn) connection(ctx context.Context) (*amqp.Connection, error) {
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
		// Always set for amqps: without it amqp091 would build one from the URL's query,
		// reading certificate files from the manager's file system.
		TLSClientConfig: r.tlsClientConfig(),
		Heartbeat:       10 * time.Second,
		Properties:      amqp.Table{"connection_name": "queuejob-operator probe"},
	})
	if err != nil {
		if raw != nil {
			// A failed handshake (wrong password, say): close its socket now.
			r.mu.Lock()
			if r.raw == raw {
				r.raw = nil
			}
			r.mu.Unlock()
			_ = raw.Close()
		}
		return nil, rabbitError(err, rabbitAddr(r.uri))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gen != gen || r.raw != raw {
		// Dropped while opening: its socket is closed already.
		_ = raw.Close()
		return nil, queue.Errorf(queue.ReasonConnectionFailed, "the connection to RabbitMQ at %s was closed", rabbitAddr(r.uri))
	}
	r.conn = conn
	return conn, nil
}

// tlsClientConfig is a copy of the TLS configuration of an amqps URL (amqp091 may set
// its ServerName), nil for amqp.
func (r *Conn) tlsClientConfig() *tls.Config {
	if r.tls == nil {
		return nil
	}
	return r.tls.Clone()
}

// drop closes the socket of the connection, or of the one being opened, without a word to
// the broker. With a non-nil conn, it only drops that connection if it is still the
// current one.
func (r *Conn) drop(conn *amqp.Connection) {
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
func (r *Conn) Close() error {
	if r.mgmt != nil {
		r.mgmt.transport.CloseIdleConnections()
	}
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
