package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// badCase is one malformed request and the answer it must get.
type badCase struct {
	name   string
	method string // "" is POST
	path   string
	token  string // "" is tokenA; "-" sends no Authorization header
	ctype  string // "" is application/json; "-" sends no Content-Type
	body   []byte
	// chunked sends the body without a Content-Length (so the server has to
	// read past its limit to refuse it).
	chunked bool
	status  int
	// code is the contract error code expected. "" means the request is
	// not callback mode and is served synchronously by the stand-in
	// generator, exactly as without callback mode: its own OpenAI-style
	// 4xx answer is correct, and nothing may be stored.
	code string
}

const (
	tasksPath = "/openai/tasks"
	genPath   = "/openai/images/generations"
	editsPath = "/openai/images/edits"
	chatPath  = "/openai/chat/completions"
)

func nested(depth int, inner string) string {
	return strings.Repeat("[", depth) + inner + strings.Repeat("]", depth)
}

// multipartBody builds a multipart/form-data body from fields (name, value
// pairs) and one file part named file (when non-empty); it returns the body
// and its Content-Type.
func multipartBody(file string, fields ...string) ([]byte, string) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		w.WriteField(fields[i], fields[i+1])
	}
	if file != "" {
		fw, _ := w.CreateFormFile(file, "in.png")
		fw.Write([]byte("\x89PNG\r\n\x1a\nnot really"))
	}
	w.Close()
	return b.Bytes(), w.FormDataContentType()
}

func utf16Body(s string) []byte {
	var b bytes.Buffer
	b.Write([]byte{0xff, 0xfe})
	for _, u := range utf16.Encode([]rune(s)) {
		b.WriteByte(byte(u))
		b.WriteByte(byte(u >> 8))
	}
	return b.Bytes()
}

// badCases returns the table; seed is the id of a stored task (so that a
// malformed delete of it would show).
func badCases(seed, cbURL string) []badCase {
	j := func(s string) []byte { return []byte(s) }
	cb := `"callback_url":"` + cbURL + `"`
	ids101 := make([]string, 101)
	for i := range ids101 {
		ids101[i] = fmt.Sprintf("id-%d", i)
	}
	ids101JSON, _ := json.Marshal(ids101)
	mpFTP, mpFTPType := multipartBody("image", "prompt", "x", "callback_url", "ftp://example.com/cb")
	mpDup, mpDupType := multipartBody("image", "prompt", "x", "callback_url", cbURL, "callback_url", cbURL)
	mpAsync, mpAsyncType := multipartBody("image", "prompt", "x", "async", "maybe")
	mpTrace, mpTraceType := multipartBody("image", "prompt", "x", "async", "true", "trace_id", strings.Repeat("t", 129))
	var mpFile bytes.Buffer
	mw := multipart.NewWriter(&mpFile)
	mw.WriteField("prompt", "x")
	fw, _ := mw.CreateFormFile("callback_url", "cb.txt")
	fw.Write([]byte(cbURL))
	mw.Close()
	mpNoBoundary, _ := multipartBody("image", "prompt", "x", "callback_url", cbURL)

	return []badCase{
		// The Tasks API.
		{name: "tasks/id-number", path: tasksPath, body: j(`{"action":"retrieve","id":123}`), status: 400, code: "bad_request"},
		{name: "tasks/ids-string", path: tasksPath, body: j(`{"action":"retrieve_batch","ids":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/ids-mixed-types", path: tasksPath, body: j(`{"action":"retrieve_batch","ids":["a",1,null]}`), status: 400, code: "bad_request"},
		{name: "tasks/ids-101", path: tasksPath, body: j(`{"action":"retrieve_batch","ids":` + string(ids101JSON) + `}`), status: 400, code: "bad_request"},
		{name: "tasks/limit-string", path: tasksPath, body: j(`{"action":"retrieve_batch","limit":"10"}`), status: 400, code: "bad_request"},
		{name: "tasks/limit-float", path: tasksPath, body: j(`{"action":"retrieve_batch","limit":10.0}`), status: 400, code: "bad_request"},
		{name: "tasks/limit-1e400", path: tasksPath, body: j(`{"action":"retrieve_batch","limit":1e400}`), status: 400, code: "bad_request"},
		{name: "tasks/limit-0", path: tasksPath, body: j(`{"action":"retrieve_batch","limit":0}`), status: 400, code: "bad_request"},
		{name: "tasks/limit-101", path: tasksPath, body: j(`{"action":"retrieve_batch","limit":101}`), status: 400, code: "bad_request"},
		{name: "tasks/offset-huge", path: tasksPath, body: j(`{"action":"retrieve_batch","offset":99999999999999999999999}`), status: 400, code: "bad_request"},
		{name: "tasks/offset-negative", path: tasksPath, body: j(`{"action":"retrieve_batch","offset":-1}`), status: 400, code: "bad_request"},
		{name: "tasks/created-1e309", path: tasksPath, body: j(`{"action":"retrieve_batch","created_at_min":1e309}`), status: 400, code: "bad_request"},
		{name: "tasks/created-negative", path: tasksPath, body: j(`{"action":"retrieve_batch","created_at_max":-5}`), status: 400, code: "bad_request"},
		{name: "tasks/created-string", path: tasksPath, body: j(`{"action":"retrieve_batch","created_at_max":"1700000000"}`), status: 400, code: "bad_request"},
		{name: "tasks/deep-nesting", path: tasksPath, body: j(`{"action":"delete","id":"` + seed + `","z":` + nested(100000, "") + `}`), status: 400, code: "bad_request"},
		{name: "tasks/deep-nesting-in-id", path: tasksPath, body: j(`{"action":"delete","id":` + nested(5000, `"`+seed+`"`) + `}`), status: 400, code: "bad_request"},
		{name: "tasks/invalid-utf8", path: tasksPath, body: j("{\"action\":\"retrieve\",\"id\":\"\xff\xfe\"}"), status: 400, code: "bad_request"},
		{name: "tasks/overlong-utf8-id", path: tasksPath, body: j("{\"action\":\"delete\",\"id\":\"\xc0\xaf\"}"), status: 400, code: "bad_request"},
		{name: "tasks/truncated", path: tasksPath, body: j(`{"action":"delete","id":"` + seed), status: 400, code: "bad_request"},
		{name: "tasks/trailing-garbage", path: tasksPath, body: j(`{"action":"delete","id":"` + seed + `"} x`), status: 400, code: "bad_request"},
		{name: "tasks/two-objects", path: tasksPath, body: j(`{"action":"retrieve","id":"a"}{"action":"delete","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/text-plain", path: tasksPath, ctype: "text/plain", body: j(`{"action":"delete","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/form-urlencoded", path: tasksPath, ctype: "application/x-www-form-urlencoded", body: j(`action=delete&id=` + seed), status: 400, code: "bad_request"},
		{name: "tasks/oversized", path: tasksPath, chunked: true, status: 400, code: "bad_request",
			body: j(`{"action":"delete","id":"` + seed + `","pad":"` + strings.Repeat("a", handler.MaxBodyBytes) + `"}`)[:handler.MaxBodyBytes+1]},
		{name: "tasks/oversized-declared", path: tasksPath, status: 400, code: "bad_request",
			body: j(`{"action":"delete","id":"` + seed + `","pad":"` + strings.Repeat("a", handler.MaxBodyBytes) + `"}`)},
		{name: "tasks/duplicate-id", path: tasksPath, body: j(`{"action":"delete","id":"nope","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/duplicate-action", path: tasksPath, body: j(`{"action":"retrieve","action":"delete","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/escaped-duplicate", path: tasksPath, body: j(`{"action":"retrieve","\u0061ction":"delete","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/null-body", path: tasksPath, body: j(`null`), status: 400, code: "bad_request"},
		{name: "tasks/array-body", path: tasksPath, body: j(`[{"action":"delete","id":"` + seed + `"}]`), status: 400, code: "bad_request"},
		{name: "tasks/string-body", path: tasksPath, body: j(`"delete"`), status: 400, code: "bad_request"},
		{name: "tasks/empty-body", path: tasksPath, body: j(``), status: 400, code: "bad_request"},
		{name: "tasks/bom", path: tasksPath, body: j("\xef\xbb\xbf{\"action\":\"delete\",\"id\":\"" + seed + "\"}"), status: 400, code: "bad_request"},
		{name: "tasks/utf16", path: tasksPath, body: utf16Body(`{"action":"delete","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/unknown-action", path: tasksPath, body: j(`{"action":"purge","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/action-case", path: tasksPath, body: j(`{"action":"DELETE","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/action-number", path: tasksPath, body: j(`{"action":2,"id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/action-lone-surrogate", path: tasksPath, body: j(`{"action":"\ud800","id":"` + seed + `"}`), status: 400, code: "bad_request"},
		{name: "tasks/retrieve-without-id", path: tasksPath, body: j(`{"action":"retrieve"}`), status: 400, code: "bad_request"},
		{name: "tasks/delete-id-null", path: tasksPath, body: j(`{"action":"delete","id":null}`), status: 400, code: "bad_request"},
		{name: "tasks/delete-id-object", path: tasksPath, body: j(`{"action":"delete","id":{"id":"` + seed + `"}}`), status: 400, code: "bad_request"},
		{name: "tasks/method-get", method: "GET", path: tasksPath, ctype: "-", status: 405, code: "bad_request"},
		{name: "tasks/method-delete", method: "DELETE", path: tasksPath, body: j(`{"action":"delete","id":"` + seed + `"}`), status: 405, code: "bad_request"},
		{name: "tasks/no-token", path: tasksPath, token: "-", body: j(`{"action":"delete","id":"` + seed + `"}`), status: 400, code: "no_token"},
		{name: "tasks/bad-token", path: tasksPath, token: "nope", body: j(`{"action":"delete","id":"` + seed + `"}`), status: 401, code: "invalid_token"},
		{name: "tasks/token-zero-width", path: tasksPath, token: tokenOp + "\u200b", body: j(`{"action":"delete","id":"` + seed + `"}`), status: 401, code: "invalid_token"},

		// Callback mode on the image routes.
		{name: "gen/callback-ftp", path: genPath, body: j(`{"prompt":"x","callback_url":"ftp://example.com/cb"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-relative", path: genPath, body: j(`{"prompt":"x","callback_url":"/cb"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-scheme-relative", path: genPath, body: j(`{"prompt":"x","callback_url":"//example.com/cb"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-javascript", path: genPath, body: j(`{"prompt":"x","callback_url":"javascript:alert(1)//http://example.com/"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-data-url", path: genPath, body: j(`{"prompt":"x","callback_url":"data:text/plain,hi"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-2049-bytes", path: genPath, body: j(`{"prompt":"x","callback_url":"http://example.com/` + strings.Repeat("a", callback.MaxCallbackURLLength) + `"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-number", path: genPath, body: j(`{"prompt":"x","callback_url":5}`), status: 400, code: "bad_request"},
		{name: "gen/callback-object", path: genPath, body: j(`{"prompt":"x","callback_url":{"url":"` + cbURL + `"}}`), status: 400, code: "bad_request"},
		{name: "gen/callback-empty", path: genPath, body: j(`{"prompt":"x","callback_url":""}`), status: 400, code: "bad_request"},
		{name: "gen/callback-space-in-host", path: genPath, body: j(`{"prompt":"x","callback_url":"http://exa mple.com/cb"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-nul", path: genPath, body: j(`{"prompt":"x","callback_url":"http://example.com/\u0000"}`), status: 400, code: "bad_request"},
		{name: "gen/callback-duplicate", path: genPath, body: j(`{"prompt":"x",` + cb + `,` + cb + `}`), status: 400, code: "bad_request"},
		{name: "gen/callback-escaped-duplicate", path: genPath, body: j(`{"prompt":"x",` + cb + `,"callback_ur\u006c":"` + cbURL + `"}`), status: 400, code: "bad_request"},
		{name: "gen/trace-number", path: genPath, body: j(`{"prompt":"x",` + cb + `,"trace_id":5}`), status: 400, code: "bad_request"},
		{name: "gen/trace-129-bytes", path: genPath, body: j(`{"prompt":"x",` + cb + `,"trace_id":"` + strings.Repeat("t", 129) + `"}`), status: 400, code: "bad_request"},
		{name: "gen/async-string", path: genPath, body: j(`{"prompt":"x","async":"true"}`), status: 400, code: "bad_request"},
		{name: "gen/async-number", path: genPath, body: j(`{"prompt":"x","async":1}`), status: 400, code: "bad_request"},
		{name: "gen/invalid-utf8-callback-mode", path: genPath, body: j("{\"prompt\":\"\xff\xfe\"," + cb + "}"), status: 400, code: "bad_request"},
		{name: "gen/overlong-utf8-trace", path: genPath, body: j("{\"prompt\":\"x\",\"async\":true,\"trace_id\":\"\xc0\xaf\"}"), status: 400, code: "bad_request"},
		{name: "gen/deep-nesting-callback-mode", path: genPath, body: j(`{"prompt":"x",` + cb + `,"z":` + nested(2000, "") + `}`), status: 400, code: "bad_request"},
		{name: "gen/oversized-callback-mode", path: genPath, chunked: true, status: 400, code: "bad_request",
			body: j(`{` + cb + `,"prompt":"` + strings.Repeat("a", callback.DefaultMaxBodyBytes) + `"}`)[:callback.DefaultMaxBodyBytes+1]},
		{name: "gen/method-get", method: "GET", path: genPath, ctype: "-", status: 405, code: "bad_request"},
		{name: "gen/no-token", path: genPath, token: "-", body: j(`{"prompt":"x",` + cb + `}`), status: 400, code: "no_token"},
		{name: "gen/bad-token", path: genPath, token: tokenA + "x", body: j(`{"prompt":"x",` + cb + `}`), status: 401, code: "invalid_token"},
		{name: "edits/multipart-callback-ftp", path: editsPath, ctype: mpFTPType, body: mpFTP, status: 400, code: "bad_request"},
		{name: "edits/multipart-callback-duplicate", path: editsPath, ctype: mpDupType, body: mpDup, status: 400, code: "bad_request"},
		{name: "edits/multipart-async-maybe", path: editsPath, ctype: mpAsyncType, body: mpAsync, status: 400, code: "bad_request"},
		{name: "edits/multipart-callback-as-file", path: editsPath, ctype: mw.FormDataContentType(), body: mpFile.Bytes(), status: 400, code: "bad_request"},
		{name: "v1-edits/multipart-trace-129", path: "/v1/images/edits", ctype: mpTraceType, body: mpTrace, status: 400, code: "bad_request"},
		{name: "chat/callback-javascript", path: chatPath, body: j(`{"messages":[],"callback_url":"javascript:void(0)"}`), status: 400, code: "bad_request"},
		{name: "v1-gen/callback-relative", path: "/v1/images/generations", body: j(`{"prompt":"x","callback_url":"cb"}`), status: 400, code: "bad_request"},

		// Not callback mode: served synchronously by the stand-in generator,
		// whose OpenAI-style 400 is the right answer.
		{name: "gen/truncated-json", path: genPath, body: j(`{"prompt":"x",` + cb), status: 400},
		{name: "gen/text-plain", path: genPath, ctype: "text/plain", body: j(`{"prompt":"x",` + cb + `}`), status: 400},
		{name: "gen/null-body", path: genPath, body: j(`null`), status: 400},
		{name: "gen/array-body", path: genPath, body: j(`[{"prompt":"x",` + cb + `}]`), status: 400},
		{name: "gen/n-1e400", path: genPath, body: j(`{"prompt":"x","n":1e400}`), status: 400},
		{name: "gen/deep-nesting-sync", path: genPath, body: j(`{"prompt":"x",` + cb + `,"z":` + nested(100000, "") + `}`), status: 400},
		{name: "edits/multipart-without-boundary", path: editsPath, ctype: "multipart/form-data", body: mpNoBoundary, status: 400},
		{name: "edits/json-instead-of-multipart", path: editsPath, body: j(`{"prompt":"x"}`), status: 400},
		{name: "chat/messages-number", path: chatPath, body: j(`{"messages":5}`), status: 400},
	}
}

// TestBadInput: a table of malformed requests across every route. Each gets
// its 4xx — the contract's error body where callback mode or the Tasks API
// answers — and the store holds exactly what it held before (the operator's
// retrieve_batch answer, items and count, is byte-identical).
func TestBadInput(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tasks.db")
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "0s",
		"-callback-schedule", "0s")

	// Seed a few finished tasks, so that a mistaken delete or create shows.
	var seeds []string
	for i, body := range []string{
		`{"prompt":"seed 0","async":true,"trace_id":"seed"}`,
		`{"prompt":"seed 1","callback_url":"` + rcv.URL + `/cb","trace_id":"seed"}`,
		`{"prompt":"seed 2","async":true}`,
	} {
		tok := tokenA
		if i == 2 {
			tok = tokenB
		}
		a := mustPost(t, d.URL()+genPath, tok, body)
		if a.status != 200 {
			t.Fatalf("seed: %d %s", a.status, a.raw)
		}
		seeds = append(seeds, a.str("task_id"))
	}
	if !waitFor(30*time.Second, 20*time.Millisecond, func() bool {
		got := fetchByIDs(t, d.URL(), seeds)
		for _, id := range seeds {
			if got[id].FinishedAt == "" {
				return false
			}
		}
		return true
	}) {
		t.Fatal("seed tasks did not finish")
	}
	snapshot := func() []byte {
		_, raw := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 100})
		return raw
	}
	// settled returns the snapshot once every task in it has finished (a
	// task a faulty row stored goes on changing until it does).
	settled := func() []byte {
		var raw []byte
		waitFor(10*time.Second, 20*time.Millisecond, func() bool {
			b, r := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 100})
			raw = r
			for _, it := range b.Items {
				if it.FinishedAt == "" {
					return false
				}
			}
			return true
		})
		return raw
	}
	before := settled()

	cases := badCases(seeds[0], rcv.URL+"/cb")
	contract, passthrough := 0, 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader
			if tc.body != nil {
				body = bytes.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body) // hides the length: sent chunked
				}
			}
			req, err := http.NewRequest(method, d.URL()+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.token {
			case "":
				req.Header.Set("Authorization", "Bearer "+tokenA)
			case "-":
			default:
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			switch tc.ctype {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, tc.path, err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %.300s", resp.StatusCode, tc.status, raw)
			}
			if tc.code != "" {
				contract++
				if problem := checkErrorBody(raw, tc.code); problem != "" {
					t.Errorf("error body %.300s: %s", raw, problem)
				}
				if tc.status == 405 && resp.Header.Get("Allow") != "POST" {
					t.Errorf("405 without Allow: POST (got %q)", resp.Header.Get("Allow"))
				}
			} else {
				passthrough++
				var e struct {
					Error *struct {
						Message string `json:"message"`
					} `json:"error"`
				}
				if json.Unmarshal(raw, &e) != nil || e.Error == nil || e.Error.Message == "" || bytes.Contains(raw, []byte(`"task_id"`)) {
					t.Errorf("want the generator's error body, got %.300s", raw)
				}
			}
			if after := snapshot(); !bytes.Equal(after, before) {
				t.Errorf("the store changed:\nbefore %.600s\nafter  %.600s", before, after)
				before = settled() // report each change once
			}
		})
	}
	t.Logf("bad input: %d malformed requests (%d answered with the contract's error, %d passed through to the generator); store unchanged after each",
		len(cases), contract, passthrough)
	if len(cases) < 40 {
		t.Errorf("only %d cases", len(cases))
	}

	t.Run("Lookalikes", func(t *testing.T) { testLookalikes(t, d, seeds[0], before, snapshot) })
}

// testLookalikes: ids that look like a stored task's id (zero-width space,
// RTL override, NUL, another case, a homoglyph, white space) are valid
// requests that match nothing: retrieve answers {}, delete answers
// deleted:false, the store is unchanged. Trace ids with such characters,
// which callback mode accepts, round-trip exactly and match only themselves.
func testLookalikes(t *testing.T, d *tasksdtest.Daemon, seed string, before []byte, snapshot func() []byte) {
	cyr := strings.Replace(seed, "a", "\u0430", 1) // Cyrillic a
	if cyr == seed {
		cyr = "\u0430" + seed
	}
	for _, id := range []string{
		seed + "\u200b", "\u200b" + seed, "\u202e" + seed, seed + "\u202e", seed + "\x00", "\x00" + seed,
		strings.ToUpper(seed), cyr, " " + seed, seed + " ", seed + "\n", seed[:35], seed + "0",
		"\ufeff" + seed, strings.ReplaceAll(seed, "-", "\u2010"),
	} {
		a := mustPost(t, d.URL()+tasksPath, tokenOp, map[string]any{"action": "retrieve", "id": id})
		if a.status != 200 || string(a.raw) != "{}" {
			t.Errorf("retrieve %q: %d %.200s; want {}", id, a.status, a.raw)
		}
		a = mustPost(t, d.URL()+tasksPath, tokenOp, map[string]any{"action": "delete", "id": id})
		if want, _ := json.Marshal(map[string]any{"id": id, "deleted": false}); a.status != 200 || !jsonEqual(a.raw, want) {
			t.Errorf("delete %q: %d %s; want %s", id, a.status, a.raw, want)
		}
	}
	if after := snapshot(); !bytes.Equal(after, before) {
		t.Errorf("a lookalike id changed the store:\nbefore %.600s\nafter  %.600s", before, after)
	}

	traces := []string{"trace", "trace\u200b", "\u202etrace", "trace\x00", "TRACE", "tr\u0430ce"}
	ids := map[string]string{}
	for _, tr := range traces {
		a := mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "x", "async": true, "trace_id": tr})
		if a.status != 200 || a.str("trace_id") != tr {
			t.Fatalf("submit trace_id %q: %d %s", tr, a.status, a.raw)
		}
		ids[tr] = a.str("task_id")
	}
	for _, tr := range traces {
		a := mustPost(t, d.URL()+tasksPath, tokenA, map[string]any{"action": "retrieve", "trace_id": tr})
		if a.str("id") != ids[tr] || a.str("trace_id") != tr {
			t.Errorf("retrieve trace_id %q: %.300s; want task %s", tr, a.raw, ids[tr])
		}
		b, _ := retrieveBatch(t, d.URL(), tokenA, map[string]any{"trace_ids": []string{tr}})
		if *b.Count != 1 || b.Items[0].ID != ids[tr] {
			t.Errorf("retrieve_batch trace_ids [%q]: count %d", tr, *b.Count)
		}
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}
