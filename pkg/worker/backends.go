package worker

import (
	"context"
	"fmt"
	"strings"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

// backends are the queues a Worker works, by their QUEUEJOB_BACKEND name (Options.Backend),
// each with where its settings are in Options, how a pod reads them from its environment,
// and its worker side (pkg/queue/<backend>/worker.go): one line per backend.
var backends = []backend{
	backendOf(BackendRedis, func(o *Options) *redis.Options { return &o.Redis }, redis.OptionsFromEnv, redis.NewConsumer),
	backendOf(BackendRabbitMQ, func(o *Options) *rabbitmq.Options { return &o.RabbitMQ }, rabbitmq.OptionsFromEnv, rabbitmq.NewConsumer),
	backendOf(BackendNATS, func(o *Options) *nats.Options { return &o.NATS }, nats.OptionsFromEnv, nats.NewConsumer),
	backendOf(BackendRedisStream, func(o *Options) *stream.Options { return &o.RedisStream }, stream.OptionsFromEnv, stream.NewConsumer),
}

// backend is one queue backend as a Worker sees it.
type backend struct {
	name string
	// fromEnv sets the backend's settings in o from the pod's environment.
	fromEnv func(getenv func(string) string, o *Options) error
	// open connects the backend's worker side with the settings in o.
	open func(ctx context.Context, o *Options, co queue.ConsumerOptions) (queue.Consumer, error)
}

// backendOf makes a backend of its settings O, found in Options by field, read by fromEnv
// and opened by open.
func backendOf[O any, C queue.Consumer](name string, field func(*Options) *O,
	fromEnv func(getenv func(string) string) (O, error),
	open func(context.Context, O, queue.ConsumerOptions) (C, error)) backend {
	return backend{
		name: name,
		fromEnv: func(getenv func(string) string, o *Options) (err error) {
			*field(o), err = fromEnv(getenv)
			return err
		},
		open: func(ctx context.Context, o *Options, co queue.ConsumerOptions) (queue.Consumer, error) {
			c, err := open(ctx, *field(o), co)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
	}
}

// backendNamed is the backend of a QUEUEJOB_BACKEND name; the error names those there are.
func backendNamed(name string) (backend, error) {
	names := make([]string, len(backends))
	for i, b := range backends {
		if b.name == name {
			return b, nil
		}
		names[i] = b.name
	}
	if len(names) > 1 {
		names = append(names[:len(names)-2], names[len(names)-2]+" or "+names[len(names)-1])
	}
	return backend{}, fmt.Errorf("want %s", strings.Join(names, ", "))
}
