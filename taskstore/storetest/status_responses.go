package storetest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// escapedResponses are valid responses whose status depends on escapes:
// a key spelled with an escape among repeated keys (the last one counts),
// a key with a NUL in it, and \u0000 or lone-surrogate escapes (which some
// databases' JSON functions refuse to read) next to the member that decides;
// also JSON null and whitespace around everything. testStatusSuccessBit
// (status_extra.go) covers the plain shapes.
var escapedResponses = []string{
	`{"\u0073uccess":false,"success":true,"\u0073uccess":false}`,
	`{"success\u0000":true}`,
	`null`,
	" \n{ \"success\" :\ttrue\r\n}\n",
	`{"success":true,"e":"\u0000"}`,
	`{"e\ud800":"\udc00","success":true}`,
	`{"success":true,"e":"\\u0000 \\\u0000"}`,
}

// Added by the pgstore worker: a store files a finished task as succeeded
// or failed exactly as taskstore.Succeeded reads its response, whether the
// response came with Create or with Finish, for the responses above, and
// Find's status filters and totals agree with the tasks' own Status.
func testStatusEscapedResponses(t *testing.T, s taskstore.Store) {
	var all []taskstore.Task
	for i, resp := range escapedResponses {
		if !json.Valid([]byte(resp)) {
			t.Fatalf("test response %q is not JSON", resp)
		}
		created := task(fmt.Sprintf("c-%02d", i), i)
		created.FinishedAt, created.Response = created.CreatedAt.Add(time.Second), json.RawMessage(resp)
		mustCreate(t, s, created)
		all = append(all, created)
		finished := task(fmt.Sprintf("f-%02d", i), i)
		mustCreate(t, s, finished)
		must(t, s.Finish(ctx, finished.ID, json.RawMessage(resp), finished.CreatedAt.Add(time.Second)))
		finished.FinishedAt, finished.Response = finished.CreatedAt.Add(time.Second), json.RawMessage(resp)
		all = append(all, finished)
	}
	for _, x := range all {
		if got := mustGet(t, s, x.ID); got.Status() != x.Status() {
			t.Fatalf("%s (%s): stored as %s, want %s", x.ID, x.Response, got.Status(), x.Status())
		}
	}
	for _, st := range []taskstore.Status{"", taskstore.StatusSucceeded, taskstore.StatusFailed} {
		check(t, s, all, taskstore.Filter{Status: st, Limit: 100})
		check(t, s, all, taskstore.Filter{Status: st, Limit: 0})
	}
}
