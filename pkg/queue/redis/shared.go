package redis

import (
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// The operator's probes share their clients: one go-redis client per server,
// credentials, database and TLS settings, whatever the number of QueueJobs on it. A
// client holds a connection per probe in progress, not one per QueueJob: at 1 000
// QueueJobs on one server, a few connections instead of a thousand (each ~12 KiB of the
// manager's heap and a file descriptor, and a client of the server's).

// sharedPoolSize bounds the connections of a shared client. Probes wait for a free one
// (up to the timeout); the manager runs --max-concurrent-reconciles (4) at once.
const sharedPoolSize = 16

// SharedClients is a set of clients shared by identity.
type SharedClients struct {
	mu      sync.Mutex
	clients map[string]*sharedClient
}

type sharedClient struct {
	client *goredis.Client
	users  int
}

// ProbeClients are the operator's shared probe clients.
var ProbeClients = &SharedClients{}

// Get returns the client of id, made from o if it has none; id must name everything of
// o a connection depends on (address, credentials, database, TLS settings), and
// nothing else. Each Get is paired with one call of the release it returns, which
// closes the client after its last user.
func (s *SharedClients) Get(id string, o Options) (*goredis.Client, func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.clients == nil {
		s.clients = map[string]*sharedClient{}
	}
	sc, ok := s.clients[id]
	if !ok {
		opts := probeClientOptions(&o)
		opts.PoolSize = sharedPoolSize
		sc = &sharedClient{client: goredis.NewClient(opts)}
		s.clients[id] = sc
	}
	sc.users++
	var once sync.Once
	return sc.client, func() (err error) {
		once.Do(func() { err = s.release(id, sc) })
		return err
	}
}

func (s *SharedClients) release(id string, sc *sharedClient) error {
	s.mu.Lock()
	sc.users--
	last := sc.users == 0
	if last && s.clients[id] == sc {
		delete(s.clients, id)
	}
	s.mu.Unlock()
	if !last {
		return nil
	}
	return sc.client.Close()
}

// Len is how many clients are open.
func (s *SharedClients) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}

// NewShared returns a connection to the list of o on the shared client of id (see
// SharedClients.Get); Close releases the client.
func NewShared(clients *SharedClients, id string, o Options) *Conn {
	client, release := clients.Get(id, o)
	return newConn(o, client, release)
}
