package backends

import (
	"context"
	"net/netip"
)

// SetLookup makes p resolve host names with lookup (a seam for the tests outside the
// package).
func SetLookup(p *AddressPolicy, lookup func(ctx context.Context, host string) ([]netip.Addr, error)) {
	p.lookup = lookup
}
