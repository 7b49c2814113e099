package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
)

// TestInspectSection: each backend's Inspect answer lands in its field of -o json; one
// qj does not know is an error, not a section silently dropped.
func TestInspectSection(t *testing.T) {
	r, q, st := &redis.Inspection{Key: "jobs"}, &rabbitmq.Inspection{}, &stream.Inspection{Stream: "jobs"}
	for _, tc := range []struct {
		name    string
		section any
		want    inspectResult
	}{
		{name: "redis", section: r, want: inspectResult{Redis: r}},
		{name: "rabbitmq", section: q, want: inspectResult{RabbitMQ: q}},
		{name: "redis-stream", section: st, want: inspectResult{RedisStream: st}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got inspectResult
			if err := got.setSection(tc.section); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("inspectResult (-want +got):\n%s", diff)
			}
		})
	}
	type newBackendInspection struct{ Ready int64 }
	var res inspectResult
	err := res.setSection(&newBackendInspection{Ready: 3})
	if err == nil || !strings.Contains(err.Error(), "newBackendInspection") {
		t.Errorf("setSection of an unknown backend's inspection = %v, want an error that names its type", err)
	}
}
