package queue

import (
	"context"
	"errors"
	"net"
	"strings"
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
type RabbitMQ struct {
	opts RabbitMQOptions
	conn *amqp.Connection
}

// NewRabbitMQ returns a RabbitMQ backend; it connects on first use.
func NewRabbitMQ(o RabbitMQOptions) *RabbitMQ {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	return &RabbitMQ{opts: o}
}

// Probe counts the queue's ready messages.
func (r *RabbitMQ) Probe(ctx context.Context) (Counts, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := r.declarePassive()
		done <- result{n, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return Counts{}, res.err
		}
		return Counts{Ready: int64(res.n), InFlightUnknown: true}, nil
	case <-ctx.Done():
		// A broker that accepts TCP and never answers: drop the connection, which also
		// ends the goroutine above.
		r.drop()
		<-done
		return Counts{}, Errorf(ReasonConnectionFailed, "RabbitMQ did not answer within %s", r.opts.Timeout)
	}
}

func (r *RabbitMQ) declarePassive() (int, error) {
	if r.conn == nil || r.conn.IsClosed() {
		conn, err := amqp.DialConfig(r.opts.URL, amqp.Config{
			Dial:       amqp.DefaultDial(r.opts.Timeout),
			Heartbeat:  10 * time.Second,
			Properties: amqp.Table{"connection_name": "queuejob-operator probe"},
		})
		if err != nil {
			return 0, rabbitError(err)
		}
		r.conn = conn
	}
	ch, err := r.conn.Channel()
	if err != nil {
		r.drop()
		return 0, rabbitError(err)
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(r.opts.Queue, false, false, false, false, nil)
	if err != nil {
		return 0, rabbitError(err)
	}
	return q.Messages, nil
}

func (r *RabbitMQ) drop() {
	if r.conn != nil {
		_ = r.conn.Close()
	}
}

// Close closes the connection.
func (r *RabbitMQ) Close() error {
	if r.conn == nil || r.conn.IsClosed() {
		return nil
	}
	return r.conn.Close()
}

// rabbitError classifies an amqp091 error. The URL (and so the password) is never part
// of the message: amqp091 reports the broker's reply text and dial errors by address only.
func rabbitError(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused:
			return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials (%s): check the URL's user and password", ae.Reason)
		case amqp.NotFound:
			return Errorf(ReasonQueueNotFound, "RabbitMQ has no such queue (%s): declare it, or fix spec.queue.rabbitmq.queue", ae.Reason)
		}
		return Errorf(ReasonConnectionFailed, "RabbitMQ: %s", ae.Reason)
	}
	msg := err.Error()
	var netErr net.Error
	switch {
	case errors.Is(err, amqp.ErrCredentials), strings.Contains(msg, "username or password not allowed"):
		return Errorf(ReasonAuthFailed, "RabbitMQ refused the credentials: check the URL's user and password")
	case errors.Is(err, amqp.ErrSASL):
		return Errorf(ReasonAuthFailed, "RabbitMQ offers no SASL mechanism the probe can use")
	case errors.As(err, &netErr):
		return Errorf(ReasonConnectionFailed, "cannot reach RabbitMQ: %s", redactURL(msg))
	case strings.Contains(msg, "AMQP scheme"), strings.Contains(msg, "parse"):
		return Errorf(ReasonConnectionFailed, "the RabbitMQ URL is not a valid AMQP URL")
	default:
		return Errorf(ReasonConnectionFailed, "RabbitMQ: %s", redactURL(msg))
	}
}

// redactURL removes anything that looks like a URL from a message, as a last guard
// against a library that quotes the URL it was given.
func redactURL(msg string) string {
	fields := strings.Fields(msg)
	for i, f := range fields {
		if strings.Contains(f, "://") {
			fields[i] = "<url>"
		}
	}
	return strings.Join(fields, " ")
}
