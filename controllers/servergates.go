package controllers

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
)

const (
	// probesPerServer bounds the probes that run against one queue server at once.
	probesPerServer = 4
	// minServerBackoff and maxServerBackoff bound the wait between the probes that try
	// whether a server that did not answer answers again.
	minServerBackoff = time.Second
	maxServerBackoff = 30 * time.Second
)

// serverGates keeps, for each queue server, the probes that run against it and whether it
// answered the last one. A server that did not is tried by one probe at a time, at waits
// that double from minServerBackoff to maxServerBackoff, while the probes of the other
// QueueJobs that use it fail at once instead of each waiting out the probe's timeout; once
// it answers, they are probed at once. A circuit breaker, per server.
type serverGates struct {
	mu    sync.Mutex
	gates map[string]*serverGate
}

type serverGate struct {
	// slots holds a token per running probe, up to probesPerServer.
	slots chan struct{}
	// users counts the probes entered and not yet left.
	users int
	// failures counts the probes in a row that found the server down; while it is not
	// zero, no probe enters before retryAt, nor while trying is set (one does).
	failures int
	retryAt  time.Time
	trying   bool
	// turnedAway are the QueueJobs whose probes failed at once, to probe when it answers.
	turnedAway map[types.NamespacedName]struct{}
}

// gateTicket is a probe that entered a server's gate.
type gateTicket struct {
	server string
	key    types.NamespacedName
	// trial says the probe tries whether a server that was down answers again.
	trial bool
	// slot says it holds one of the server's slots.
	slot bool
}

// enter lets a probe of QueueJob key go to the server now, or turns it away (nil) while
// the server is down and not due for a trial; the QueueJob is then probed as soon as the
// server answers again. A probe let in must leave once done.
func (g *serverGates) enter(server string, key types.NamespacedName, now time.Time) *gateTicket {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gates == nil {
		g.gates = map[string]*serverGate{}
	}
	s, ok := g.gates[server]
	if !ok {
		g.sweep(now)
		s = &serverGate{slots: make(chan struct{}, probesPerServer), turnedAway: map[types.NamespacedName]struct{}{}}
		g.gates[server] = s
	}
	t := &gateTicket{server: server, key: key}
	if s.failures > 0 {
		if s.trying || now.Before(s.retryAt) {
			s.turnedAway[key] = struct{}{}
			return nil
		}
		s.trying, t.trial = true, true
	}
	s.users++
	return t
}

// sweep forgets the servers that were down and that no probe has tried for a while:
// QueueJobs that moved elsewhere or went must not leave their servers' gates behind. A
// QueueJob they turned away is probed at its own backoff.
func (g *serverGates) sweep(now time.Time) {
	for server, s := range g.gates {
		if s.users == 0 && now.Sub(s.retryAt) > 2*maxProbeBackoff {
			delete(g.gates, server)
		}
	}
}

// wait waits for one of the server's slots. A probe that waited while another found the
// server down is turned away then (errServerDown), unless it is the trial.
func (g *serverGates) wait(ctx context.Context, t *gateTicket) error {
	g.mu.Lock()
	s := g.gates[t.server]
	g.mu.Unlock()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.slot = true
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.failures > 0 && !t.trial {
		s.turnedAway[t.key] = struct{}{}
		return errServerDown
	}
	return nil
}

// probeEnd is how a probe that entered a gate ended.
type probeEnd int

const (
	serverAnswered probeEnd = iota // whatever it then found
	serverDidNotAnswer
	probeSkipped // it never reached the server
)

// leave records how a probe ended and releases its slot. It returns the QueueJobs to
// probe at once: those turned away while the server was down, once it answers.
func (g *serverGates) leave(t *gateTicket, now time.Time, end probeEnd) (wake []types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.gates[t.server]
	if t.slot {
		<-s.slots
	}
	s.users--
	if t.trial {
		s.trying = false
	}
	switch {
	case end == serverDidNotAnswer:
		s.failures++
		s.retryAt = now.Add(min(minServerBackoff<<min(s.failures-1, 16), maxServerBackoff))
	case end == serverAnswered && s.failures > 0:
		s.failures = 0
		delete(s.turnedAway, t.key) // it has just been probed
		for key := range s.turnedAway {
			wake = append(wake, key)
		}
		clear(s.turnedAway)
	}
	if s.users == 0 && s.failures == 0 {
		delete(g.gates, t.server)
	}
	return wake
}

// endOf is how a probe with this error ended: a connection refused, or nothing back in
// time, says the server did not answer. Any answer says it did, even an error of one
// QueueJob's own settings (a login refused, a key of the wrong type, a database out of
// range, TLS refused): such errors must not turn away the other QueueJobs on the server.
func endOf(err error) probeEnd {
	if queue.NoAnswer(err) {
		return serverDidNotAnswer
	}
	return serverAnswered
}

// serverOf names the server a resolved source connects to (the addresses it reaches); a
// backend that cannot tell gets a name of the QueueJob's own, which it shares with no other.
// The TLS settings are part of the name: a QueueJob that speaks TLS to a server that does
// not gets no answer, and must not turn away the QueueJobs that reach it as they should.
// So a backend that cannot tell them (no TLS) gets a name of the QueueJob's own too.
func serverOf(backend *backends.Backend, src backends.Source, key types.NamespacedName) string {
	if backend.Addresses != nil && backend.TLS != nil {
		if addrs, err := backend.Addresses(src); err == nil && len(addrs) > 0 {
			name := backend.Name
			for _, a := range addrs {
				// One server however its name is spelled: REDIS:6379, redis.:6379.
				name += " " + strings.ToLower(strings.Replace(a.HostPort, ".:", ":", 1))
			}
			if on, serverName := backend.TLS(src); on {
				name += " tls " + serverName
			}
			return name
		}
	}
	return "queuejob " + key.String()
}
