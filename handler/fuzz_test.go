package handler_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// FuzzTasksRequest sends arbitrary bodies as a tenant and as the operator.
// Whatever the body, the handler does not panic and answers either 200 with
// JSON the tenant may see, or 400 with the contract's error shape. The seed
// corpus is in testdata/fuzz/FuzzTasksRequest. Run it with
//
//	go test -run '^$' -fuzz FuzzTasksRequest -fuzztime 20s ./handler/
func FuzzTasksRequest(f *testing.F) {
	f.Add([]byte(retrieveFinished))
	f.Fuzz(func(t *testing.T, body []byte) {
		s := memstore.New()
		defer s.Close()
		mustCreate(t, s, fixtures...)
		h := handler.New(s, handler.Tokens(tokens), typesOpenAI)
		for _, as := range []struct {
			auth string
			p    taskstore.Principal
		}{{asTenant1, tenant1}, {asOperator, taskstore.Principal{}}} {
			r := httptest.NewRequest(http.MethodPost, "/openai/tasks", bytes.NewReader(body))
			r.Header.Set("Authorization", as.auth)
			r.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Fatalf("Content-Type %q", ct)
			}
			switch rec.Code {
			case http.StatusOK:
				checkOK(t, as.p, rec.Body.Bytes())
			case http.StatusBadRequest:
				checkBadRequest(t, rec.Body.Bytes())
			default:
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

// checkOK asserts that a 200 answer is one of the three shapes and shows
// only tasks p may see, of the mount's types.
func checkOK(t *testing.T, p taskstore.Principal, body []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	visible := func(raw json.RawMessage) {
		var task taskstore.Task
		if err := json.Unmarshal(raw, &task); err != nil {
			t.Fatalf("record %s: %v", raw, err)
		}
		if !p.CanSee(task) || (task.Type != "images_generations" && task.Type != "images_edits") {
			t.Fatalf("%+v sees %s", p, raw)
		}
		if got := string(task.AppendJSON(nil)); got != string(raw) {
			t.Fatalf("record %s is not a wire record (%s)", raw, got)
		}
	}
	switch {
	case string(body) == "{}":
	case bytes.HasPrefix(body, []byte(`{"items":`)):
		var page struct {
			Items []json.RawMessage `json:"items"`
			Count *int              `json:"count"`
		}
		if err := dec.Decode(&page); err != nil || page.Items == nil || page.Count == nil {
			t.Fatalf("batch answer %s: %v", body, err)
		}
		if len(page.Items) > handler.MaxLimit || *page.Count < len(page.Items) {
			t.Fatalf("batch answer %s: %d items, count %d", body, len(page.Items), *page.Count)
		}
		for _, raw := range page.Items {
			visible(raw)
		}
	case bytes.HasPrefix(body, []byte(`{"id":`)) && bytes.Contains(body, []byte(`"deleted":`)):
		var del struct {
			ID      string `json:"id"`
			Deleted *bool  `json:"deleted"`
		}
		if err := dec.Decode(&del); err != nil || del.Deleted == nil {
			t.Fatalf("delete answer %s: %v", body, err)
		}
		if *del.Deleted && del.ID == taskOther.ID && !p.IsOperator() {
			t.Fatalf("%+v deleted another tenant's task", p)
		}
		if *del.Deleted && del.ID == taskFlux.ID {
			t.Fatalf("a task of another mount's type was deleted")
		}
	default:
		visible(body)
	}
}

func checkBadRequest(t *testing.T, body []byte) {
	t.Helper()
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		TraceID string `json:"trace_id"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil {
		t.Fatalf("error body %s: %v", body, err)
	}
	if e.Error.Code != "bad_request" || e.Error.Message == "" || strings.Contains(e.Error.Message, "taskstore") {
		t.Fatalf("error body %s", body)
	}
	if _, err := uuid.Parse(e.TraceID); err != nil || len(e.TraceID) != 36 {
		t.Fatalf("trace_id in %s: %v", body, err)
	}
}
