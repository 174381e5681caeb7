package callback

import (
	"context"
	"net/netip"

	"github.com/tasksapi/tasks/internal/webhook"
)

// Test-only seams.

// SetLookup makes r resolve callback host names with f, so that tests never
// query DNS (the SSRF guard checks what it returns). Call it before the
// first delivery.
func SetLookup(r *Recorder, f func(ctx context.Context, host string) ([]netip.Addr, error)) {
	webhook.SetLookup(r.sender, f)
}

// Spills returns how many request bodies Wrap has spilled to a temporary
// file so far.
func Spills() int64 { return spills.Load() }

// SpillAt is the number of body bytes Wrap holds in memory before spilling.
const SpillAt = spillAt
