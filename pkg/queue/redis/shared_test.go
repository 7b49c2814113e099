package redis

import (
	"fmt"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// probeConnections counts the server's clients but c's own connection.
func probeConnections(t *testing.T, c *goredis.Client) int {
	t.Helper()
	id, err := c.ClientID(ctx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ClientList(ctx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.HasPrefix(line, fmt.Sprintf("id=%d ", id)) && strings.Contains(line, " cmd=") {
			n++
		}
	}
	return n
}

func TestSharedClientsOneClientPerServer(t *testing.T) {
	shared := &SharedClients{}
	producer := rdb(t)
	if err := producer.Ping(ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	base := probeConnections(t, producer)
	const n = 100
	conns := make([]*Conn, n)
	for i := range conns {
		k := fmt.Sprintf("%s-%d", key(t), i)
		if err := producer.RPush(ctx(t), k, "a", "b").Err(); err != nil {
			t.Fatal(err)
		}
		conns[i] = NewShared(shared, "server-1", Options{Address: redisServer.Addr(), Key: k})
	}
	other := NewShared(shared, "server-1-db-2", Options{Address: redisServer.Addr(), Key: key(t), DB: 2})
	defer other.Close()
	for i, c := range conns {
		counts, err := c.Probe(ctx(t))
		if err != nil || counts.Ready != 2 {
			t.Fatalf("probe %d: %+v, %v; want 2 ready: each connection probes its own key", i, counts, err)
		}
	}
	if _, err := other.Probe(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if got := shared.Len(); got != 2 {
		t.Errorf("%d clients for two ids, want 2", got)
	}
	// One probe at a time: one connection of each client.
	if got := probeConnections(t, producer) - base; got != 2 {
		t.Errorf("%d connections to the server for %d QueueJobs' probes on two ids, want 2", got, n+1)
	}

	for _, c := range conns[1:] {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	_ = conns[1].Close() // a second Close releases nothing more
	if counts, err := conns[0].Probe(ctx(t)); err != nil || counts.Ready != 2 {
		t.Fatalf("the last connection of the id after the others closed: %+v, %v", counts, err)
	}
	if err := conns[0].Close(); err != nil {
		t.Fatal(err)
	}
	if got := shared.Len(); got != 1 {
		t.Errorf("%d clients after every connection of one id closed, want 1", got)
	}
	if _, err := conns[0].Probe(ctx(t)); err == nil {
		t.Error("a probe on a client closed after its last user succeeded")
	}
	// The id's next connection gets a new client.
	again := NewShared(shared, "server-1", Options{Address: redisServer.Addr(), Key: key(t) + "-0"})
	defer again.Close()
	if counts, err := again.Probe(ctx(t)); err != nil || counts.Ready != 2 {
		t.Fatalf("a connection after the client closed: %+v, %v", counts, err)
	}
}
