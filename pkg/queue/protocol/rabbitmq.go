package protocol

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	rabbithole "github.com/michaelklishin/rabbit-hole/v2"
	amqp "github.com/rabbitmq/amqp091-go"
)

// RabbitMQ queues are counted with a passive queue declare, which gives the number of
// ready messages, live. AMQP does not tell how many messages are delivered and
// unacknowledged: with a management URL, the management API (the rabbitmq_management
// plugin, through rabbit-hole) counts them, as of its last statistics collection;
// without one, InFlightUnknown is set.

// Environment variables of RabbitMQ workers.
const (
	EnvRabbitMQURL   = "QUEUEJOB_RABBITMQ_URL"
	EnvRabbitMQQueue = "QUEUEJOB_RABBITMQ_QUEUE"
	// EnvBrokerURL and EnvQueue are the names the Kubernetes docs' job-wq-1 worker reads.
	EnvBrokerURL = "BROKER_URL"
	EnvQueue     = "QUEUE"
	// EnvRabbitMQTLSCA holds the PEM CA bundle of tls.caSecretRef (a secretKeyRef).
	EnvRabbitMQTLSCA = "QUEUEJOB_RABBITMQ" + envTLSCA
	// EnvRabbitMQTLSServerName is tls.serverName.
	EnvRabbitMQTLSServerName = "QUEUEJOB_RABBITMQ" + envTLSServerName
)

// FailedQueue is the queue RabbitMQ workers dead-letter a queue's messages to.
func FailedQueue(queue string) string { return queue + ".failed" }

// RabbitMQOptions locate a RabbitMQ queue.
type RabbitMQOptions struct {
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

// RabbitMQ is a RabbitMQ queue. It keeps one connection and one channel, opening another
// channel when the broker closed it (as a passive declare of a missing queue does). Its
// probes may be called concurrently: they run one at a time.
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

// NewRabbitMQ returns a RabbitMQ backend; it connects on first use.
func NewRabbitMQ(o RabbitMQOptions) *RabbitMQ {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	r := &RabbitMQ{opts: o}
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
func (r *RabbitMQ) Probe(ctx context.Context) (Counts, error) {
	if r.uriErr != nil {
		return Counts{}, r.uriErr
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	ready, deadLettered, err := r.countReady(ctx)
	if err != nil {
		return Counts{}, err
	}
	if r.mgmt == nil {
		return Counts{Ready: ready, DeadLettered: deadLettered, InFlightUnknown: true}, nil
	}
	snap, known, err := r.mgmt.counts(ctx, r.uri.Vhost, r.opts.Queue)
	if err != nil {
		return Counts{}, err
	}
	// The management counts are a snapshot up to collect_statistics_interval old, the
	// ready count is live. A message the snapshot has and the live count has not was
	// taken, or acknowledged, since: count it as in flight, so that a message just taken
	// is never counted in neither.
	inFlight := max(snap.unacked, snap.messages-ready)
	return Counts{Ready: ready, InFlight: inFlight, DeadLettered: deadLettered, InFlightUnknown: !known, Lag: ManagementLag}, nil
}

// countReady counts the queue's ready messages, and its dead-letter queue's, with
// passive declares in a worker. Workers run one at a time: they
// share the channels, whose replies amqp091 does not sort out between goroutines.
func (r *RabbitMQ) countReady(ctx context.Context) (int64, int64, error) {
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

func (r *RabbitMQ) timeoutError() error {
	e := Errorf(ReasonConnectionFailed, "RabbitMQ at %s did not answer within %s", rabbitAddr(r.uri), r.opts.Timeout)
	e.NoAnswer = true
	return e
}

// deadLetterRecheck is how long a dead-letter queue found missing is taken as missing
// while its queue has ready messages.
const deadLetterRecheck = time.Minute

// declarePassive is a probe's worker: it counts the queue's ready messages over the open
// connection, opening one first if there is none, and the messages of the dead-letter
// queue, 0 if it does not exist (live counts: the management API's lag behind).
func (r *RabbitMQ) declarePassive(ctx context.Context) (ready, deadLettered int, err error) {
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
	if ReasonOf(err) == ReasonQueueNotFound {
		deadLettered, err, r.failedMissingAt = 0, nil, time.Now()
	}
	return ready, deadLettered, err
}

// countOn counts a queue's ready messages with a passive declare on the channel kept in
// *chp (of connection *connp), opening one if it has none.
func (r *RabbitMQ) countOn(conn *amqp.Connection, chp **amqp.Channel, connp **amqp.Connection, queue string) (int, error) {
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
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
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
		return nil, Errorf(ReasonConnectionFailed, "the connection to RabbitMQ at %s was closed", rabbitAddr(r.uri))
	}
	r.conn = conn
	return conn, nil
}

// tlsClientConfig is a copy of the TLS configuration of an amqps URL (amqp091 may set
// its ServerName), nil for amqp.
func (r *RabbitMQ) tlsClientConfig() *tls.Config {
	if r.tls == nil {
		return nil
	}
	return r.tls.Clone()
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

// errRabbitURL is returned for a RabbitMQ URL that cannot be used. It quotes no part of the
// URL: a URL with an unescaped reserved character in its password is split in the wrong
// place, and then any part of it (a "host", a "port", a "vhost") may be the password.
// errTLSWithoutAMQPS is returned for TLS settings with an amqp:// URL; it quotes no part
// of the URL either.
var errTLSWithoutAMQPS = &Error{Reason: ReasonTLSFailed, Message: "spec.queue.rabbitmq.tls is set, but the AMQP URL " +
	"is not amqps://, and TLS settings apply only to amqps: make the URL in the Secret of " +
	"spec.queue.rabbitmq.urlSecretRef amqps:// (the broker's TLS port), or remove spec.queue.rabbitmq.tls"}

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

// rabbitError classifies an error of amqp091 in fixed words, naming only the host:port
// of the URL: never the text of an error that may quote the URL, nor a reply text of the
// peer (any server can send an AMQP Connection.Close with a text of its choosing).
func rabbitError(err error, addr string) error {
	var qe *Error
	if errors.As(err, &qe) || errors.Is(err, ErrNacked) {
		return err // classified already, or a publish the broker refused
	}
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials at %s: check the URL's user and password", addr)
	case errors.Is(err, amqp.ErrSASL):
		return Errorf(ReasonAuthFailed, "RabbitMQ offers no SASL mechanism the probe can use at %s", addr)
	case errors.Is(err, amqp.ErrVhost):
		return Errorf(ReasonAuthFailed, "RabbitMQ denied access to the URL's virtual host at %s: check that it "+
			"exists and that the user may use it", addr)
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return amqpFailure(ae, addr)
	}
	if cause, ok := tlsCause(err); ok {
		return unanswered(Errorf(ReasonTLSFailed, "cannot reach RabbitMQ at %s over TLS: %s: check spec.queue.rabbitmq.tls.caSecretRef "+
			"(the CA that signed the broker's certificate), tls.serverName (a name the certificate is valid for) and that "+
			"the amqps URL's port is the broker's TLS listener", addr, cause), err)
	}
	return unanswered(Errorf(ReasonConnectionFailed, "cannot reach RabbitMQ at %s: %s", addr, netCause(err)), err)
}

// amqpFailure classifies an AMQP error by its reply code: a broker's (or a peer's)
// Connection.Close or Channel.Close, or amqp091's own error of a connection that broke.
func amqpFailure(ae *amqp.Error, addr string) *Error {
	switch {
	case !ae.Server && notAMQP(ae):
		return Errorf(ReasonConnectionFailed, "the server at %s does not answer as an AMQP 0-9-1 broker does: "+
			"check the AMQP URL's host and port", addr)
	case !ae.Server:
		return Errorf(ReasonConnectionFailed, "cannot reach RabbitMQ at %s: the connection failed or was closed", addr)
	case ae.Code == amqp.AccessRefused:
		return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials at %s: check the URL's user and password", addr)
	case ae.Code == amqp.NotAllowed:
		return Errorf(ReasonAuthFailed, "RabbitMQ denied access to the URL's virtual host at %s: check that it "+
			"exists and that the user may use it", addr)
	case ae.Code == amqp.NotFound:
		return Errorf(ReasonQueueNotFound, "RabbitMQ has no such queue at %s: declare it, or fix spec.queue.rabbitmq.queue", addr)
	case ae.Code == amqp.ResourceLocked:
		return Errorf(ReasonConnectionFailed, "RabbitMQ at %s refused the queue: it is exclusive to another connection", addr)
	case ae.Code == amqp.ConnectionForced:
		return Errorf(ReasonConnectionFailed, "RabbitMQ at %s closed the connection (it is shutting down, or an "+
			"administrator closed it)", addr)
	default:
		return Errorf(ReasonConnectionFailed, "RabbitMQ at %s closed the connection with an error", addr)
	}
}

// amqpParseErrors are the texts of amqp091's errors for bytes that are not AMQP 0-9-1.
var amqpParseErrors = []*amqp.Error{amqp.ErrFrame, amqp.ErrSyntax, amqp.ErrUnexpectedFrame, amqp.ErrCommandInvalid,
	amqp.ErrFieldType, amqp.ErrFrameTooLarge}

// notAMQP reports whether amqp091 failed to make sense of what the peer sent. When the
// connection breaks over it, amqp091 puts the whole text of its error (Exception (501)
// Reason: "...") into the reason of a new one.
func notAMQP(ae *amqp.Error) bool {
	for _, p := range amqpParseErrors {
		if strings.Contains(ae.Reason, p.Reason) {
			return true
		}
	}
	return strings.Contains(ae.Reason, "Bad method frame")
}

// errManagementURL is returned for a management URL that cannot be used; like
// errRabbitURL, it quotes no part of it.
// errManagementCredentials is returned for a managementURL without credentials whose
// host is not the AMQP URL's, or that is plain HTTP while the AMQP URL is amqps.
var errManagementCredentials = &Error{Reason: ReasonAuthFailed, Message: "spec.queue.rabbitmq.managementURL has no " +
	"credentials, and the AMQP URL's are only sent to the AMQP URL's own host, and over https when the AMQP URL " +
	"is amqps: put the management URL with its user and password in a Secret and use managementURLSecretRef"}

var errManagementURL = &Error{Reason: ReasonConnectionFailed, Message: "the RabbitMQ management URL is not a valid " +
	"http:// or https:// URL: check spec.queue.rabbitmq.managementURL or the Secret of managementURLSecretRef; " +
	"special characters in the user and the password (such as / ? # @ : %) must be percent-encoded"}

// ManagementLag is how old the management API's counts may be: twice the plugin's default
// collect_statistics_interval of 5 s. A RabbitMQ queue must look drained this long
// before a wave ends, whatever drainGracePeriodSeconds says.
const ManagementLag = 10 * time.Second

// wholeAuthority reports whether no '@' follows the authority of a URL: an unescaped '/',
// '?' or '#' in a password splits the URL early (http://u:12/ab@host/ parses as host u,
// port 12), and the host, which messages name, would then hold part of the password.
func wholeAuthority(raw, scheme string) bool {
	rest, ok := strings.CutPrefix(raw, scheme+"://")
	if !ok {
		return false
	}
	end := strings.IndexAny(rest, "/?#")
	return end < 0 || !strings.Contains(rest[end:], "@")
}

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

// parseManagementURL parses and checks a management URL before any library sees it (see
// parseRabbitURL).
func parseManagementURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, " \t\r\n") || !wholeAuthority(raw, u.Scheme) {
		return nil, errManagementURL
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, errManagementURL
		}
	}
	return u, nil
}

// RabbitMQAddresses are the host:port a probe connects to: the AMQP URL's and, if
// managementURL is not empty, the management URL's (its port defaults to the scheme's).
// A URL that cannot be used gives the probe's own error, which quotes no part of it.
func RabbitMQAddresses(amqpURL, managementURL string) (amqpAddr, managementAddr string, err error) {
	uri, err := parseRabbitURL(amqpURL)
	if err != nil {
		return "", "", err
	}
	if managementURL == "" {
		return rabbitAddr(uri), "", nil
	}
	u, err := parseManagementURL(managementURL)
	if err != nil {
		return "", "", err
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return rabbitAddr(uri), net.JoinHostPort(u.Hostname(), port), nil
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
func (m *rabbitManagement) counts(ctx context.Context, vhost, queue string) (mc managementCounts, known bool, err error) {
	c, err := rabbithole.NewClient(m.endpoint, m.username, m.password)
	if err != nil {
		return mc, false, errManagementURL
	}
	t := &statusTransport{ctx: ctx, base: m.transport}
	c.SetTransport(t)
	c.SetTimeout(m.timeout)
	q, err := c.GetQueue(vhost, queue)
	switch {
	case err == nil:
		known = q.MessagesUnacknowledgedDetails != nil || q.MessagesUnacknowledged != 0 || q.Messages != 0
		return managementCounts{unacked: int64(q.MessagesUnacknowledged), messages: int64(q.Messages)}, known, nil
	case t.status == http.StatusUnauthorized || t.status == http.StatusForbidden:
		return mc, false, Errorf(ReasonAuthFailed, "the RabbitMQ management API at %s answered with an HTTP error: "+
			"the credentials were refused: check the user and password in the Secret of "+
			"spec.queue.rabbitmq.managementURLSecretRef, or with spec.queue.rabbitmq.managementURL those of the AMQP URL; "+
			"the user needs the monitoring (or management) tag and access to the virtual host", m.addr)
	case t.status == http.StatusNotFound:
		return mc, false, Errorf(ReasonQueueNotFound, "the RabbitMQ management API at %s answered with an HTTP error: "+
			"not found: there is no queue %q in virtual host %q: declare it, or check spec.queue.rabbitmq.queue and "+
			"that managementURL is the management API of the same broker", m.addr, queue, vhost)
	case t.status >= 300 || (t.status != 0 && t.status < 200):
		// A peer chose the status and its text: neither is repeated.
		return mc, false, Errorf(ReasonConnectionFailed, "the RabbitMQ management API at %s answered with an "+
			"unexpected HTTP status: check spec.queue.rabbitmq.managementURL and the broker's health", m.addr)
	case t.status != 0:
		return mc, false, Errorf(ReasonConnectionFailed, "the server at %s is not the management API (it sent no "+
			"queue statistics): check that managementURL is the base URL of the management API", m.addr)
	case ctx.Err() != nil:
		e := Errorf(ReasonConnectionFailed, "the RabbitMQ management API at %s did not answer within %s", m.addr, m.timeout)
		e.NoAnswer = true
		return mc, false, e
	default:
		if cause, ok := tlsCause(err); ok {
			return mc, false, unanswered(Errorf(ReasonTLSFailed, "cannot reach the RabbitMQ management API at %s over TLS: %s: "+
				"check spec.queue.rabbitmq.tls.caSecretRef (the CA that signed its certificate) and that the "+
				"management URL is https:// on the management plugin's TLS port", m.addr, cause), err)
		}
		return mc, false, unanswered(Errorf(ReasonConnectionFailed, "cannot reach the RabbitMQ management API at %s: %s",
			m.addr, netCause(err)), err)
	}
}
