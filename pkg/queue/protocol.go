package queue

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/queuejob/queuejob-operator/pkg/queue/protocol"
)

// The queues' protocols live in pkg/queue/protocol, which the workers use without
// Kubernetes; these are the names of it that the operator's side (the kinds, the
// controller, the qj CLI) uses, so that it can keep to one package.

// Probes and their errors.
type (
	Counts          = protocol.Counts
	Error           = protocol.Error
	Redis           = protocol.Redis
	RedisOptions    = protocol.RedisOptions
	RabbitMQ        = protocol.RabbitMQ
	RabbitMQOptions = protocol.RabbitMQOptions
)

func Errorf(reason, format string, args ...any) *Error {
	return protocol.Errorf(reason, format, args...)
}
func ReasonOf(err error) string               { return protocol.ReasonOf(err) }
func NoAnswer(err error) bool                 { return protocol.NoAnswer(err) }
func NewRedis(o RedisOptions) *Redis          { return protocol.NewRedis(o) }
func NewRabbitMQ(o RabbitMQOptions) *RabbitMQ { return protocol.NewRabbitMQ(o) }

const (
	ReasonConnectionFailed = protocol.ReasonConnectionFailed
	ReasonAuthFailed       = protocol.ReasonAuthFailed
	ReasonQueueNotFound    = protocol.ReasonQueueNotFound
	ReasonWrongType        = protocol.ReasonWrongType
	ReasonSecretNotFound   = protocol.ReasonSecretNotFound
	ReasonTLSFailed        = protocol.ReasonTLSFailed
	// ReasonAddressNotAllowed says the manager's AddressPolicy refused the queue's
	// address: the probe connected to nothing.
	ReasonAddressNotAllowed = "AddressNotAllowed"

	ManagementLag = protocol.ManagementLag
)

// RabbitMQ publishing: mandatory, with publisher confirms.
type RabbitMQPublisher = protocol.RabbitMQPublisher

func NewRabbitMQPublisher(ch *amqp.Channel, unconfirmed int) (*RabbitMQPublisher, error) {
	return protocol.NewRabbitMQPublisher(ch, unconfirmed)
}

var (
	ErrUnroutable = protocol.ErrUnroutable
	ErrNacked     = protocol.ErrNacked
)

// Redis keys.
func ProcessingKey(key string) string  { return protocol.ProcessingKey(key) }
func LeaseKey(key, item string) string { return protocol.LeaseKey(key, item) }
func FailedKey(key string) string      { return protocol.FailedKey(key) }

// FailedQueue is the RabbitMQ queue workers dead-letter a queue's messages to.
func FailedQueue(queue string) string { return protocol.FailedQueue(queue) }

// Environment variables of worker pods.
const (
	EnvBackend     = protocol.EnvBackend
	EnvName        = protocol.EnvName
	EnvMode        = protocol.EnvMode
	EnvItemsPerPod = protocol.EnvItemsPerPod

	EnvRedisAddress       = protocol.EnvRedisAddress
	EnvRedisKey           = protocol.EnvRedisKey
	EnvRedisDB            = protocol.EnvRedisDB
	EnvRedisPassword      = protocol.EnvRedisPassword
	EnvRedisUsername      = protocol.EnvRedisUsername
	EnvRedisTLS           = protocol.EnvRedisTLS
	EnvRedisTLSCA         = protocol.EnvRedisTLSCA
	EnvRedisTLSServerName = protocol.EnvRedisTLSServerName

	EnvRabbitMQURL           = protocol.EnvRabbitMQURL
	EnvRabbitMQQueue         = protocol.EnvRabbitMQQueue
	EnvBrokerURL             = protocol.EnvBrokerURL
	EnvQueue                 = protocol.EnvQueue
	EnvRabbitMQTLSCA         = protocol.EnvRabbitMQTLSCA
	EnvRabbitMQTLSServerName = protocol.EnvRabbitMQTLSServerName
)
