package main

import (
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

// admin is the backend's side of qj for the target's queue (enqueue, inspect, count the
// dead-lettered items), each call bounded by timeout.
func (t *target) admin(timeout time.Duration) queue.Admin {
	if t.Redis != nil {
		return redis.NewAdmin(*t.Redis, timeout)
	}
	if t.NATS != nil {
		return nats.NewAdmin(*t.NATS, timeout)
	}
	if t.RedisStream != nil {
		return stream.NewAdmin(*t.RedisStream, timeout)
	}
	return rabbitmq.NewAdmin(*t.RabbitMQ, timeout)
}
