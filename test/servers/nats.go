package servers

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// NATSServerVersion is the nats-server the tests run: built from the Go module
// github.com/nats-io/nats-server/v2 (Debian 12's nats-server package is v2.9, older than the
// JetStream API the backend is tested against) into a cache outside the clone, once.
const NATSServerVersion = "v2.15.3"

// NATSServerBin is the path of the cached nats-server binary, building it first if the cache
// lacks it (`go install`, which leaves go.mod alone; cold: a minute or two on 2 cores). One
// builder at a time: a second caller waits on the cache's lock and finds the binary.
func NATSServerBin() (string, error) {
	dir := os.Getenv("NATS_SERVER_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(cache, "queuejob-operator", "nats-server", NATSServerVersion)
	}
	bin := filepath.Join(dir, "nats-server")
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer func() { _ = lock.Close() }()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	cmd := exec.Command("go", "install", "github.com/nats-io/nats-server/v2@"+NATSServerVersion)
	cmd.Dir = dir // outside any module: go install pkg@version builds it on its own
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building nats-server %s: %v\n%s", NATSServerVersion, err, out)
	}
	return bin, nil
}

// NATS is a running nats-server with JetStream, its store in the server's directory.
type NATS struct {
	*Server
	user, password, token string
	tls                   bool
}

// NATSOptions are the settings of a test nats-server.
type NATSOptions struct {
	// User and Password, if set, are the only user's; Token, if set, is the token every
	// client must give; NKey, if set, is the public NKey (U...) of the only user, who
	// signs the server's nonce with its seed. At most one of the three.
	User, Password, Token, NKey string
	// TLS, if set, makes the server accept only TLS clients, with a certificate that this CA
	// issues for ServerHosts. Clients need no certificate.
	TLS *CA
	// Host is the address to listen on; empty: 127.0.0.1.
	Host string
	// Detach makes the server outlive this process (RedisOptions.Detach).
	Detach bool
}

// NATSMaxPayload is the test server's largest message (the server's default is 1 MB; the
// conformance suite enqueues a 1.2 MB item).
const NATSMaxPayload = 8 << 20

// URL is the server's client URL, without credentials: nats:// (tls:// with TLS).
func (n *NATS) URL() string {
	scheme := "nats"
	if n.tls {
		scheme = "tls"
	}
	return scheme + "://" + n.Addr()
}

// User and Password are the server's user's; Token its token (empty if it has none).
func (n *NATS) User() string     { return n.user }
func (n *NATS) Password() string { return n.password }
func (n *NATS) Token() string    { return n.token }

// Start starts a stopped server again on the same port and store and waits until it
// accepts connections.
func (n *NATS) Start() error {
	return n.Server.Start(func() error { return dialable(n.Addr()) })
}

// StartNATSWith starts nats-server with JetStream on a free port, its store in a temporary
// directory that Stop keeps and Close removes.
func StartNATSWith(o NATSOptions) (*NATS, error) {
	if kinds := btoi(o.User != "" || o.Password != "") + btoi(o.Token != "") + btoi(o.NKey != ""); kinds > 1 {
		return nil, fmt.Errorf("NATSOptions: set at most one of a user and password, a token or an NKey")
	}
	bin, err := NATSServerBin()
	if err != nil {
		return nil, err
	}
	s, _, err := newServer("nats", 1)
	if err != nil {
		return nil, err
	}
	s.host, s.detach = o.Host, o.Detach
	n := &NATS{Server: s, user: o.User, password: o.Password, token: o.Token, tls: o.TLS != nil}
	conf, err := natsConfig(s, o)
	if err != nil {
		s.Close()
		return nil, err
	}
	path := filepath.Join(s.dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		s.Close()
		return nil, err
	}
	s.args = []string{bin, "-c", path}
	if err := n.Start(); err != nil {
		s.Close()
		return nil, err
	}
	return n, nil
}

// natsConfig is the server's configuration file (strings quoted as JSON strings, which the
// NATS configuration format reads).
func natsConfig(s *Server, o NATSOptions) (string, error) {
	conf := fmt.Sprintf("listen: %q\nmax_payload: %d\nserver_name: %q\n"+
		"jetstream {\n  store_dir: %q\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}\n",
		net.JoinHostPort(s.Host(), strconv.Itoa(s.port)), NATSMaxPayload, "queuejob-test-"+strconv.Itoa(s.port),
		filepath.Join(s.dir, "jetstream"))
	switch {
	case o.Token != "":
		conf += fmt.Sprintf("authorization {\n  token: %q\n}\n", o.Token)
	case o.User != "":
		conf += fmt.Sprintf("authorization {\n  user: %q\n  password: %q\n}\n", o.User, o.Password)
	case o.NKey != "":
		conf += fmt.Sprintf("authorization {\n  users: [{nkey: %q}]\n}\n", o.NKey)
	}
	if o.TLS != nil {
		files, err := o.TLS.WriteServerCert(s.dir, ServerHosts...)
		if err != nil {
			return "", err
		}
		conf += fmt.Sprintf("tls {\n  cert_file: %q\n  key_file: %q\n  timeout: 5\n}\n", files.Cert, files.Key)
	}
	return conf, nil
}

// NATS starts a nats-server with JetStream (StartNATSWith).
func (g *Group) NATS(o NATSOptions) *NATS {
	if g.err != nil {
		return nil
	}
	n, err := StartNATSWith(o)
	if err != nil {
		g.err = fmt.Errorf("starting nats-server: %w", err)
		return nil
	}
	g.stops = append(g.stops, n.Close)
	return n
}

// Publisher is a core NATS connection to the server with its credentials (no TLS),
// closed after the test.
func (n *NATS) Publisher(t testing.TB) *natsgo.Conn {
	t.Helper()
	opts := []natsgo.Option{natsgo.Timeout(5 * time.Second)}
	switch {
	case n.token != "":
		opts = append(opts, natsgo.Token(n.token))
	case n.user != "":
		opts = append(opts, natsgo.UserInfo(n.user, n.password))
	}
	nc, err := natsgo.Connect(n.URL(), opts...)
	if err != nil {
		t.Fatalf("connecting to nats-server: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
