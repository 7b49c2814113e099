package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// parseQueueFlags parses args into queue flags as enqueue and inspect do.
func parseQueueFlags(t *testing.T, args []string) (*queueFlags, *cobra.Command) {
	t.Helper()
	f := &queueFlags{}
	cmd := &cobra.Command{Use: "x"}
	f.add(cmd.Flags())
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return f, cmd
}

// TestQueueFlags: which flags give a whole queue (no QueueJob is read, every argument is
// an item), and which combinations are refused before anything is read.
func TestQueueFlags(t *testing.T) {
	cases := []struct {
		name           string
		args           []string
		wantStandalone bool
		wantErr        string
	}{
		{name: "none", args: nil},
		{name: "redis address and key", args: []string{"--redis-address", "127.0.0.1:6379", "--redis-key", "k"}, wantStandalone: true},
		{name: "redis address alone replaces the QueueJob's", args: []string{"--redis-address", "127.0.0.1:6379"}},
		{name: "rabbitmq url and queue", args: []string{"--rabbitmq-url", "amqp://h/", "--rabbitmq-queue", "q"}, wantStandalone: true},
		{name: "rabbitmq url env and queue", args: []string{"--rabbitmq-url-env", "U", "--rabbitmq-queue", "q"}, wantStandalone: true},
		{name: "rabbitmq queue alone", args: []string{"--rabbitmq-queue", "q"}},
		{name: "both backends", args: []string{"--redis-key", "k", "--rabbitmq-queue", "q"}, wantErr: "both --redis-* and --rabbitmq-*"},
		{name: "two URLs", args: []string{"--rabbitmq-url", "amqp://h/", "--rabbitmq-url-env", "U"}, wantErr: "at most one of --rabbitmq-url and --rabbitmq-url-env"},
		{name: "two management URLs", args: []string{"--rabbitmq-management-url", "http://h", "--rabbitmq-management-url-env", "M"}, wantErr: "at most one of --rabbitmq-management-url"},
		{name: "redis address, stream and group", args: []string{"--redis-address", "127.0.0.1:6379", "--redis-stream", "s", "--redis-group", "g"}, wantStandalone: true},
		{name: "redis stream alone replaces the QueueJob's", args: []string{"--redis-stream", "s"}},
		{name: "redis address and stream without a group replace the QueueJob's", args: []string{"--redis-address", "127.0.0.1:6379", "--redis-stream", "s"}},
		{name: "redis key and stream", args: []string{"--redis-key", "k", "--redis-stream", "s"}, wantErr: "set one or the other"},
		{name: "redis stream and rabbitmq", args: []string{"--redis-stream", "s", "--rabbitmq-queue", "q"}, wantErr: "both --redis-* and --rabbitmq-*"},
		{name: "db out of range", args: []string{"--redis-db", "256"}, wantErr: "--redis-db must be between 0 and 255"},
		{name: "nats url, stream and consumer", args: []string{"--nats-url", "nats://h:4222", "--nats-stream", "s", "--nats-consumer", "c"}, wantStandalone: true},
		{name: "nats stream alone replaces the QueueJob's", args: []string{"--nats-stream", "s"}},
		{name: "nats url and stream without a consumer replace the QueueJob's", args: []string{"--nats-url", "nats://h:4222", "--nats-stream", "s"}},
		{name: "nats user without a password", args: []string{"--nats-user", "alice"}, wantErr: "--nats-user needs --nats-password-env"},
		{name: "nats password without a user", args: []string{"--nats-password-env", "PW"}, wantErr: "--nats-password-env needs --nats-user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, cmd := parseQueueFlags(t, tc.args)
			err := f.check(cmd)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := f.standalone(); got != tc.wantStandalone {
				t.Errorf("standalone() = %v, want %v", got, tc.wantStandalone)
			}
		})
	}
}

// TestFlagTargetCredentials: credentials come from the environment variable a flag names;
// an unset one is an error that names it, and no message quotes an AMQP URL.
func TestFlagTargetCredentials(t *testing.T) {
	t.Setenv("QJ_PW", "pw-value")
	f, _ := parseQueueFlags(t, []string{"--redis-address", "h:1", "--redis-key", "k", "--redis-password-env", "QJ_PW", "--redis-username", "alice"})
	tg, err := f.flagTarget()
	if err != nil {
		t.Fatal(err)
	}
	if tg.Redis.Password != "pw-value" || tg.Redis.Username != "alice" || tg.Redis.TLS != nil {
		t.Errorf("redis options %+v", tg.Redis)
	}
	if strings.Contains(tg.where(), "pw-value") {
		t.Errorf("where() = %q holds the password", tg.where())
	}

	f, _ = parseQueueFlags(t, []string{"--redis-address", "h:1", "--redis-key", "k", "--redis-password-env", "QJ_UNSET_VARIABLE"})
	if _, err := f.flagTarget(); err == nil || !strings.Contains(err.Error(), "QJ_UNSET_VARIABLE, which is not set") {
		t.Errorf("error %v, want the variable named", err)
	}

	t.Setenv("QJ_URL", "amqp://user:very-secret@broker.example:5673/vh")
	f, _ = parseQueueFlags(t, []string{"--rabbitmq-url-env", "QJ_URL", "--rabbitmq-queue", "q"})
	if tg, err = f.flagTarget(); err != nil {
		t.Fatal(err)
	}
	if got, want := tg.where(), `RabbitMQ broker.example:5673, queue "q"`; got != want {
		t.Errorf("where() = %q, want %q", got, want)
	}

	f, _ = parseQueueFlags(t, []string{"--redis-address", "h:1", "--redis-key", "k", "--redis-tls-ca", "/nonexistent/ca.pem"})
	if _, err := f.flagTarget(); err == nil || !strings.Contains(err.Error(), "reading the CA file") {
		t.Errorf("error %v, want the CA file named", err)
	}
}

// TestOutputFlag: -o takes json or yaml only, checked before anything is read.
func TestOutputFlag(t *testing.T) {
	r := run(t, "", "inspect", "x", "-o", "wide")
	wantErr(t, r, `unknown output format "wide"`)
}

// TestProgress: a terminal gets one line rewritten at most every interval; a log gets a
// line every `every` items.
func TestProgress(t *testing.T) {
	clock := time.Unix(0, 0)
	now := func() time.Time { return clock }

	var log bytes.Buffer
	p := newProgress(&log, 100, now)
	for range 350 {
		clock = clock.Add(time.Millisecond)
		p.add(1)
	}
	p.done()
	if got := strings.Count(log.String(), "\n"); got != 3 {
		t.Errorf("%d lines for 350 items every 100, want 3:\n%s", got, log.String())
	}
	if !strings.Contains(log.String(), "enqueued 300 items (1000/s)") {
		t.Errorf("progress lines:\n%s", log.String())
	}

	var tty bytes.Buffer
	p = newProgress(&tty, 100, now)
	p.terminal = true
	for range 1000 {
		clock = clock.Add(time.Millisecond) // 1s in all: 4 lines at 250ms
		p.add(1)
	}
	p.done()
	if got := strings.Count(tty.String(), "\r"); got != 5 {
		t.Errorf("%d rewrites in 1s at most every 250ms, want 4 and the last:\n%q", got, tty.String())
	}
	if !strings.HasSuffix(tty.String(), "\renqueued 1000 items (1000/s)\n") {
		t.Errorf("terminal progress ends %q", tty.String())
	}
	var nothing *progress
	nothing.add(1) // --quiet
	nothing.done()
}

// TestEnqueueFIFOOnNATS: --fifo is refused before anything is read, saying that a NATS
// stream is first in, first out (not RabbitMQ's words).
func TestEnqueueFIFOOnNATS(t *testing.T) {
	r := run(t, "", "enqueue", "--nats-url", "nats://127.0.0.1:1", "--nats-stream", "s", "--nats-consumer", "c", "--fifo", "a")
	wantErr(t, r, "--fifo", "a NATS stream is first in, first out")
	if strings.Contains(r.err.Error(), "RabbitMQ") {
		t.Errorf("error %q names RabbitMQ", r.err)
	}
}

// Flags a field short of a whole queue, without a QueueJob, are an error that names the
// missing flag: no QueueJob is needed with it.
func TestFlagsShortOfAQueue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{args: []string{"inspect", "--nats-url", "nats://127.0.0.1:1", "--nats-stream", "s"}, want: "--nats-url and --nats-stream need --nats-consumer"},
		{args: []string{"inspect", "--redis-address", "127.0.0.1:1", "--redis-stream", "s"}, want: "--redis-stream needs --redis-group"},
		{args: []string{"enqueue", "--nats-url", "nats://127.0.0.1:1", "--nats-stream", "s", "a"}, want: "--nats-url and --nats-stream need --nats-consumer"},
	} {
		wantErr(t, run(t, "", tc.args...), tc.want, "or name the QueueJob")
	}
}
