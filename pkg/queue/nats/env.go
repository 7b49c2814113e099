package nats

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// The worker's side of WorkerEnv (pkg/queue/nats/kube): reading back the QUEUEJOB_NATS_*
// variables the operator puts into worker pods.

// Environment variables of NATS workers.
const (
	// EnvURL is the server URLs, comma-separated.
	EnvURL      = "QUEUEJOB_NATS_URL"
	EnvStream   = "QUEUEJOB_NATS_STREAM"
	EnvConsumer = "QUEUEJOB_NATS_CONSUMER"
	// EnvUser, EnvPassword, EnvToken, EnvCreds (a .creds file's content) and EnvNKeySeed
	// come from the Secrets of the spec's references (secretKeyRef).
	EnvUser     = "QUEUEJOB_NATS_USER"
	EnvPassword = "QUEUEJOB_NATS_PASSWORD"
	EnvToken    = "QUEUEJOB_NATS_TOKEN"
	EnvCreds    = "QUEUEJOB_NATS_CREDS"
	EnvNKeySeed = "QUEUEJOB_NATS_NKEY_SEED"
	// EnvAckWaitSeconds is spec.queue.nats.ackWaitSeconds, the AckWait of a consumer the
	// workers create.
	EnvAckWaitSeconds = "QUEUEJOB_NATS_ACK_WAIT_SECONDS"
	// EnvTLSCA holds the PEM CA bundle of tls.caSecretRef; EnvTLSServerName is
	// tls.serverName.
	EnvTLSCA         = "QUEUEJOB_NATS" + queue.EnvSuffixTLSCA
	EnvTLSServerName = "QUEUEJOB_NATS" + queue.EnvSuffixTLSServerName
)

// OptionsFromEnv reads the QUEUEJOB_NATS_* variables of NATS workers (kube.WorkerEnv)
// through getenv.
func OptionsFromEnv(getenv func(string) string) (Options, error) {
	o := Options{Stream: getenv(EnvStream), Consumer: getenv(EnvConsumer), User: getenv(EnvUser),
		Password: getenv(EnvPassword), Token: getenv(EnvToken), Creds: bytesOf(getenv(EnvCreds)),
		NKeySeed: bytesOf(getenv(EnvNKeySeed))}
	for _, s := range strings.Split(getenv(EnvURL), ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.Servers = append(o.Servers, s)
		}
	}
	if len(o.Servers) == 0 || o.Stream == "" || o.Consumer == "" {
		return o, fmt.Errorf("%s, %s and %s must be set (the operator sets them in the pods of a QueueJob with spec.queue.nats)",
			EnvURL, EnvStream, EnvConsumer)
	}
	if s := getenv(EnvAckWaitSeconds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return o, fmt.Errorf("%s must be a positive number of seconds", EnvAckWaitSeconds)
		}
		o.AckWait = time.Duration(n) * time.Second
	}
	if getenv(EnvTLSCA) != "" || getenv(EnvTLSServerName) != "" || strings.HasPrefix(o.Servers[0], "tls://") {
		// No server name unless EnvTLSServerName sets one: nats.go then verifies each
		// server against its own URL's host.
		var err error
		if o.TLS, err = queue.TLSFromEnv(getenv, "QUEUEJOB_NATS", ""); err != nil {
			return o, err
		}
	}
	return o, nil
}

// bytesOf is s as bytes, nil if empty.
func bytesOf(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}
