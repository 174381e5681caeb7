package webhook

import "net/netip"

// Test-only seams. They must be set before the Sender's first Send.

// SetConnectHook installs f in the socket's Control hook, after the guard's
// check and before connect(2). Returning an error prevents the connection:
// tests use it to count connects and to make sure no packet ever leaves for
// a non-loopback address.
func SetConnectHook(s *Sender, f func(network, address string) error) {
	s.dialer.connect = f
}

// SetCheck replaces the guard's address check (tests use it to let one
// loopback server stand in for a public receiver, keeping the rest of the
// guarded path).
func SetCheck(s *Sender, f func(netip.Addr) string) {
	s.dialer.check = f
}

// Control runs s's socket Control hook on address, as the dialer would right
// before connect(2).
func Control(s *Sender, network, address string) error {
	return s.dialer.control(network, address, nil)
}

// RefusedReason exposes the guard's address check.
var RefusedReason = refusedReason

// UsesProxy reports whether s's own transport would send requests through a
// proxy (from the environment or otherwise): a proxy would dial for it,
// past the guard.
func UsesProxy(s *Sender) bool {
	return s.own == nil || s.own.Proxy != nil
}
