// Package nats is the NATS JetStream queue backend's wire side, without Kubernetes: a
// stream's durable pull consumer is the queue. Its probe connection (New) counts the
// consumer's pending and unacknowledged messages and the dead-letter stream's, and returns
// the items of expired leases to the queue (Reap); its worker side (NewConsumer) takes,
// renews, completes, fails, dead-letters and gives back messages; its Admin is what qj does.
// It is the only package that imports github.com/nats-io/nats.go. docs/queues-and-workers.md
// says what the user creates and what the counts mean.
package nats

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Options locate a stream's durable consumer and say how to connect.
type Options struct {
	// Servers are the server URLs (nats://host:port, or tls://host:port), without
	// credentials.
	Servers []string
	// Stream is the JetStream stream; Consumer the durable pull consumer of the workers.
	Stream, Consumer string
	// Subject is where Enqueue publishes; the stream's first subject if empty.
	Subject string
	// User and Password, Token, Creds (a .creds file's content: a user JWT and its NKey
	// seed) or NKeySeed (an NKey seed, SU...) authenticate; at most one kind.
	User, Password, Token string
	Creds, NKeySeed       []byte
	// TLS, if set, connects over TLS with it (a tls:// URL alone uses the system's roots).
	TLS *tls.Config
	// AckWait is the lease: the AckWait of the consumer workers create if it is missing
	// (DefaultAckWait if zero; an existing consumer keeps its own).
	AckWait time.Duration
	// Timeout bounds a connection's setup and each call (5 s if zero).
	Timeout time.Duration
}

// DefaultAckWait is the AckWait of a consumer created without one (spec.queue.nats.ackWaitSeconds' default).
const DefaultAckWait = 30 * time.Second

const defaultTimeout = 5 * time.Second

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return defaultTimeout
}

func (o Options) ackWait() time.Duration {
	if o.AckWait > 0 {
		return o.AckWait
	}
	return DefaultAckWait
}

// addr is the first server's host:port, the only thing of the URL that messages name.
func (o Options) addr() string {
	if len(o.Servers) == 0 {
		return "(no server)"
	}
	if u, err := url.Parse(o.Servers[0]); err == nil && u.Host != "" {
		return u.Host
	}
	return "(an unparsable URL)"
}

// Addresses are the servers' host:port, each with its default port (4222).
func (o Options) Addresses() ([]string, error) {
	var out []string
	for _, s := range o.Servers {
		u, err := ParseURL(s)
		if err != nil {
			return nil, err
		}
		out = append(out, u.Host)
	}
	return out, nil
}

// ParseURL checks a server URL: nats:// or tls://, a host, no credentials, no path; a URL
// without a port gets 4222.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("a NATS server URL must look like nats://host:4222")
	}
	if u.Scheme != "nats" && u.Scheme != "tls" {
		return nil, fmt.Errorf("a NATS server URL must start with nats:// or tls://")
	}
	if u.User != nil {
		return nil, fmt.Errorf("a NATS server URL must not carry credentials: use userSecretRef and passwordSecretRef, or tokenSecretRef")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return nil, fmt.Errorf("a NATS server URL has no path or query: nats://host:4222")
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "4222")
	}
	return u, nil
}

// connectOptions are nats.go's options of o: no reconnection (a connection that breaks
// closes, and the next call dials again, so that a call on a gone server fails at once),
// its credentials and TLS.
func (o Options) connectOptions(name string, dialErr *lastDialError) ([]natsgo.Option, error) {
	opts := []natsgo.Option{natsgo.Name(name), natsgo.NoReconnect(), natsgo.Timeout(o.timeout()),
		natsgo.SetCustomDialer(dialErr), natsgo.DontRandomize(),
		// No handler of nats.go's own writes to stderr: the error reaches the caller.
		natsgo.ErrorHandler(func(*natsgo.Conn, *natsgo.Subscription, error) {}),
	}
	switch {
	case o.User != "" || o.Password != "":
		opts = append(opts, natsgo.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, natsgo.Token(o.Token))
	case len(o.Creds) > 0:
		jwt, err := nkeys.ParseDecoratedJWT(o.Creds)
		if err != nil {
			return nil, errCredsFile()
		}
		kp, err := nkeys.ParseDecoratedNKey(o.Creds)
		if err != nil {
			return nil, errCredsFile()
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, errCredsFile()
		}
		opts = append(opts, natsgo.UserJWTAndSeed(jwt, string(seed)))
	case len(o.NKeySeed) > 0:
		kp, err := nkeys.ParseDecoratedNKey(o.NKeySeed)
		if err != nil {
			return nil, queue.Errorf(queue.ReasonAuthFailed, "the NKey seed is not one (want a user seed, SU...): check nkeySeedSecretRef")
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, queue.Errorf(queue.ReasonAuthFailed, "the NKey seed is not one (want a user seed, SU...): check nkeySeedSecretRef")
		}
		opts = append(opts, natsgo.Nkey(pub, kp.Sign))
	}
	if o.TLS != nil {
		opts = append(opts, natsgo.Secure(o.TLS.Clone()))
	}
	return opts, nil
}

func errCredsFile() *queue.Error {
	return queue.Errorf(queue.ReasonAuthFailed, "the .creds file holds no user JWT and NKey seed: check credsSecretRef "+
		"(the file `nsc generate creds` writes)")
}

// lastDialError is nats.go's dialer that remembers why the last dial failed, which
// nats.go reports only as "no servers available".
type lastDialError struct {
	net.Dialer
	mu  sync.Mutex
	err error
}

func (d *lastDialError) Dial(network, address string) (net.Conn, error) {
	c, err := d.Dialer.Dial(network, address)
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
	return c, err
}

func (d *lastDialError) last() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// dial connects to o's servers.
func dial(o Options, name string) (*natsgo.Conn, jetstream.JetStream, error) {
	if len(o.Servers) == 0 {
		return nil, nil, queue.Errorf(queue.ReasonConnectionFailed, "no NATS server: set spec.queue.nats.url or servers")
	}
	for _, s := range o.Servers {
		if _, err := ParseURL(s); err != nil {
			return nil, nil, queue.Errorf(queue.ReasonConnectionFailed, "%v", err)
		}
	}
	d := &lastDialError{Dialer: net.Dialer{Timeout: o.timeout()}}
	opts, err := o.connectOptions(name, d)
	if err != nil {
		return nil, nil, err
	}
	nc, err := natsgo.Connect(strings.Join(o.Servers, ","), opts...)
	if err != nil {
		if errors.Is(err, natsgo.ErrNoServers) && d.last() != nil {
			err = d.last()
		}
		return nil, nil, natsFailure(o, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, natsFailure(o, err)
	}
	return nc, js, nil
}

// client is a connection dialled on first use and again after it closed (a server that
// went away): each call of a Conn, Consumer or Admin gets the live one.
type client struct {
	o    Options
	name string
	mu   sync.Mutex
	nc   *natsgo.Conn
	js   jetstream.JetStream
	// stream is the stream's configuration, checked once.
	stream streamCheck
}

func (c *client) get() (*natsgo.Conn, jetstream.JetStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil && !c.nc.IsClosed() {
		return c.nc, c.js, nil
	}
	nc, js, err := dial(c.o, c.name)
	if err != nil {
		return nil, nil, err
	}
	c.nc, c.js = nc, js
	return nc, js, nil
}

// broken reports whether the connection was dialled and has closed since.
func (c *client) broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nc != nil && c.nc.IsClosed()
}

// drop closes the connection after a call that found it broken (a frozen server): the
// next call dials again.
func (c *client) drop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		c.nc.Close()
		c.nc, c.js = nil, nil
	}
}

func (c *client) close() error {
	c.drop()
	return nil
}

// callCtx bounds a call by o's timeout.
func (o Options) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.timeout())
}
