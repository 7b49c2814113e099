package nats

import "time"

// ReapMessages is reapMessages for the tests: Reap without its snapshot of the consumer.
var ReapMessages = reapMessages

// SetStreamCheckEvery sets how long a checked stream configuration is kept, and returns
// what restores it.
func SetStreamCheckEvery(d time.Duration) func() {
	old := streamCheckEvery
	streamCheckEvery = d
	return func() { streamCheckEvery = old }
}

// FiltersAll is filtersAll for the tests.
var FiltersAll = filtersAll

// RequeueOne is requeueOne for the tests.
var RequeueOne = requeueOne
