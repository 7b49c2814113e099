package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	qjv1 "github.com/queuejob/queuejob-operator/api/v1alpha1"
	"github.com/queuejob/queuejob-operator/pkg/queue"
	"github.com/queuejob/queuejob-operator/pkg/queue/backends"
	"github.com/queuejob/queuejob-operator/pkg/queue/nats"
	"github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq"
	rabbitmqkube "github.com/queuejob/queuejob-operator/pkg/queue/rabbitmq/kube"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis"
	rediskube "github.com/queuejob/queuejob-operator/pkg/queue/redis/kube"
	"github.com/queuejob/queuejob-operator/pkg/queue/redis/stream"
	streamkube "github.com/queuejob/queuejob-operator/pkg/queue/redis/stream/kube"
	"github.com/queuejob/queuejob-operator/pkg/queue/registry"
)

// queueFlags give a queue's coordinates, or replace some of a QueueJob's: credentials are
// only ever taken from the environment or a file, never from the command line, but for
// --rabbitmq-url, whose password the process list shows (prefer --rabbitmq-url-env).
type queueFlags struct {
	redisAddress, redisKey      string
	redisDB                     int32
	redisDBSet                  bool
	redisUsername               string
	redisPasswordEnv            string
	redisTLS                    bool
	redisTLSCA, redisServerName string
	// redisStream and redisGroup name a Redis stream and its consumer group (with the
	// --redis-* flags of the server), instead of a list's --redis-key.
	redisStream, redisGroup string

	rabbitURL, rabbitURLEnv         string
	rabbitQueue                     string
	rabbitMgmtURL, rabbitMgmtURLEnv string
	rabbitTLSCA, rabbitServerName   string

	nats natsFlags
}

func (f *queueFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.redisAddress, "redis-address", "", "Redis host:port; replaces the QueueJob's (e.g. 127.0.0.1:6379 behind kubectl port-forward). With --redis-key, no QueueJob is read.")
	fs.StringVar(&f.redisKey, "redis-key", "", "Redis list; replaces the QueueJob's spec.queue.redis.key.")
	fs.Int32Var(&f.redisDB, "redis-db", 0, "Redis database number; replaces the QueueJob's.")
	fs.StringVar(&f.redisUsername, "redis-username", "", "Redis ACL user; replaces the QueueJob's.")
	fs.StringVar(&f.redisPasswordEnv, "redis-password-env", "", "Name of an environment variable that holds the Redis password; replaces the QueueJob's passwordSecretRef (no Secret is read).")
	fs.BoolVar(&f.redisTLS, "redis-tls", false, "Connect to Redis over TLS (on with a QueueJob whose spec.queue.redis.tls is set).")
	fs.StringVar(&f.redisTLSCA, "redis-tls-ca", "", "PEM file of the CA that signed Redis's certificate; replaces the QueueJob's tls.caSecretRef.")
	fs.StringVar(&f.redisServerName, "redis-tls-server-name", "", "Name Redis's certificate must be valid for; defaults to the QueueJob's tls.serverName, else the host of its address.")
	fs.StringVar(&f.redisStream, "redis-stream", "", "Redis stream; replaces the QueueJob's spec.queue.redisStream.stream. With --redis-address and --redis-group, no QueueJob is read.")
	fs.StringVar(&f.redisGroup, "redis-group", "", "Consumer group of the Redis stream; replaces the QueueJob's spec.queue.redisStream.group.")
	fs.StringVar(&f.rabbitURL, "rabbitmq-url", "", "AMQP URL of the broker; prefer --rabbitmq-url-env for one with a password. With --rabbitmq-queue, no QueueJob is read.")
	fs.StringVar(&f.rabbitURLEnv, "rabbitmq-url-env", "", "Name of an environment variable that holds the AMQP URL; replaces the QueueJob's url or urlSecretRef.")
	fs.StringVar(&f.rabbitQueue, "rabbitmq-queue", "", "RabbitMQ queue; replaces the QueueJob's spec.queue.rabbitmq.queue.")
	fs.StringVar(&f.rabbitMgmtURL, "rabbitmq-management-url", "", "Base URL of the management API (for in-flight counts), without credentials (the AMQP URL's are used).")
	fs.StringVar(&f.rabbitMgmtURLEnv, "rabbitmq-management-url-env", "", "Name of an environment variable that holds the management API's URL with its credentials.")
	fs.StringVar(&f.rabbitTLSCA, "rabbitmq-tls-ca", "", "PEM file of the CA that signed the broker's certificate (amqps); replaces the QueueJob's tls.caSecretRef.")
	fs.StringVar(&f.rabbitServerName, "rabbitmq-tls-server-name", "", "Name the broker's certificate must be valid for (amqps).")
	f.nats.add(fs)
}

func (f *queueFlags) redisSet() bool {
	return f.redisAddress != "" || f.redisKey != "" || f.redisDBSet || f.redisUsername != "" || f.redisPasswordEnv != "" ||
		f.redisTLS || f.redisTLSCA != "" || f.redisServerName != "" || f.redisStream != "" || f.redisGroup != ""
}

func (f *queueFlags) rabbitSet() bool {
	return f.rabbitURL != "" || f.rabbitURLEnv != "" || f.rabbitQueue != "" || f.rabbitMgmtURL != "" ||
		f.rabbitMgmtURLEnv != "" || f.rabbitTLSCA != "" || f.rabbitServerName != ""
}

// standalone reports whether the flags name a whole queue: then no QueueJob is read and
// every argument is an item.
func (f *queueFlags) standalone() bool {
	return (f.redisAddress != "" && f.redisKey != "") || (f.redisAddress != "" && f.redisStream != "" && f.redisGroup != "") ||
		((f.rabbitURL != "" || f.rabbitURLEnv != "") && f.rabbitQueue != "") || f.nats.standalone()
}

// shortOfAQueue is the error of flags a field short of a whole queue when no QueueJob
// supplies it, nil if they are not: with a QueueJob they replace its fields.
func (f *queueFlags) shortOfAQueue() error {
	short := f.nats.short()
	if f.redisAddress != "" && f.redisStream != "" && f.redisGroup == "" {
		short = "--redis-stream needs --redis-group, the consumer group of the workers"
	}
	if short == "" {
		return nil
	}
	return fmt.Errorf("%s, or name the QueueJob (NAME) that has it", short)
}

func (f *queueFlags) check(cmd *cobra.Command) error {
	f.redisDBSet = cmd.Flags().Changed("redis-db")
	if f.redisSet() && f.rabbitSet() {
		return fmt.Errorf("both --redis-* and --rabbitmq-* flags are set: a queue is one or the other")
	}
	if f.nats.set() && (f.redisSet() || f.rabbitSet()) {
		return fmt.Errorf("--nats-* flags are set with --redis-* or --rabbitmq-* flags: a queue is of one backend")
	}
	if err := f.nats.check(); err != nil {
		return err
	}
	if f.redisKey != "" && (f.redisStream != "" || f.redisGroup != "") {
		return fmt.Errorf("--redis-key names a list, --redis-stream and --redis-group a stream: set one or the other")
	}
	if f.rabbitURL != "" && f.rabbitURLEnv != "" {
		return fmt.Errorf("set at most one of --rabbitmq-url and --rabbitmq-url-env")
	}
	if f.rabbitMgmtURL != "" && f.rabbitMgmtURLEnv != "" {
		return fmt.Errorf("set at most one of --rabbitmq-management-url and --rabbitmq-management-url-env")
	}
	if f.redisDBSet && (f.redisDB < 0 || f.redisDB > 255) {
		return fmt.Errorf("--redis-db must be between 0 and 255")
	}
	return nil
}

// target is a queue to talk to: its coordinates with the credentials, and where they came
// from for messages.
type target struct {
	// Namespace and Name name the QueueJob; empty when the flags gave the whole queue.
	Namespace, Name string
	// Backend is "redis" or "rabbitmq".
	Backend string
	Redis   *redis.Options
	// RedisStream is a Redis stream and its group (on a server given by the --redis-*
	// flags).
	RedisStream *stream.Options
	// RabbitMQ's URL is secret (it may hold the password); messages name only its
	// host:port.
	RabbitMQ *rabbitmq.Options
	// NATS's options carry credentials; messages name only the servers' host:port.
	NATS *nats.Options
	// fromQueueJob says the address came from the QueueJob (not a flag): the cluster's
	// Service names rarely resolve here, and messages say how to get through.
	fromQueueJob bool
	// credsFlag names the flag the credentials came from, empty if from the QueueJob;
	// caFlag the flag the TLS CA came from.
	credsFlag, caFlag string
}

// where names the queue in messages and tables, without credentials.
func (t *target) where() string {
	switch {
	case t.Redis != nil:
		return fmt.Sprintf("Redis %s, list %q", t.Redis.Address, t.Redis.Key)
	case t.RabbitMQ != nil:
		return fmt.Sprintf("RabbitMQ %s, queue %q", rabbitmq.AddrOf(t.RabbitMQ.URL), t.RabbitMQ.Queue)
	case t.NATS != nil:
		return natsWhere(t.NATS)
	case t.RedisStream != nil:
		return fmt.Sprintf("Redis %s, stream %q, group %q", t.RedisStream.Address, t.RedisStream.Stream, t.RedisStream.Group)
	}
	return "?"
}

// hint is what to add to a connection error.
func (t *target) hint() string {
	if !t.fromQueueJob {
		return ""
	}
	svc := "the Service of the queue server"
	if addr := t.redisAddress(); addr != "" {
		svc = "svc/" + serviceOf(addr)
		return fmt.Sprintf(": the QueueJob's address is likely only reachable inside the cluster; run kubectl port-forward -n %s %s 6379:%s and pass --redis-address 127.0.0.1:6379",
			t.Namespace, svc, portOnly(addr))
	}
	if t.NATS != nil {
		return fmt.Sprintf(": the QueueJob's URL is likely only reachable inside the cluster; run kubectl port-forward -n %s svc/<nats-service> 4222 and pass --nats-url nats://127.0.0.1:4222", t.Namespace)
	}
	return fmt.Sprintf(": the QueueJob's URL is likely only reachable inside the cluster; run kubectl port-forward -n %s to %s and pass the forwarded URL with --rabbitmq-url-env", t.Namespace, svc)
}

// redisAddress is the address of the target's Redis server, empty if it is not on one.
func (t *target) redisAddress() string {
	switch {
	case t.Redis != nil:
		return t.Redis.Address
	case t.RedisStream != nil:
		return t.RedisStream.Address
	}
	return ""
}

// resolveTarget finds the queue: from the flags alone (standalone), or from the QueueJob
// args[0] and its Secrets, with the flags replacing its fields. It returns the arguments
// left after the QueueJob's name.
func (o *options) resolveTarget(ctx context.Context, f *queueFlags, args []string) (*target, []string, error) {
	if f.standalone() {
		t, err := f.flagTarget()
		return t, args, err
	}
	if err := f.shortOfAQueue(); err != nil && len(args) == 0 {
		return nil, nil, err
	}
	if len(args) == 0 {
		return nil, nil, fmt.Errorf("name the QueueJob (NAME), or give the whole queue as flags: --redis-address and --redis-key (a list) or --redis-stream and --redis-group (a stream), --rabbitmq-url-env and --rabbitmq-queue, or --nats-url, --nats-stream and --nats-consumer")
	}
	name, rest := args[0], args[1:]
	c, ns, err := o.kubeClient()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	qj, err := getQueueJob(ctx, c, ns, name)
	if err != nil {
		if short := f.shortOfAQueue(); short != nil {
			err = fmt.Errorf("%w (without a QueueJob: %w)", err, short)
		}
		return nil, nil, err
	}
	if qj.Spec.Queue == nil {
		return nil, nil, fmt.Errorf("QueueJob %s/%s has no queue (spec.queue): it runs one plain Job; see %s status %s", ns, name, commandName(), name)
	}
	backend, err := registry.Default().For(qj.Spec.Queue)
	if err != nil {
		return nil, nil, fmt.Errorf("QueueJob %s/%s: %w (is this qj older than the operator?)", ns, name, err)
	}
	if qj.Spec.Queue.RedisStream != nil && (f.rabbitSet() || f.nats.set() || f.redisKey != "") {
		return nil, nil, fmt.Errorf("QueueJob %s/%s has a Redis stream: its flags are --redis-* with --redis-stream and --redis-group, not --redis-key", ns, name)
	}
	if (qj.Spec.Queue.Redis != nil && f.rabbitSet()) || (qj.Spec.Queue.RabbitMQ != nil && f.redisSet()) ||
		(qj.Spec.Queue.NATS != nil && (f.redisSet() || f.rabbitSet())) || (qj.Spec.Queue.NATS == nil && f.nats.set()) {
		return nil, nil, fmt.Errorf("QueueJob %s/%s has a %s queue: its flags are --%s-*", ns, name, backend.Name, backend.Name)
	}
	if qj.Spec.Queue.Redis != nil && (f.redisStream != "" || f.redisGroup != "") {
		return nil, nil, fmt.Errorf("QueueJob %s/%s has a Redis list: --redis-stream and --redis-group are for streams", ns, name)
	}
	src, err := readSecrets(ctx, c, qj, backend, func(s secretRef) bool {
		switch s.flag {
		case "--redis-password-env":
			return f.redisPasswordEnv != ""
		case "--redis-tls-ca":
			return f.redisTLSCA != ""
		case "--rabbitmq-url-env":
			return f.rabbitURL != "" || f.rabbitURLEnv != ""
		case "--rabbitmq-management-url-env":
			return f.rabbitMgmtURL != "" || f.rabbitMgmtURLEnv != ""
		case "--rabbitmq-tls-ca":
			return f.rabbitTLSCA != ""
		}
		return f.nats.skips(s)
	})
	if err != nil {
		return nil, nil, err
	}
	t := &target{Namespace: ns, Name: name, Backend: backend.Name, credsFlag: f.credsFlag(), caFlag: f.caFlag()}
	switch {
	case qj.Spec.Queue.Redis != nil:
		t.Redis, t.fromQueueJob, err = f.redisFromQueueJob(src)
	case qj.Spec.Queue.RabbitMQ != nil:
		t.RabbitMQ, t.fromQueueJob, err = f.rabbitFromQueueJob(src)
	case qj.Spec.Queue.NATS != nil:
		t.NATS, t.fromQueueJob, err = f.nats.fromQueueJob(f, src)
	case qj.Spec.Queue.RedisStream != nil:
		t.RedisStream, t.fromQueueJob, err = f.streamFromQueueJob(src)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("QueueJob %s/%s: %w", ns, name, err)
	}
	return t, rest, nil
}

// redisFromQueueJob is the QueueJob's Redis queue as the controller sees it
// (rediskube.Options), with the flags on top. The certificate names the QueueJob's host,
// not 127.0.0.1 of a port-forward: the TLS server name stays the QueueJob's.
func (f *queueFlags) redisFromQueueJob(src backends.Source) (*redis.Options, bool, error) {
	spec := src.Spec.DeepCopy()
	if r := spec.Redis; r.TLS == nil && (f.redisTLS || f.redisTLSCA != "") {
		r.TLS = &qjv1.TLSConfig{}
	}
	if f.redisTLSCA != "" {
		spec.Redis.TLS.CASecretRef = nil // replaced by the file; its Secret was not read
	}
	o, err := rediskube.Options(backends.Source{Spec: spec, Secrets: src.Secrets})
	if err != nil {
		return nil, false, err
	}
	if f.redisKey != "" {
		o.Key = f.redisKey
	}
	if err := f.serverOverrides(&o); err != nil {
		return nil, false, err
	}
	return &o, f.redisAddress == "", nil
}

// serverOverrides applies the --redis-* flags of the server (address, database, user,
// password, TLS) to o.
func (f *queueFlags) serverOverrides(o *redis.Options) error {
	var err error
	if f.redisAddress != "" {
		o.Address = f.redisAddress
	}
	if f.redisDBSet {
		o.DB = int(f.redisDB)
	}
	if f.redisUsername != "" {
		o.Username = f.redisUsername
	}
	if f.redisPasswordEnv != "" {
		if o.Password, err = fromEnv(f.redisPasswordEnv, "--redis-password-env"); err != nil {
			return err
		}
	}
	if o.TLS != nil {
		return f.tlsOverrides(o.TLS, f.redisTLSCA, f.redisServerName)
	}
	return nil
}

// streamFromQueueJob is the QueueJob's Redis stream as the controller sees it
// (streamkube.Options), with the flags on top.
func (f *queueFlags) streamFromQueueJob(src backends.Source) (*stream.Options, bool, error) {
	spec := src.Spec.DeepCopy()
	if r := spec.RedisStream; r.TLS == nil && (f.redisTLS || f.redisTLSCA != "") {
		r.TLS = &qjv1.TLSConfig{}
	}
	if f.redisTLSCA != "" {
		spec.RedisStream.TLS.CASecretRef = nil // replaced by the file; its Secret was not read
	}
	o, err := streamkube.Options(backends.Source{Spec: spec, Secrets: src.Secrets})
	if err != nil {
		return nil, false, err
	}
	s := o.Server()
	if err := f.serverOverrides(&s); err != nil {
		return nil, false, err
	}
	o.Address, o.DB, o.Username, o.Password, o.TLS = s.Address, s.DB, s.Username, s.Password, s.TLS
	if f.redisStream != "" {
		o.Stream = f.redisStream
	}
	if f.redisGroup != "" {
		o.Group = f.redisGroup
	}
	return &o, f.redisAddress == "", nil
}

// rabbitFromQueueJob is the QueueJob's RabbitMQ queue as the controller sees it
// (rabbitmqkube.Options), with the flags on top.
func (f *queueFlags) rabbitFromQueueJob(src backends.Source) (*rabbitmq.Options, bool, error) {
	fromQJ := f.rabbitURL == "" && f.rabbitURLEnv == ""
	url, err := f.rabbitURLFlag()
	if err != nil {
		return nil, false, err
	}
	mgmt, err := f.rabbitMgmtFlag()
	if err != nil {
		return nil, false, err
	}
	spec := src.Spec.DeepCopy()
	if r := spec.RabbitMQ; r.TLS == nil && (f.rabbitTLSCA != "" || f.rabbitServerName != "") {
		r.TLS = &qjv1.TLSConfig{}
	}
	if f.rabbitTLSCA != "" {
		spec.RabbitMQ.TLS.CASecretRef = nil // replaced by the file; its Secret was not read
	}
	o, err := rabbitmqkube.Options(backends.Source{Spec: spec, Secrets: src.Secrets})
	if err != nil {
		return nil, false, err
	}
	if url != "" {
		o.URL = url
	}
	if f.rabbitQueue != "" {
		o.Queue = f.rabbitQueue
	}
	if mgmt != "" {
		o.ManagementURL = mgmt
	}
	if o.TLS != nil {
		if err := f.tlsOverrides(o.TLS, f.rabbitTLSCA, f.rabbitServerName); err != nil {
			return nil, false, err
		}
	}
	return &o, fromQJ, nil
}

// flagTarget is the queue the flags name whole.
func (f *queueFlags) flagTarget() (*target, error) {
	if f.nats.standalone() {
		return f.nats.flagTarget(f)
	}
	if f.redisAddress != "" {
		o := &redis.Options{Address: f.redisAddress, Key: f.redisKey, DB: int(f.redisDB), Username: f.redisUsername}
		if f.redisPasswordEnv != "" {
			pw, err := fromEnv(f.redisPasswordEnv, "--redis-password-env")
			if err != nil {
				return nil, err
			}
			o.Password = pw
		}
		if f.redisTLS || f.redisTLSCA != "" || f.redisServerName != "" {
			cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: queue.HostOf(f.redisAddress)}
			if err := f.tlsOverrides(cfg, f.redisTLSCA, f.redisServerName); err != nil {
				return nil, err
			}
			o.TLS = cfg
		}
		if f.redisStream != "" {
			so := &stream.Options{Address: o.Address, DB: o.DB, Username: o.Username, Password: o.Password, TLS: o.TLS,
				Stream: f.redisStream, Group: f.redisGroup}
			return &target{Backend: streamkube.Backend.Name, RedisStream: so, credsFlag: f.credsFlag(), caFlag: f.caFlag()}, nil
		}
		return &target{Backend: rediskube.Backend.Name, Redis: o, credsFlag: f.credsFlag(), caFlag: f.caFlag()}, nil
	}
	url, err := f.rabbitURLFlag()
	if err != nil {
		return nil, err
	}
	mgmt, err := f.rabbitMgmtFlag()
	if err != nil {
		return nil, err
	}
	o := &rabbitmq.Options{URL: url, Queue: f.rabbitQueue, ManagementURL: mgmt}
	if f.rabbitTLSCA != "" || f.rabbitServerName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if err := f.tlsOverrides(cfg, f.rabbitTLSCA, f.rabbitServerName); err != nil {
			return nil, err
		}
		o.TLS = cfg
	}
	return &target{Backend: rabbitmqkube.Backend.Name, RabbitMQ: o, credsFlag: f.credsFlag(), caFlag: f.caFlag()}, nil
}

// credsFlag names the flag that gives the credentials, if one does.
func (f *queueFlags) credsFlag() string {
	switch {
	case f.redisPasswordEnv != "":
		return "--redis-password-env " + f.redisPasswordEnv
	case f.rabbitURLEnv != "":
		return "--rabbitmq-url-env " + f.rabbitURLEnv
	case f.rabbitURL != "":
		return "--rabbitmq-url"
	}
	return f.nats.credsFlag()
}

// explain adds to a queue error (of pkg/queue, with its reason) where the settings came
// from and how to get through to the queue.
func (t *target) explain(err error) error {
	hint := ""
	switch queue.ReasonOf(err) {
	case queue.ReasonConnectionFailed:
		hint = t.hint()
	case queue.ReasonAuthFailed:
		hint = t.authHint()
	case queue.ReasonTLSFailed:
		hint = t.tlsHint()
	}
	return fmt.Errorf("%w%s", err, hint)
}

// caFlag names the flag that gives the TLS CA, if one does.
func (f *queueFlags) caFlag() string {
	switch {
	case f.redisTLSCA != "":
		return "--redis-tls-ca " + f.redisTLSCA
	case f.rabbitTLSCA != "":
		return "--rabbitmq-tls-ca " + f.rabbitTLSCA
	case f.nats.tlsCA != "":
		return "--nats-tls-ca " + f.nats.tlsCA
	}
	return ""
}

// tlsHint is what to add to a TLSFailed error.
func (t *target) tlsHint() string {
	if t.caFlag == "" {
		return ""
	}
	return " (the CA came from " + t.caFlag + ")"
}

// authHint is what to add to an AuthFailed error.
func (t *target) authHint() string {
	if t.credsFlag == "" {
		return ""
	}
	return " (the credentials came from " + t.credsFlag + ")"
}

func (f *queueFlags) rabbitURLFlag() (string, error) {
	if f.rabbitURLEnv != "" {
		return fromEnv(f.rabbitURLEnv, "--rabbitmq-url-env")
	}
	return f.rabbitURL, nil
}

func (f *queueFlags) rabbitMgmtFlag() (string, error) {
	if f.rabbitMgmtURLEnv != "" {
		return fromEnv(f.rabbitMgmtURLEnv, "--rabbitmq-management-url-env")
	}
	return f.rabbitMgmtURL, nil
}

// tlsOverrides applies a CA file and a server name given as flags.
func (f *queueFlags) tlsOverrides(cfg *tls.Config, caFile, serverName string) error {
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("reading the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate (-----BEGIN CERTIFICATE-----)", caFile)
		}
		cfg.RootCAs = pool
	}
	if serverName != "" {
		cfg.ServerName = serverName
	}
	return nil
}

// fromEnv reads a credential from the environment variable a flag names.
func fromEnv(name, flag string) (string, error) {
	v, ok := os.LookupEnv(name)
	if !ok {
		return "", fmt.Errorf("%s names the environment variable %s, which is not set: export it first", flag, name)
	}
	return v, nil
}

// serviceOf guesses the Service behind a cluster address: the first label of
// redis.ns.svc.cluster.local, a placeholder for an IP address.
func serviceOf(addr string) string {
	h := queue.HostOf(addr)
	if net.ParseIP(h) != nil {
		return "<redis-service>"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		return h[:i]
	}
	return h
}

func portOnly(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return "6379"
}
