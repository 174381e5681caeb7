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
