package servers

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A TLS nats-server with a token accepts TLS clients that trust its CA and give the token,
// and nothing else; its JetStream store survives Stop and Start; Pause freezes it; Close
// leaves neither its process nor its directory.
func TestStartNATS(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := StartNATSWith(NATSOptions{TLS: ca, Token: "s3cret-" + RandomString(8)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	t.Logf("nats-server %s started in %s", NATSServerVersion, time.Since(start))
	connect := func(opts ...natsgo.Option) (*natsgo.Conn, error) {
		return natsgo.Connect(n.URL(), append(opts, natsgo.Timeout(2*time.Second), natsgo.NoReconnect())...)
	}
	if nc, err := connect(natsgo.Token("wrong")); err == nil {
		nc.Close()
		t.Error("a client with the wrong token connected")
	}
	if nc, err := connect(natsgo.Token(n.Token())); err == nil {
		nc.Close()
		t.Error("a client that trusts only the system's roots accepted the test CA's certificate")
	}
	nc, err := connect(natsgo.Token(n.Token()), natsgo.Secure(clientTLS(t, ca)))
	if err != nil {
		t.Fatalf("TLS with the CA and the token: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "kept", Subjects: []string{"kept"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("creating a stream: %v", err)
	}
	if _, err := js.Publish(ctx, "kept", []byte("item")); err != nil {
		t.Fatalf("publishing: %v", err)
	}
	nc.Close()

	n.Stop()
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	nc, err = connect(natsgo.Token(n.Token()), natsgo.Secure(clientTLS(t, ca)))
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	defer nc.Close()
	js, _ = jetstream.New(nc)
	s, err := js.Stream(ctx, "kept")
	if err != nil || s.CachedInfo().State.Msgs != 1 {
		t.Fatalf("after a restart, the stream = %v; want it with its message", err)
	}

	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(time.Second); err == nil {
		t.Error("a paused server answered")
	}
	if err := n.Resume(); err != nil {
		t.Fatal(err)
	}

	pid, dir := n.PID(), n.Dir()
	n.Close()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("nats-server (pid %d) still runs after Close", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("its directory %s is still there after Close: %v", dir, err)
	}
}
