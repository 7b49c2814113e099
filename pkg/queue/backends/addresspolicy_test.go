package backends

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDNS is a seam: the names it knows and their addresses; any other name does not
// resolve. It counts the lookups.
type fakeDNS struct {
	names   map[string][]string
	lookups []string
}

func (d *fakeDNS) lookup(_ context.Context, host string) ([]netip.Addr, error) {
	d.lookups = append(d.lookups, host)
	ips, ok := d.names[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	var out []netip.Addr
	for _, ip := range ips {
		out = append(out, netip.MustParseAddr(ip))
	}
	return out, nil
}

func TestAddressPolicyAllows(t *testing.T) {
	dns := map[string][]string{
		"inside.example":    {"10.1.2.3"},
		"inside-v6.example": {"10.1.2.3", "fd00::7"},
		"straddles.example": {"10.1.2.3", "192.168.1.1"},
		"outside.example":   {"192.168.1.1"},
		"localhost":         {"127.0.0.1", "::1"},
		"nothing.example":   {},
	}
	cases := []struct {
		name, policy, addr string
		want               bool
		// lookups are the names the check resolved.
		lookups []string
	}{
		{name: "no policy allows anything", policy: "", addr: "anywhere.example:22", want: true},
		{name: "an IP in a CIDR", policy: "10.0.0.0/8", addr: "10.1.2.3:6379", want: true},
		{name: "an IP outside", policy: "10.0.0.0/8", addr: "192.168.1.1:6379"},
		{name: "an IPv4-mapped IPv6 address in an IPv4 CIDR", policy: "10.0.0.0/8", addr: "[::ffff:10.1.2.3]:6379", want: true},
		{name: "an IPv6 address in an IPv6 CIDR", policy: "fd00::/8", addr: "[fd00::1]:6379", want: true},
		{name: "a CIDR with a port, that port", policy: "10.0.0.0/8:6379", addr: "10.1.2.3:6379", want: true},
		{name: "a CIDR with a port, another port", policy: "10.0.0.0/8:6379", addr: "10.1.2.3:22"},
		{name: "an IP entry", policy: "10.1.2.3", addr: "10.1.2.3:5672", want: true},
		{name: "an IP entry, another IP", policy: "10.1.2.3", addr: "10.1.2.4:5672"},
		{name: "an IPv6 entry with a port", policy: "[fd00::1]:6379", addr: "[fd00::1]:6379", want: true},
		{name: "a name", policy: "redis.prod:6379", addr: "redis.prod:6379", want: true},
		{name: "a name in another case, with a final dot", policy: "redis.prod:6379", addr: "REDIS.Prod.:6379", want: true},
		{name: "a name, another port", policy: "redis.prod:6379", addr: "redis.prod:6380"},
		{name: "a name is not a suffix", policy: "redis.prod", addr: "x.redis.prod:6379"},
		{name: "a name without a port in the entry, any port", policy: "redis.prod", addr: "redis.prod:22", want: true},
		{name: "an address without a port, an entry with one", policy: "redis.prod:6379", addr: "redis.prod"},
		{name: "a wildcard", policy: "*.svc.cluster.local", addr: "redis.ns.svc.cluster.local:6379", want: true},
		{name: "a wildcard is not its own domain", policy: "*.svc.cluster.local", addr: "svc.cluster.local:6379"},
		{name: "a wildcard matches whole labels", policy: "*.svc.cluster.local", addr: "evilsvc.cluster.local:6379"},
		{name: "a pattern is not resolved", policy: "*.svc.cluster.local", addr: "redis.ns.svc.cluster.local:6379", want: true},
		{name: "a pattern never matches an IP", policy: "*.2.3", addr: "10.1.2.3:6379"},
		{name: "a name resolved inside a CIDR", policy: "10.0.0.0/8", addr: "inside.example:6379", want: true,
			lookups: []string{"inside.example"}},
		{name: "a name every address of which is inside", policy: "10.0.0.0/8,fd00::/8", addr: "inside-v6.example:6379", want: true,
			lookups: []string{"inside-v6.example"}},
		{name: "a name with one address outside", policy: "10.0.0.0/8", addr: "straddles.example:6379",
			lookups: []string{"straddles.example"}},
		{name: "a name resolved outside", policy: "10.0.0.0/8", addr: "outside.example:6379", lookups: []string{"outside.example"}},
		{name: "a name that does not resolve", policy: "10.0.0.0/8", addr: "nowhere.example:6379", lookups: []string{"nowhere.example"}},
		{name: "a name with no address", policy: "10.0.0.0/8", addr: "nothing.example:6379", lookups: []string{"nothing.example"}},
		{name: "localhost, half of it allowed", policy: "127.0.0.0/8", addr: "localhost:6379", lookups: []string{"localhost"}},
		{name: "localhost, all of it allowed", policy: "127.0.0.0/8,::1", addr: "localhost:6379", want: true, lookups: []string{"localhost"}},
		{name: "a name and no CIDR: nothing to resolve", policy: "redis.prod", addr: "inside.example:6379"},
		{name: "a CIDR's port applies to the resolved name", policy: "10.0.0.0/8:6379", addr: "inside.example:22",
			lookups: []string{"inside.example"}},
		{name: "several entries, the second allows", policy: "redis.prod, 10.0.0.0/8", addr: "10.9.9.9:6379", want: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseAddressPolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			d := &fakeDNS{names: dns}
			p.lookup = d.lookup
			if got := p.Allows(context.Background(), tc.addr); got != tc.want {
				t.Errorf("policy %q allows %s = %v, want %v", tc.policy, tc.addr, got, tc.want)
			}
			if diff := cmp.Diff(tc.lookups, d.lookups); diff != "" {
				t.Errorf("names resolved (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseAddressPolicy(t *testing.T) {
	cases := []struct {
		name, list, want, err string
	}{
		{name: "empty", list: "", want: ""},
		{name: "blanks", list: " , ,", want: ""},
		{name: "each kind", list: "10.0.0.0/8, fd00::/8,10.1.2.3,[fd00::1]:6379, redis.prod:6379,*.svc.cluster.local",
			want: "10.0.0.0/8,fd00::/8,10.1.2.3,[fd00::1]:6379,redis.prod:6379,*.svc.cluster.local"},
		{name: "a CIDR out of range", list: "10.0.0.0/33", err: `entry "10.0.0.0/33"`},
		{name: "port 0", list: "redis:0", err: "the port must be"},
		{name: "a port too big", list: "redis:65536", err: "the port must be"},
		{name: "a star alone", list: "*", err: `entry "*"`},
		{name: "a star inside", list: "re*dis.prod", err: `entry "re*dis.prod"`},
		{name: "a star without a domain", list: "*.", err: `entry "*."`},
		{name: "a port alone", list: ":6379", err: `entry ":6379"`},
		{name: "an empty label", list: "a..b", err: `entry "a..b"`},
		{name: "a URL", list: "redis://redis.prod:6379", err: `entry "redis://redis.prod:6379"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParseAddressPolicy(tc.list)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), FlagAllowedAddresses) {
					t.Fatalf("ParseAddressPolicy(%q) = %v, want an error naming the flag and saying %q", tc.list, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := p.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if p.AllowsAll() != (tc.want == "") {
				t.Errorf("AllowsAll() = %v", p.AllowsAll())
			}
		})
	}
}
