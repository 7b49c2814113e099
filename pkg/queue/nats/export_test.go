package nats

// ReapMessages is reapMessages for the tests: Reap without its snapshot of the consumer.
var ReapMessages = reapMessages
