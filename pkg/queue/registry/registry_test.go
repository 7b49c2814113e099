package registry

import (
	"testing"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
)

// Default selects each backend by its field of spec.queue, and none for an empty one.
func TestDefault(t *testing.T) {
	for want, src := range map[string]*qjv1.QueueSource{
		"redis":        {Redis: &qjv1.RedisQueue{Address: "redis:6379", Key: "job2"}},
		"rabbitmq":     {RabbitMQ: &qjv1.RabbitMQQueue{URL: "amqp://rabbitmq/", Queue: "job1"}},
		"redis-stream": {RedisStream: &qjv1.RedisStreamQueue{Address: "redis:6379", Stream: "s", Group: "g"}},
	} {
		b, err := Default().For(src)
		if err != nil || b.Name != want {
			t.Errorf("Default().For(%s) = %v, %v; want the %s backend", want, b, err, want)
		}
	}
	if b, err := Default().For(&qjv1.QueueSource{}); err == nil {
		t.Errorf("Default().For(an empty spec.queue) = %s, want an error", b.Name)
	}
}
