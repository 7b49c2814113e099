package protocol

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// The worker's side of WorkerEnv: reading back the QUEUEJOB_* variables the operator puts
// into worker pods, and connecting the way the controller does (the same URL checks, TLS
// settings and error messages).

// Environment variables of worker settings that the operator does not derive from the
// queue: a worker reads them if they are set (by the pod template, or by the operator
// once it injects them).
const (
	// EnvMode is the QueueJob's mode, PerItem or WorkerPool.
	EnvMode = "QUEUEJOB_MODE"
	// EnvItemsPerPod is how many items a PerItem pod takes.
	EnvItemsPerPod = "QUEUEJOB_ITEMS_PER_POD"
)

// RedisOptionsFromEnv reads the QUEUEJOB_REDIS_* variables of Redis workers (WorkerEnv of
// RedisKind) through getenv, os.Getenv say.
func RedisOptionsFromEnv(getenv func(string) string) (RedisOptions, error) {
	o := RedisOptions{
		Address:  getenv(EnvRedisAddress),
		Key:      getenv(EnvRedisKey),
		Username: getenv(EnvRedisUsername),
		Password: getenv(EnvRedisPassword),
	}
	if o.Address == "" || o.Key == "" {
		return o, fmt.Errorf("%s and %s must be set (the operator sets them in the pods of a QueueJob with spec.queue.redis)", EnvRedisAddress, EnvRedisKey)
	}
	if db := getenv(EnvRedisDB); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return o, fmt.Errorf("%s=%q is not a database number", EnvRedisDB, db)
		}
		o.DB = n
	}
	switch v := getenv(EnvRedisTLS); v {
	case "", "false":
		if getenv(EnvRedisTLSCA) != "" || getenv(EnvRedisTLSServerName) != "" {
			return o, fmt.Errorf("%s or %s is set without %s=true", EnvRedisTLSCA, EnvRedisTLSServerName, EnvRedisTLS)
		}
	case "true":
		var err error
		if o.TLS, err = tlsFromEnv(getenv, "QUEUEJOB_REDIS", hostOf(o.Address)); err != nil {
			return o, err
		}
	default:
		return o, fmt.Errorf("%s=%q: want true or false", EnvRedisTLS, v)
	}
	return o, nil
}

// RabbitMQOptionsFromEnv reads the QUEUEJOB_RABBITMQ_* variables of RabbitMQ workers
// (WorkerEnv of RabbitMQKind), falling back to BROKER_URL and QUEUE, through getenv.
func RabbitMQOptionsFromEnv(getenv func(string) string) (RabbitMQOptions, error) {
	o := RabbitMQOptions{URL: getenv(EnvRabbitMQURL), Queue: getenv(EnvRabbitMQQueue)}
	if o.URL == "" {
		o.URL = getenv(EnvBrokerURL)
	}
	if o.Queue == "" {
		o.Queue = getenv(EnvQueue)
	}
	if o.URL == "" || o.Queue == "" {
		return o, fmt.Errorf("%s and %s must be set (the operator sets them in the pods of a QueueJob with spec.queue.rabbitmq)", EnvRabbitMQURL, EnvRabbitMQQueue)
	}
	if getenv(EnvRabbitMQTLSCA) != "" || getenv(EnvRabbitMQTLSServerName) != "" {
		// The server name defaults to the URL's host, which NewRabbitMQ and DialRabbitMQ
		// fill in.
		var err error
		if o.TLS, err = tlsFromEnv(getenv, "QUEUEJOB_RABBITMQ", ""); err != nil {
			return o, err
		}
	}
	return o, nil
}

// tlsFromEnv is the client TLS configuration of <prefix>_TLS_CA (a PEM CA bundle; the
// system's roots without one) and <prefix>_TLS_SERVER_NAME (host without one).
func tlsFromEnv(getenv func(string) string, prefix, host string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if sn := getenv(prefix + envTLSServerName); sn != "" {
		c.ServerName = sn
	}
	if ca := getenv(prefix + envTLSCA); ca != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(ca)) {
			return nil, Errorf(ReasonTLSFailed, "%s holds no PEM certificate: its Secret key (tls.caSecretRef) must hold "+
				"the CA certificates as -----BEGIN CERTIFICATE----- blocks", prefix+envTLSCA)
		}
		c.RootCAs = pool
	}
	return c, nil
}

// NewRedisClient returns a go-redis client for a worker or a tool on the list of o: TLS
// as the controller's (handshakes bounded by o.Timeout, 5s if zero), poolSize connections
// (go-redis's default if zero), and no retries of a command whose answer was lost (a
// retried LMOVE would move a second item). Errors of its commands can be explained with
// RedisError.
func NewRedisClient(o RedisOptions, poolSize int) *redis.Client {
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	opts := &redis.Options{
		Addr: o.Address, Username: o.Username, Password: o.Password, DB: o.DB,
		DialTimeout: o.Timeout, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout,
		PoolSize: poolSize, MaxRetries: -1,
		DisableIdentity: true,
	}
	if o.TLS != nil {
		opts.Dialer = tlsDialer(o.TLS, o.Timeout)
	}
	return redis.NewClient(opts)
}

// RedisError classifies an error of a client of NewRedisClient as the probe does: an
// *Error with a reason and a message that says what to fix and never has credentials.
// Unlike the probe's, the message ends with go-redis's words (the server's reply, say):
// a worker or a tool runs as the user, against the user's own queue.
func RedisError(o RedisOptions, err error) error {
	return withDetail(redisFailure(o.Address, o.TLS != nil, err), err)
}

// DialRabbitMQ opens an AMQP connection to the broker of o as the probe does: the URL is
// checked first (no message ever quotes it), amqps uses o.TLS (the system's roots and the
// URL's host by default), and errors are *Error with a reason. The dial and the AMQP
// handshake are bounded by ctx and o.Timeout (5s if zero); name is the connection's name
// in the management UI.
func DialRabbitMQ(ctx context.Context, o RabbitMQOptions, name string) (*amqp.Connection, error) {
	r := NewRabbitMQ(RabbitMQOptions{URL: o.URL, Queue: o.Queue, TLS: o.TLS, Timeout: o.Timeout})
	if r.uriErr != nil {
		return nil, r.uriErr
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	conn, err := amqp.DialConfig(o.URL, amqp.Config{
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
			return c, nil
		},
		TLSClientConfig: r.tlsClientConfig(),
		Heartbeat:       10 * time.Second,
		Properties:      amqp.Table{"connection_name": name},
	})
	if err != nil {
		return nil, withReplyText(rabbitError(err, rabbitAddr(r.uri)), err)
	}
	return conn, nil
}

// RabbitMQError classifies an error of amqp091 on a connection of DialRabbitMQ: an *Error
// with a reason, whose message names at most the URL's host and port, and ends with the
// broker's reply text: a worker or a tool runs as the user, against the user's own broker.
func RabbitMQError(o RabbitMQOptions, err error) error {
	uri, uerr := parseRabbitURL(o.URL)
	if uerr != nil {
		return uerr
	}
	return withReplyText(rabbitError(err, rabbitAddr(uri)), err)
}

// withReplyText adds the reply text of an AMQP error to the message it was classified as
// (never the text of another error, which may quote the URL).
func withReplyText(classified, cause error) error {
	var qe *Error
	var ae *amqp.Error
	if !errors.As(classified, &qe) || !errors.As(cause, &ae) || ae.Reason == "" {
		return classified
	}
	return &Error{Reason: qe.Reason, Message: qe.Message + " (" + ae.Reason + ")"}
}
