// Package kube is the Kubernetes side of the NATS JetStream backend: it maps a QueueJob's
// spec.queue.nats onto the wire package pkg/queue/nats (Options, the one mapping the
// controller and qj share), names the Secrets it references, the worker pods' variables
// (WorkerEnv) and the backend value pkg/queue/registry lists (Backend).
package kube

import (
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
)

// Fields of spec.queue.nats that messages name.
const (
	FieldURL      = "spec.queue.nats.url"
	FieldServers  = "spec.queue.nats.servers"
	FieldUser     = "spec.queue.nats.userSecretRef"
	FieldPassword = "spec.queue.nats.passwordSecretRef"
	FieldToken    = "spec.queue.nats.tokenSecretRef"
	FieldCreds    = "spec.queue.nats.credsSecretRef"
	FieldNKeySeed = "spec.queue.nats.nkeySeedSecretRef"
	FieldTLS      = "spec.queue.nats.tls"
	FieldTLSCA    = FieldTLS + ".caSecretRef"
)

// Backend is the NATS JetStream backend.
var Backend = backends.Backend{
	Name:     "nats",
	Selected: func(s *qjv1.QueueSource) bool { return s.NATS != nil },
	DeadLetterQueue: func(s *qjv1.QueueSource) string {
		return fmt.Sprintf("NATS stream %q", nats.FailedStream(s.NATS.Stream))
	},
	SecretRefs: SecretRefs,
	Open: func(src backends.Source) (queue.Conn, error) {
		o, err := Options(src)
		if err != nil {
			return nil, err
		}
		return nats.New(o), nil
	},
	Addresses: Addresses,
	TLS: func(src backends.Source) (bool, string) {
		if t := src.Spec.NATS.TLS; t != nil {
			return true, t.ServerName
		}
		return false, ""
	},
	NewWatcher: NewWatcher,
	WorkerEnv:  WorkerEnv,
}

// credentialRefs are the Secret keys of spec.queue.nats's credentials, each with its
// field and the variable a worker reads it from.
func credentialRefs(n *qjv1.NATSQueue) []struct {
	ref        *corev1.SecretKeySelector
	field, env string
} {
	return []struct {
		ref        *corev1.SecretKeySelector
		field, env string
	}{
		{n.UserSecretRef, FieldUser, nats.EnvUser},
		{n.PasswordSecretRef, FieldPassword, nats.EnvPassword},
		{n.TokenSecretRef, FieldToken, nats.EnvToken},
		{n.CredsSecretRef, FieldCreds, nats.EnvCreds},
		{n.NKeySeedSecretRef, FieldNKeySeed, nats.EnvNKeySeed},
	}
}

// SecretRefs are the Secret keys spec.queue.nats references: its credentials and the TLS
// CA bundle.
func SecretRefs(s *qjv1.QueueSource) []backends.SecretRef {
	n := s.NATS
	var refs []backends.SecretRef
	for _, c := range credentialRefs(n) {
		if c.ref != nil {
			refs = append(refs, backends.RefOf(c.ref, c.field))
		}
	}
	if n.TLS != nil && n.TLS.CASecretRef != nil {
		refs = append(refs, backends.RefOf(n.TLS.CASecretRef, FieldTLSCA))
	}
	return refs
}

// serverURLs are the spec's server URLs: url, or servers.
func serverURLs(n *qjv1.NATSQueue) []string {
	if n.URL != "" {
		return []string{n.URL}
	}
	return n.Servers
}

func ackWait(n *qjv1.NATSQueue) time.Duration {
	if n.AckWaitSeconds == nil {
		return nats.DefaultAckWait
	}
	return time.Duration(*n.AckWaitSeconds) * time.Second
}

// WorkerEnv is what a NATS worker pod needs (nats.OptionsFromEnv reads it back): the
// server URLs, the stream and consumer, the lease, the credentials as secretKeyRef and
// the TLS settings.
func WorkerEnv(s *qjv1.QueueSource) []corev1.EnvVar {
	n := s.NATS
	urls := ""
	for i, u := range serverURLs(n) {
		if i > 0 {
			urls += ","
		}
		urls += u
	}
	env := []corev1.EnvVar{
		{Name: nats.EnvURL, Value: urls},
		{Name: nats.EnvStream, Value: n.Stream},
		{Name: nats.EnvConsumer, Value: n.Consumer},
		{Name: nats.EnvAckWaitSeconds, Value: strconv.Itoa(int(ackWait(n) / time.Second))},
	}
	for _, c := range credentialRefs(n) {
		if c.ref != nil {
			env = append(env, corev1.EnvVar{Name: c.env, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: c.ref.DeepCopy()}})
		}
	}
	if n.TLS != nil {
		env = append(env, backends.TLSEnv(nats.EnvTLSCA, nats.EnvTLSServerName, n.TLS)...)
	}
	return env
}

// Options are the connection options of a resolved NATS source: the one mapping of
// spec.queue.nats, which the controller's probe and qj share (qj layers its flags on
// top).
func Options(src backends.Source) (nats.Options, error) {
	n := src.Spec.NATS
	o := nats.Options{Servers: serverURLs(n), Stream: n.Stream, Consumer: n.Consumer, AckWait: ackWait(n),
		User: src.Secret(n.UserSecretRef), Password: src.Secret(n.PasswordSecretRef), Token: src.Secret(n.TokenSecretRef)}
	if n.CredsSecretRef != nil {
		o.Creds = []byte(src.Secret(n.CredsSecretRef))
	}
	if n.NKeySeedSecretRef != nil {
		o.NKeySeed = []byte(src.Secret(n.NKeySeedSecretRef))
	}
	if n.TLS != nil {
		// No server name unless tls.serverName sets one: nats.go then verifies each
		// server against its own URL's host.
		var err error
		if o.TLS, err = backends.TLSClientConfig(n.TLS, src, "", FieldTLS); err != nil {
			return nats.Options{}, err
		}
	}
	return o, nil
}

// Addresses are where a probe of a resolved source connects: each server's host:port.
func Addresses(src backends.Source) ([]queue.Address, error) {
	n := src.Spec.NATS
	field := FieldURL
	if n.URL == "" {
		field = FieldServers
	}
	var out []queue.Address
	for _, s := range serverURLs(n) {
		u, err := nats.ParseURL(s)
		if err != nil {
			return nil, queue.Errorf(queue.ReasonConnectionFailed, "%s: %v", field, err)
		}
		out = append(out, queue.Address{HostPort: u.Host, Field: field})
	}
	return out, nil
}
