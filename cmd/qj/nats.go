package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	natskube "github.com/queuejob/queuejob-operator/pkg/queue/nats/kube"
)

// natsFlags give a NATS stream's coordinates, or replace some of a QueueJob's: the
// credentials only from the environment or a file.
type natsFlags struct {
	url, stream, consumer, subject string
	user, passwordEnv, tokenEnv    string
	credsFile, nkeySeedFile        string
	tlsCA, serverName              string
}

func (f *natsFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.url, "nats-url", "", "NATS server URL (nats://host:4222 or tls://host:4222), without credentials; replaces the QueueJob's. With --nats-stream and --nats-consumer, no QueueJob is read.")
	fs.StringVar(&f.stream, "nats-stream", "", "JetStream stream; replaces the QueueJob's spec.queue.nats.stream.")
	fs.StringVar(&f.consumer, "nats-consumer", "", "Durable consumer of the workers; replaces the QueueJob's spec.queue.nats.consumer.")
	fs.StringVar(&f.subject, "nats-subject", "", "Subject enqueue publishes to (default: the stream's first subject), and the subject of a stream --declare creates (default: the stream's name).")
	fs.StringVar(&f.user, "nats-user", "", "NATS user, with --nats-password-env; replaces the QueueJob's credentials.")
	fs.StringVar(&f.passwordEnv, "nats-password-env", "", "Name of an environment variable that holds the NATS user's password.")
	fs.StringVar(&f.tokenEnv, "nats-token-env", "", "Name of an environment variable that holds the NATS token; replaces the QueueJob's credentials.")
	fs.StringVar(&f.credsFile, "nats-creds", "", "A .creds file (user JWT and NKey seed); replaces the QueueJob's credentials.")
	fs.StringVar(&f.nkeySeedFile, "nats-nkey-seed", "", "A file holding a user's NKey seed; replaces the QueueJob's credentials.")
	fs.StringVar(&f.tlsCA, "nats-tls-ca", "", "PEM file of the CA that signed the server's certificate; replaces the QueueJob's tls.caSecretRef.")
	fs.StringVar(&f.serverName, "nats-tls-server-name", "", "Name the server's certificate must be valid for.")
}

func (f *natsFlags) set() bool {
	return f.url != "" || f.stream != "" || f.consumer != "" || f.subject != "" || f.credsSet() || f.tlsCA != "" || f.serverName != ""
}

// credsSet: the flags replace the QueueJob's credentials, all of them.
func (f *natsFlags) credsSet() bool {
	return f.user != "" || f.passwordEnv != "" || f.tokenEnv != "" || f.credsFile != "" || f.nkeySeedFile != ""
}

func (f *natsFlags) standalone() bool { return f.url != "" && f.stream != "" && f.consumer != "" }

// short names the flag the flags lack to give a whole stream, "" if none: without a
// QueueJob it is needed; with one, the QueueJob's field is used.
func (f *natsFlags) short() string {
	if f.url != "" && f.stream != "" && f.consumer == "" {
		return "--nats-url and --nats-stream need --nats-consumer, the durable consumer of the workers"
	}
	return ""
}

func (f *natsFlags) check() error {
	if f.url != "" {
		if _, err := nats.ParseURL(f.url); err != nil {
			return fmt.Errorf("--nats-url: %w", err)
		}
	}
	switch {
	case f.user != "" && f.passwordEnv == "":
		return fmt.Errorf("--nats-user needs --nats-password-env, the name of a variable that holds the password")
	case f.passwordEnv != "" && f.user == "":
		return fmt.Errorf("--nats-password-env needs --nats-user, the user whose password it holds")
	}
	kinds := 0
	for _, set := range []bool{f.user != "" || f.passwordEnv != "", f.tokenEnv != "", f.credsFile != "", f.nkeySeedFile != ""} {
		if set {
			kinds++
		}
	}
	if kinds > 1 {
		return fmt.Errorf("set at most one kind of NATS credentials: --nats-user with --nats-password-env, --nats-token-env, --nats-creds or --nats-nkey-seed")
	}
	return nil
}

// skips says whether a flag replaces the Secret reference s (so it is not read).
func (f *natsFlags) skips(s secretRef) bool {
	if s.flag == "--nats-tls-ca" {
		return f.tlsCA != ""
	}
	return strings.HasPrefix(s.flag, "--nats-") && f.credsSet()
}

// fromQueueJob is the QueueJob's NATS stream as the controller sees it (natskube.Options),
// with the flags on top.
func (f *natsFlags) fromQueueJob(q *queueFlags, src backends.Source) (*nats.Options, bool, error) {
	spec := src.Spec.DeepCopy()
	if n := spec.NATS; n.TLS == nil && (f.tlsCA != "" || f.serverName != "") {
		n.TLS = &qjv1.TLSConfig{}
	}
	if f.tlsCA != "" {
		spec.NATS.TLS.CASecretRef = nil // replaced by the file; its Secret was not read
	}
	o, err := natskube.Options(backends.Source{Spec: spec, Secrets: src.Secrets})
	if err != nil {
		return nil, false, err
	}
	if f.url != "" {
		o.Servers = []string{f.url}
	}
	if f.stream != "" {
		o.Stream = f.stream
	}
	if f.consumer != "" {
		o.Consumer = f.consumer
	}
	if err := f.apply(q, &o); err != nil {
		return nil, false, err
	}
	return &o, f.url == "", nil
}

// flagTarget is the stream the flags name whole.
func (f *natsFlags) flagTarget(q *queueFlags) (*target, error) {
	o := &nats.Options{Servers: []string{f.url}, Stream: f.stream, Consumer: f.consumer}
	if strings.HasPrefix(f.url, "tls://") || f.tlsCA != "" || f.serverName != "" {
		// No server name unless --nats-server-name sets one: nats.go verifies the server
		// against its URL's host.
		o.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if err := f.apply(q, o); err != nil {
		return nil, err
	}
	return &target{Backend: natskube.Backend.Name, NATS: o, credsFlag: q.credsFlag(), caFlag: q.caFlag()}, nil
}

// apply sets the subject, the credentials and the TLS overrides of the flags in o.
func (f *natsFlags) apply(q *queueFlags, o *nats.Options) error {
	o.Subject = f.subject
	if f.credsSet() {
		o.User, o.Password, o.Token, o.Creds, o.NKeySeed = f.user, "", "", nil, nil
		var err error
		if f.passwordEnv != "" {
			if o.Password, err = fromEnv(f.passwordEnv, "--nats-password-env"); err != nil {
				return err
			}
		}
		if f.tokenEnv != "" {
			if o.Token, err = fromEnv(f.tokenEnv, "--nats-token-env"); err != nil {
				return err
			}
		}
		if o.Creds, err = readFlagFile(f.credsFile, "--nats-creds"); err != nil {
			return err
		}
		if o.NKeySeed, err = readFlagFile(f.nkeySeedFile, "--nats-nkey-seed"); err != nil {
			return err
		}
	}
	if o.TLS != nil {
		return q.tlsOverrides(o.TLS, f.tlsCA, f.serverName)
	}
	return nil
}

// readFlagFile reads the file a flag names, nil without one.
func readFlagFile(path, flag string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return b, nil
}

// credsFlag names the flag that gives the credentials, if one does.
func (f *natsFlags) credsFlag() string {
	switch {
	case f.passwordEnv != "":
		return "--nats-password-env " + f.passwordEnv
	case f.tokenEnv != "":
		return "--nats-token-env " + f.tokenEnv
	case f.credsFile != "":
		return "--nats-creds " + f.credsFile
	case f.nkeySeedFile != "":
		return "--nats-nkey-seed " + f.nkeySeedFile
	}
	return ""
}

// natsWhere names a NATS target in messages.
func natsWhere(o *nats.Options) string {
	addrs, _ := o.Addresses()
	return fmt.Sprintf("NATS %s, stream %q, consumer %q", strings.Join(addrs, ","), o.Stream, o.Consumer)
}

// natsSummary is status's line of a NATS queue.
func natsSummary(q *qjv1.NATSQueue) (where, deadLetters string) {
	servers := q.Servers
	if q.URL != "" {
		servers = []string{q.URL}
	}
	addrs, _ := (&nats.Options{Servers: servers}).Addresses()
	return fmt.Sprintf("stream %q, consumer %q at %s", q.Stream, q.Consumer, strings.Join(addrs, ",")),
		"stream " + nats.FailedStream(q.Stream)
}
