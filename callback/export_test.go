package callback

import (
	"context"
	"net/netip"
)

// Test-only seams.

// SetLookup makes a recorder created with o resolve callback host names
// with f, so that tests never query DNS (the SSRF guard checks what it
// returns).
func SetLookup(o *Options, f func(ctx context.Context, host string) ([]netip.Addr, error)) {
	o.lookup = f
}
