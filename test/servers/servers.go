// Package servers starts real queue servers for tests: redis-server and rabbitmq-server
// from the machine's packages (hack/install-servers.sh installs them), each on free
// loopback ports in a temporary directory, stopped when the test is done. Tests never
// assume a server is already running.
package servers

import (
	crand "crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StartTimeout bounds how long a server may take to accept connections.
var StartTimeout = 3 * time.Minute

// Server is a running server process.
type Server struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	args []string
	env  []string
	log  *os.File
	port int
	// host is the address the server listens on and clients dial: 127.0.0.1 unless the
	// options gave another.
	host string
	// detach: the server outlives this process (see RedisOptions.Detach).
	detach bool
}

// Port is the server's client port.
func (s *Server) Port() int { return s.port }

// Addr is the server's client address, host:port (127.0.0.1 unless the options gave a Host).
func (s *Server) Addr() string { return net.JoinHostPort(s.Host(), strconv.Itoa(s.port)) }

// Host is the address the server listens on.
func (s *Server) Host() string {
	if s.host == "" {
		return "127.0.0.1"
	}
	return s.host
}

// Dir is the server's directory: its data, configuration and log.
func (s *Server) Dir() string { return s.dir }

// PID is the server's process (and process group) id; 0 if it is not running.
func (s *Server) PID() int {
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) start() error {
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// Its own process group, so Stop reaches every process it starts; and killed if the
	// test binary dies first, unless it is detached: then it has a session of its own and
	// stays when this process exits.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		cmd.Stdin = nil
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(s.done) }()
	return nil
}

// Stop kills the server's process group and waits for it. The data directory stays, so
// Start can bring the server back with its data.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	s.cmd = nil
}

// Pause freezes the server's process group with SIGSTOP: its sockets stay open and the
// kernel still accepts connections, but nothing answers, as with a hung broker. Resume
// undoes it; Stop and Close work on a paused server.
//
// It returns once every thread of the group has stopped: kill only queues the signal, and
// a thread running on another core can still answer a request sent right after it.
func (s *Server) Pause() error {
	if s.cmd == nil {
		return fmt.Errorf("%s is not running", s.args[0])
	}
	pgid := s.cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for !groupStopped(pgid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: its threads did not all stop within 10s of SIGSTOP", s.args[0])
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// groupStopped reports whether every thread of every process of the process group pgid
// is stopped (state T or t in /proc), or dead.
func groupStopped(pgid int) bool {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range stats {
		_, pgrp, ok := procState(stat)
		if !ok || pgrp != pgid {
			continue
		}
		tasks, _ := filepath.Glob(filepath.Join(filepath.Dir(stat), "task", "*", "stat"))
		for _, task := range tasks {
			if state, _, ok := procState(task); ok && !strings.ContainsAny(state, "TtZX") {
				return false
			}
		}
	}
	return true
}

// procState reads the state and process group of a /proc stat file; false if it is gone.
func procState(path string) (state string, pgrp int, ok bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
	i := strings.LastIndex(string(b), ") ")
	if i < 0 {
		return "", 0, false
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 3 {
		return "", 0, false
	}
	pgrp, err = strconv.Atoi(f[2])
	return f[0], pgrp, err == nil
}

// Resume continues a server that Pause froze (SIGCONT); it does nothing to a server that
// is not paused or not running.
func (s *Server) Resume() error {
	if s.cmd == nil {
		return nil
	}
	return syscall.Kill(-s.cmd.Process.Pid, syscall.SIGCONT)
}

// Start starts a stopped server again on the same port and data and waits until it
// accepts connections.
func (s *Server) Start(ready func() error) error {
	if err := s.start(); err != nil {
		return err
	}
	return s.waitReady(ready)
}

func (s *Server) waitReady(ready func() error) error {
	deadline := time.Now().Add(StartTimeout)
	var err error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			log, _ := os.ReadFile(s.log.Name())
			return fmt.Errorf("%s exited while starting; its log:\n%s", s.args[0], tail(log, 3000))
		default:
		}
		if err = ready(); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not become ready within %s: %v", s.args[0], StartTimeout, err)
}

// Close stops the server and removes its directory.
func (s *Server) Close() {
	s.Stop()
	_ = s.log.Close()
	_ = os.RemoveAll(s.dir)
}

func newServer(name string, ports int) (*Server, []int, error) {
	dir, err := os.MkdirTemp("", "queuejob-"+name+"-")
	if err != nil {
		return nil, nil, err
	}
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, nil, err
	}
	ps, err := FreePorts(ports)
	if err != nil {
		return nil, nil, err
	}
	return &Server{dir: dir, log: log, port: ps[0]}, ps, nil
}

// FreePorts returns n distinct loopback ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func lookPath(bin string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s is not installed: run hack/install-servers.sh (apt-get install redis-server rabbitmq-server)", bin)
	}
	return p, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// StartRedis starts redis-server on a free port, without persistence; with a non-empty
// password it requires it.
func StartRedis(password string) (*Server, error) {
	return StartRedisWith(RedisOptions{Password: password})
}

// RedisOptions are the settings of a test redis-server.
type RedisOptions struct {
	// Password, if set, is the default user's password (requirepass).
	Password string
	// Users are ACL rules, one user each, as in redis.conf's "user" directive, e.g.
	// "alice on >pw ~* +@all".
	Users []string
	// TLS, if set, makes the server accept only TLS connections (port 0, tls-port), with
	// a certificate that this CA issues for ServerHosts. Clients need no certificate.
	TLS *CA
	// Host is the address to listen on; empty: 127.0.0.1. Pods of a local cluster reach
	// a server on the node's address.
	Host string
	// Detach makes the server outlive this process (a session of its own, no parent-death
	// signal): stop it with its PID. For `make demo`, never for tests.
	Detach bool
}

// StartRedisWith starts redis-server on a free port, without persistence.
func StartRedisWith(o RedisOptions) (*Server, error) {
	bin, err := lookPath("redis-server")
	if err != nil {
		return nil, err
	}
	s, _, err := newServer("redis", 1)
	if err != nil {
		return nil, err
	}
	s.host, s.detach = o.Host, o.Detach
	s.args = []string{bin, "--bind", s.Host(), "--dir", s.dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"}
	if o.TLS == nil {
		s.args = append(s.args, "--port", strconv.Itoa(s.port))
	} else {
		files, err := o.TLS.WriteServerCert(s.dir, ServerHosts...)
		if err != nil {
			s.Close()
			return nil, err
		}
		// Plain TCP off: a client that does not speak TLS gets nowhere.
		s.args = append(s.args, "--port", "0", "--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", files.Cert, "--tls-key-file", files.Key, "--tls-ca-cert-file", files.CACert,
			"--tls-auth-clients", "no")
	}
	if o.Password != "" {
		s.args = append(s.args, "--requirepass", o.Password)
	}
	for _, u := range o.Users {
		// redis-server quotes each argument: the rules must be arguments of their own.
		s.args = append(append(s.args, "--user"), strings.Fields(u)...)
	}
	if err := s.Start(func() error { return dialable(s.Addr()) }); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// RabbitMQ is a running rabbitmq-server with its management plugin and its own epmd, all
// on free ports.
type RabbitMQ struct {
	*Server
	epmd     *Server
	mgmtPort int
	// With TLS: the amqps listener and the management API's https listener.
	tlsPort, mgmtTLSPort int
	// user and password of the broker's only user on a non-loopback Host; empty: guest.
	user, password string
}

// RabbitMQOptions are the settings of a test rabbitmq-server.
type RabbitMQOptions struct {
	// TLS, if set, adds an amqps listener and an https listener of the management API
	// (besides the plain ones), with a certificate that this CA issues for ServerHosts.
	// Clients need no certificate.
	TLS *CA
	// Host is the address the AMQP and management listeners bind to; empty: 127.0.0.1.
	// On any other address there is no guest user: the broker's only user has a random
	// name and password (URL and the other URLs carry them), so that a broker reachable
	// from other hosts, as pods of a local cluster must reach it, is not open to them.
	Host string
	// Detach makes the broker and its epmd outlive this process (RedisOptions.Detach).
	Detach bool
}

// TLSURL is the broker's amqps URL with the guest user; empty without TLS.
func (r *RabbitMQ) TLSURL() string {
	if r.tlsPort == 0 {
		return ""
	}
	return "amqps://" + r.userinfo() + "@" + net.JoinHostPort(r.Host(), strconv.Itoa(r.tlsPort)) + "/"
}

// ManagementTLSURL is the https URL of the management API with the guest user's
// credentials; empty without TLS.
func (r *RabbitMQ) ManagementTLSURL() string {
	if r.mgmtTLSPort == 0 {
		return ""
	}
	return "https://" + r.userinfo() + "@" + net.JoinHostPort(r.Host(), strconv.Itoa(r.mgmtTLSPort))
}

// URL is the broker's AMQP URL with the default guest user (allowed from loopback), or
// with the random user of a broker on another host address.
func (r *RabbitMQ) URL() string { return "amqp://" + r.userinfo() + "@" + r.Addr() + "/" }

// userinfo is user:password of the broker's user.
func (r *RabbitMQ) userinfo() string {
	if r.user == "" {
		return "guest:guest"
	}
	return r.user + ":" + r.password
}

// ManagementURL is the URL of the broker's management API (the rabbitmq_management plugin)
// with the guest user's credentials.
func (r *RabbitMQ) ManagementURL() string {
	return "http://" + r.userinfo() + "@" + net.JoinHostPort(r.Host(), strconv.Itoa(r.mgmtPort))
}

// EPMD is the broker's own epmd (Erlang's port mapper), a server of its own.
func (r *RabbitMQ) EPMD() *Server { return r.epmd }

// ManagementPort is the port of the broker's management API.
func (r *RabbitMQ) ManagementPort() int { return r.mgmtPort }

// ManagementStatsInterval is how often the test broker's management plugin updates its
// counts (collect_statistics_interval; RabbitMQ's default is 5s).
const ManagementStatsInterval = 500 * time.Millisecond

// Start starts a stopped broker again on the same ports and data and waits until ready
// accepts its AMQP URL and the management API accepts connections (its listener starts
// after AMQP's).
func (r *RabbitMQ) Start(ready func(url string) error) error {
	ports := []int{r.mgmtPort}
	if r.tlsPort != 0 {
		ports = append(ports, r.tlsPort, r.mgmtTLSPort)
	}
	return r.Server.Start(func() error {
		if err := ready(r.URL()); err != nil {
			return err
		}
		for _, p := range ports {
			if err := dialable(net.JoinHostPort(r.Host(), strconv.Itoa(p))); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close stops the broker and its epmd and removes their directories.
func (r *RabbitMQ) Close() {
	r.Server.Close()
	r.epmd.Close()
}

// StartRabbitMQ starts rabbitmq-server on free ports with its state in a temporary
// directory. It takes several seconds: start one per test suite.
func StartRabbitMQ(ready func(url string) error) (*RabbitMQ, error) {
	return StartRabbitMQWith(ready, RabbitMQOptions{})
}

// StartRabbitMQWith is StartRabbitMQ with options.
func StartRabbitMQWith(ready func(url string) error, o RabbitMQOptions) (*RabbitMQ, error) {
	if _, err := lookPath("rabbitmq-server"); err != nil {
		return nil, err
	}
	// Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user; the script it
	// wraps runs as anyone and honours RABBITMQ_* variables.
	bin := "/usr/lib/rabbitmq/bin/rabbitmq-server"
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s not found: run hack/install-servers.sh", bin)
	}
	epmdBin, err := lookPath("epmd")
	if err != nil {
		return nil, err
	}
	s, ports, err := newServer("rabbitmq", 6)
	if err != nil {
		return nil, err
	}
	epmd, _, err := newServer("epmd", 1)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.host, s.detach = o.Host, o.Detach
	epmd.detach = o.Detach
	epmd.port = ports[2]
	epmd.args = []string{epmdBin, "-port", strconv.Itoa(epmd.port)}
	if err := epmd.Start(func() error { return dialable(epmd.Addr()) }); err != nil {
		s.Close()
		epmd.Close()
		return nil, err
	}
	for _, d := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	plugins := filepath.Join(s.dir, "enabled_plugins")
	if err := os.WriteFile(plugins, []byte("[rabbitmq_management].\n"), 0o644); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("management.tcp.ip = %s\nmanagement.tcp.port = %d\n"+
		"collect_statistics_interval = %d\n", s.Host(), ports[3], ManagementStatsInterval.Milliseconds())
	r := &RabbitMQ{Server: s, epmd: epmd, mgmtPort: ports[3]}
	if s.Host() != "127.0.0.1" {
		// No guest: a random administrator, which the URLs carry.
		r.user, r.password = "qj-"+RandomString(8), RandomString(24)
		conf += fmt.Sprintf("default_user = %s\ndefault_pass = %s\ndefault_user_tags.administrator = true\n", r.user, r.password)
	}
	if o.TLS != nil {
		files, err := o.TLS.WriteServerCert(s.dir, ServerHosts...)
		if err != nil {
			return nil, err
		}
		r.tlsPort, r.mgmtTLSPort = ports[4], ports[5]
		conf += fmt.Sprintf("listeners.ssl.1 = %[6]s:%[1]d\n"+
			"ssl_options.cacertfile = %[2]s\nssl_options.certfile = %[3]s\nssl_options.keyfile = %[4]s\n"+
			"ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"+
			"management.ssl.ip = %[6]s\nmanagement.ssl.port = %[5]d\n"+
			"management.ssl.cacertfile = %[2]s\nmanagement.ssl.certfile = %[3]s\nmanagement.ssl.keyfile = %[4]s\n",
			r.tlsPort, files.CACert, files.Cert, files.Key, r.mgmtTLSPort, s.Host())
	}
	if err := os.WriteFile(filepath.Join(s.dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	s.args = []string{bin}
	s.env = []string{
		"HOME=" + s.dir, // the Erlang cookie
		"RABBITMQ_NODENAME=rabbit-" + strconv.Itoa(s.port) + "@localhost",
		"RABBITMQ_NODE_IP_ADDRESS=" + s.Host(),
		"RABBITMQ_NODE_PORT=" + strconv.Itoa(s.port),
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(ports[1]),
		"ERL_EPMD_PORT=" + strconv.Itoa(epmd.port),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(s.dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(s.dir, "log"),
		"RABBITMQ_LOGS=-",
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + plugins,
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(s.dir, "rabbitmq"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(s.dir, "advanced.config"),
		"RABBITMQ_PID_FILE=" + filepath.Join(s.dir, "rabbitmq.pid"),
	}
	if err := r.Start(ready); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// Silent accepts TCP connections on a free loopback port and never answers, as a
// black-holed broker does. It returns the address and a function that closes the listener
// and every connection it accepted.
func Silent() (addr string, stop func(), err error) {
	addr, stop, _, err = SilentCounting()
	return addr, stop, err
}

// SilentCounting is Silent that also returns a function counting the connections
// accepted so far.
func SilentCounting() (addr string, stop func(), accepted func() int, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	stop = func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}
	accepted = func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
	return l.Addr().String(), stop, accepted, nil
}

// RandomString is n random lowercase letters and digits, for passwords and user names.
func RandomString(n int) string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	if _, err := crand.Read(b); err != nil {
		panic(err)
	}
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	return string(b)
}
