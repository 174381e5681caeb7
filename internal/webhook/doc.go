// Package webhook holds the delivery primitives of callback mode: a Sender
// that makes one HTTP POST attempt of a callback body, the retry Schedule
// with jitter, and Standard Webhooks signing.
//
// It knows nothing about tasks or stores: the callback package decides what
// to send and when, records each Result, and asks Schedule.Next when to try
// again.
//
// # Headers
//
// Every attempt carries Content-Type: application/json, webhook-id (the
// caller passes the same id, the task id, on every attempt, so receivers can
// de-duplicate), webhook-timestamp (Unix seconds of the attempt) and, when a
// secret is configured, webhook-signature: "v1," followed by the base64
// HMAC-SHA256 of "id.timestamp.body", which the official Standard Webhooks
// libraries verify.
//
// # SSRF guard
//
// Unless Options.AllowPrivateNetworks is set, the Sender refuses to connect
// to addresses that are not publicly routable. The check runs at connect
// time on the resolved address: the Sender resolves the host itself, checks
// every address, dials only checked IP addresses, and checks once more in
// the socket's Control hook right before connect(2). A DNS answer that
// changes between checks (DNS rebinding) therefore cannot reach a refused
// address. Refused:
//
//   - IPv4: 0.0.0.0/8 (unspecified, "this network"), 10/8, 100.64/10 (shared
//     address space), 127/8, 169.254/16 (link-local, cloud metadata
//     169.254.169.254 included), 172.16/12, 192.0.0/24, 192.168/16,
//     198.18/15, 224/4 (multicast), 240/4 (reserved, broadcast
//     255.255.255.255 included);
//   - IPv6: ::/96 (unspecified, loopback ::1 and IPv4-compatible), fc00::/7,
//     fe80::/10, fec0::/10, ff00::/8, 100::/64, 2001::/32 (Teredo),
//     2001:10::/28, 64:ff9b:1::/48; IPv4-mapped addresses (::ffff:a.b.c.d),
//     IPv4-translated addresses (::ffff:0:a.b.c.d, ::ffff:0:0:0/96), NAT64
//     addresses (64:ff9b::/96) and 6to4 addresses (2002::/16) are judged by
//     the IPv4 address they embed;
//   - the names "localhost" and "*.localhost", refused without resolving.
//
// Documentation ranges (192.0.2/24, 198.51.100/24, 203.0.113/24,
// 2001:db8::/32) are not refused: they are unroutable anyway.
//
// Whatever the guard setting: only http and https URLs are attempted; no
// redirect is followed (a 3xx answer is a failed, retryable attempt);
// environment proxies are ignored; host names that are numbers in a
// non-standard form (2130706433, 0x7f000001, 0177.0.0.1, 127.1), which some
// resolvers read as IPv4 addresses, are refused as invalid.
//
// A custom Options.Transport bypasses the connect-time check; see its
// documentation. Options.WrapTransport, which wraps the Sender's own
// transport (to trace or count attempts), keeps it.
package webhook
