package redis

import (
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// Connecting the way the controller does (the same TLS settings and error messages), for
// a worker or a tool.

// NewClient returns a go-redis client for a worker or a tool on the list of o: TLS
// as the controller's (handshakes bounded by o.Timeout, 5s if zero), poolSize connections
// (go-redis's default if zero), and no retries of a command whose answer was lost (a
// retried LMOVE would move a second item). Errors of its commands can be explained with
// ClientError.
func NewClient(o Options, poolSize int) *goredis.Client {
	quietRedis.Do(func() { goredis.SetLogger(discardLogger{}) })
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	opts := &goredis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		PoolSize: poolSize, MaxRetries: -1,
		DisableIdentity: true,
	}
	if o.TLS != nil {
		opts.Dialer = queue.TLSDialer(o.TLS, o.Timeout)
	}
	return goredis.NewClient(opts)
}

// ClientError classifies an error of a client of NewClient as the probe does: an
// *Error with a reason and a message that says what to fix and never has credentials.
// Unlike the probe's, the message ends with go-redis's words (the server's reply, say):
// a worker or a tool runs as the user, against the user's own queue.
func ClientError(o Options, err error) error {
	return queue.WithDetail(redisFailure(o.Address, o.TLS != nil, err), err)
}

// NewProbeClient returns a go-redis client with the settings of the operator's probe (a
// small pool, small buffers, one dial and no retries: the probe decides when to try
// again), for another backend on a Redis server (pkg/queue/redis/stream).
func NewProbeClient(o Options) *goredis.Client {
	return goredis.NewClient(probeClientOptions(&o))
}
