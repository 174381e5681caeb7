package sqlitestore

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// TestPackedRow round-trips strings that look like the packed row's own
// syntax (digits, spaces, '|', a minus), multi-byte UTF-8, NUL bytes and a
// NULL response through the single-column read of Get and Find.
func TestPackedRow(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	tasks := []taskstore.Task{
		{ID: "12 34|-5", TraceID: "| 7 8 |", Type: "t|y p-e", Request: json.RawMessage(`{"a":"| 1 2"}`),
			ApplicationID: "äpp ✓", UserID: "用户", CredentialID: "-1", CreatedAt: time.UnixMilli(5),
			Callback: taskstore.Callback{URL: "https://x.example/|", LastError: "status 500\n| 3"}},
		{ID: "x", Type: "t", Request: json.RawMessage(`[]`), Response: json.RawMessage(`{"ok":"é"}`),
			CreatedAt: time.UnixMilli(6), FinishedAt: time.UnixMilli(7)},
		{ID: "n\x00ul", TraceID: "\x00", Type: "t\x00", Request: json.RawMessage(`{"a":"\u0000"}`),
			UserID: "u\x00", CredentialID: "\x00c", CreatedAt: time.UnixMilli(8),
			Callback: taskstore.Callback{URL: "https://x.example/", LastError: "a\x00b"}},
	}
	for _, want := range tasks {
		if err := s.Create(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, want.ID)
		if err != nil {
			t.Fatal(err)
		}
		page, _, err := s.Find(ctx, taskstore.Filter{IDs: []string{want.ID}, Limit: 1})
		if err != nil || len(page) != 1 {
			t.Fatalf("Find(%q) = %d tasks, %v", want.ID, len(page), err)
		}
		if !reflect.DeepEqual(page[0], got) {
			t.Errorf("Find = %+v\nGet  = %+v", page[0], got)
		}
		if got.ID != want.ID || got.TraceID != want.TraceID || got.Type != want.Type ||
			got.ApplicationID != want.ApplicationID || got.UserID != want.UserID ||
			got.CredentialID != want.CredentialID || got.Callback.URL != want.Callback.URL ||
			got.Callback.LastError != want.Callback.LastError || string(got.Request) != string(want.Request) ||
			string(got.Response) != string(want.Response) || (got.Response == nil) != (want.Response == nil) ||
			!got.CreatedAt.Equal(want.CreatedAt) || !got.FinishedAt.Equal(want.FinishedAt) {
			t.Errorf("Get = %+v\nwant %+v", got, want)
		}
		// Appending to Request must not overwrite Response.
		if got.Response != nil {
			_ = append(got.Request, "xxxxxxxx"...)
			if string(got.Response) != string(want.Response) {
				t.Errorf("appending to Request changed Response to %s", got.Response)
			}
		}
	}
	if _, err := unpackTask([]byte("1 2 3|")); err == nil {
		t.Error("unpackTask accepted a short header")
	}
	if _, err := unpackTask([]byte("0 0 0 0 0 0 0 0 1 0 0 0 0 0 0 0 2 -1|x{}junk")); err == nil {
		t.Error("unpackTask accepted trailing bytes")
	}
}
