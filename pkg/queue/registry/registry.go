// Package registry lists the queue backends this project ships. It is apart from
// pkg/queue/backends because each backend's kube package defines its backends.Backend
// (and so imports pkg/queue/backends): the list that imports them all cannot live there.
package registry

import (
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	natskube "github.com/queuejob/queuejob-operator/pkg/queue/nats/kube"
	rabbitmqkube "github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq/kube"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
	streamkube "github.com/queuejob/queuejob-operator/pkg/queue/redis/stream/kube"
)

// Default has every backend this project ships, one line each.
func Default() *backends.Registry {
	return backends.NewRegistry(
		rediskube.Backend,
		rabbitmqkube.Backend,
		natskube.Backend,
		streamkube.Backend,
	)
}
