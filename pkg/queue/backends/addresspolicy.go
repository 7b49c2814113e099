package backends

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/queuejob/queuejob-operator/pkg/queue"
)

// FlagAllowedAddresses is the manager's flag that sets its AddressPolicy.
const FlagAllowedAddresses = "--allowed-queue-addresses"

// AddressPolicy is where the manager may connect to probe a queue (the flag
// --allowed-queue-addresses): whoever may create a QueueJob chooses its queue's address,
// and the manager connects there and, for Redis, writes to it (the reaper's LREM and
// RPUSH). The zero AddressPolicy allows every address.
//
// It is a list of entries, each one of:
//   - a CIDR, 10.0.0.0/8 or fd00::/8, or an IP address, 10.1.2.3: it allows IP addresses
//     in it; and a host name, when every address the name resolves to is in an allowed
//     CIDR (any one outside, or none at all, and the name is refused: otherwise a DNS
//     name could point anywhere);
//   - a host pattern: a name, redis.prod, or *. and a suffix, *.svc.cluster.local, that
//     allows every name ending in .svc.cluster.local (not svc.cluster.local itself). It
//     matches the host as written in the QueueJob (in any case, a final dot ignored), which
//     is not resolved: a name the administrator allows is trusted to point where they mean.
//
// Either may end with :port (redis.prod:6379, 10.0.0.0/8:5672, [fd00::1]:6379), and then
// allows that port alone. The names of a CIDR check are resolved before the probe
// connects, and resolved again by the connection itself: a name whose answers change in
// between (DNS rebinding) can get past a CIDR, not past a host pattern; for a hard limit,
// use the chart's NetworkPolicy too.
type AddressPolicy struct {
	entries []addressEntry
	// lookup resolves a host name; net.DefaultResolver's if nil.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
}

// addressEntry is one entry of an AddressPolicy: a prefix or a host pattern.
type addressEntry struct {
	text   string
	prefix netip.Prefix // valid for a CIDR or an IP address
	host   string       // a name, or "*." and a suffix
	port   int          // 0 for any port
}

// ParseAddressPolicy parses a comma-separated list of entries (see AddressPolicy);
// blank entries are ignored, and an empty list allows every address.
func ParseAddressPolicy(list string) (AddressPolicy, error) {
	var p AddressPolicy
	for _, text := range strings.Split(list, ",") {
		if text = strings.TrimSpace(text); text == "" {
			continue
		}
		e, err := parseAddressEntry(text)
		if err != nil {
			return AddressPolicy{}, fmt.Errorf("%s: entry %q: %w", FlagAllowedAddresses, text, err)
		}
		p.entries = append(p.entries, e)
	}
	return p, nil
}

func parseAddressEntry(text string) (addressEntry, error) {
	e := addressEntry{text: text}
	host := text
	if prefix, err := netip.ParsePrefix(text); err == nil {
		e.prefix = prefix.Masked()
		return e, nil
	}
	if h, port, err := net.SplitHostPort(text); err == nil {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return e, fmt.Errorf("the port must be a number from 1 to 65535")
		}
		host, e.port = h, n
	}
	if prefix, err := netip.ParsePrefix(host); err == nil {
		e.prefix = prefix.Masked()
		return e, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		e.prefix = netip.PrefixFrom(ip, ip.BitLen())
		return e, nil
	}
	e.host = normalHost(host)
	if !validHostPattern(e.host) {
		return e, fmt.Errorf("want a CIDR (10.0.0.0/8), an IP address, a host name (redis.prod) or *. and a " +
			"domain (*.svc.cluster.local), each with an optional :port")
	}
	return e, nil
}

// normalHost is a host as the policy compares it: lower case, without a final dot.
func normalHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// validHostPattern reports whether h is a host name, or "*." and one.
func validHostPattern(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			return false
		}
	}
	return true
}

// AllowsAll reports whether the policy allows every address.
func (p AddressPolicy) AllowsAll() bool { return len(p.entries) == 0 }

// String is the policy as the flag takes it.
func (p AddressPolicy) String() string {
	texts := make([]string, len(p.entries))
	for i, e := range p.entries {
		texts[i] = e.text
	}
	return strings.Join(texts, ",")
}

// Allows reports whether the manager may connect to addr, a host:port (or a host alone,
// which only entries without a port allow).
func (p AddressPolicy) Allows(ctx context.Context, addr string) bool {
	if p.AllowsAll() {
		return true
	}
	host, port := splitAddress(addr)
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.inPrefix(ip, port)
	}
	host = normalHost(host)
	for _, e := range p.entries {
		if e.host != "" && e.matchesName(host) && e.matchesPort(port) {
			return true
		}
	}
	return p.resolvesInside(ctx, host, port)
}

// resolvesInside reports whether a host name resolves, and every address it resolves to
// is in an allowed prefix.
func (p AddressPolicy) resolvesInside(ctx context.Context, host string, port int) bool {
	if !validHostPattern(host) || strings.HasPrefix(host, "*.") || !p.hasPrefixes() {
		return false
	}
	lookup := p.lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := lookup(ctx, host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !p.inPrefix(ip, port) {
			return false
		}
	}
	return true
}

func (p AddressPolicy) hasPrefixes() bool {
	for _, e := range p.entries {
		if e.prefix.IsValid() {
			return true
		}
	}
	return false
}

func (p AddressPolicy) inPrefix(ip netip.Addr, port int) bool {
	ip = ip.Unmap()
	for _, e := range p.entries {
		if e.prefix.IsValid() && e.prefix.Contains(ip) && e.matchesPort(port) {
			return true
		}
	}
	return false
}

func (e addressEntry) matchesName(host string) bool {
	if suffix, ok := strings.CutPrefix(e.host, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return host == e.host
}

func (e addressEntry) matchesPort(port int) bool { return e.port == 0 || e.port == port }

// splitAddress splits a host:port; a host alone has port 0.
func splitAddress(addr string) (host string, port int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return h, -1 // matches no entry with a port
	}
	return h, n
}

// Check returns an *Error of reason AddressNotAllowed, naming the field and the flag, if
// the policy refuses an address a connection of backend b would connect to for src; nil
// if it allows them all. It connects to nothing.
func (p AddressPolicy) Check(ctx context.Context, b *Backend, src Source) error {
	if p.AllowsAll() {
		return nil
	}
	if b.Addresses == nil {
		return queue.Errorf(queue.ReasonAddressNotAllowed, "the manager restricts queue addresses (%s) and cannot tell where "+
			"a %s queue connects", FlagAllowedAddresses, b.Name)
	}
	addrs, err := b.Addresses(src)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		if !p.Allows(ctx, a.HostPort) {
			return queue.Errorf(queue.ReasonAddressNotAllowed, "%s (%s) is not among the addresses the manager may connect to: "+
				"point %s at an allowed address, or ask the operator's administrator to allow it with the manager's %s",
				a.HostPort, a.Field, a.Field, FlagAllowedAddresses)
		}
	}
	return nil
}
