package callback_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/callback"
)

// filler yields n bytes of a 64-byte pattern without holding them. The
// pattern is valid inside a JSON string and mentions every callback-mode
// field behind escaped quotes and backslashes, so that the scan has to get
// the escapes right at every buffer boundary.
type filler struct{ n, off int64 }

const fillPattern = `x\"callback_url\":\"http://127.0.0.1/\",\"async\":true \\\\ abcd` // 64 bytes

func init() {
	if len(fillPattern) != 64 {
		panic("fillPattern must be 64 bytes, so that filler ends between escapes")
	}
}

func (f *filler) Read(p []byte) (int, error) {
	if f.off >= f.n {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && f.off < f.n {
		c := copy(p[n:], fillPattern[f.off%int64(len(fillPattern)):])
		c = int(min(int64(c), f.n-f.off))
		n += c
		f.off += int64(c)
	}
	return n, nil
}

// bigJSON returns a reader of a JSON object whose "prompt" is n bytes of
// filler, between prefix and suffix members, and its length.
func bigJSON(prefix, suffix string, n int64) (func() io.Reader, int64) {
	head := `{` + prefix + `"prompt":"`
	tail := `"` + suffix + `}`
	return func() io.Reader {
		return io.MultiReader(strings.NewReader(head), &filler{n: n}, strings.NewReader(tail))
	}, int64(len(head)) + n + int64(len(tail))
}

func sum(r io.Reader) string {
	h := sha256.New()
	io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil))
}

// sink is a handler that hashes and counts the body it reads.
type sink struct {
	hash    hash.Hash
	n       int64
	length  int64
	header  string
	calls   int
	tmpSeen int // files in the temporary directory while it ran
	tmpDir  string
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.calls++
	s.hash = sha256.New()
	s.n, _ = io.Copy(s.hash, r.Body)
	s.length = r.ContentLength
	s.header = r.Header.Get("X-Client")
	if s.tmpDir != "" {
		s.tmpSeen = countFiles(s.tmpDir)
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, "sync answer")
}

func (s *sink) sum() string { return hex.EncodeToString(s.hash.Sum(nil)) }

func countFiles(dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	return len(ents)
}

// TestLargeBodyPassesThrough: a 100 MiB JSON request without callback_url
// (but mentioning it inside a string, many times) reaches the handler byte
// for byte with its Content-Length and headers, whatever MaxBodyBytes
// says; Wrap allocates far less than the body (it spills to a temporary
// file that is gone once the request ends). Before, it was answered 400.
func TestLargeBodyPassesThrough(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	s := &sink{tmpDir: tmp}
	h := rec.Wrap("images_generations", s)

	const size = 100 << 20
	gen, length := bigJSON(`"model":"gpt-image-1",`, `,"n":1,"nested":{"callback_url":"http://127.0.0.1/"}`, size)
	want := sum(gen())
	spills := callback.Spills()

	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Client", "c1")
	w := httptest.NewRecorder()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	h.ServeHTTP(w, req)
	runtime.ReadMemStats(&after)

	if w.Code != http.StatusCreated || w.Body.String() != "sync answer" {
		t.Fatalf("answer %d %q, want the handler's", w.Code, w.Body)
	}
	if s.n != length || s.sum() != want || s.length != length || s.header != "c1" {
		t.Errorf("handler read %d bytes (want %d), same bytes %v, ContentLength %d, X-Client %q",
			s.n, length, s.sum() == want, s.length, s.header)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d MiB body: Wrap and the handler allocated %.1f MiB in all; heap in use %+.1f MiB",
		length>>20, float64(alloc)/(1<<20), (float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20))
	if alloc > 32<<20 {
		t.Errorf("allocated %d bytes for a %d-byte body", alloc, length)
	}
	if n := callback.Spills() - spills; n != 1 {
		t.Errorf("%d spills, want 1", n)
	}
	if s.tmpSeen > 1 {
		t.Errorf("%d files in the temporary directory while the handler ran", s.tmpSeen)
	}
	if n := countFiles(tmp); n != 0 {
		t.Errorf("%d files left in the temporary directory", n)
	}
	if n := countTasks(t, store); n != 0 {
		t.Errorf("%d tasks stored", n)
	}
}

// multipartBody streams a form (fields, then a file part of n filler bytes,
// then more fields) through a pipe, and returns the reader and a function
// giving the SHA-256 of what was written once it is all read.
func multipartBody(t *testing.T, before, after []string, n int64) (io.Reader, string, func() string) {
	pr, pw := io.Pipe()
	h := sha256.New()
	mw := multipart.NewWriter(io.MultiWriter(pw, h))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i+1 < len(before); i += 2 {
			mw.WriteField(before[i], before[i+1])
		}
		fw, _ := mw.CreateFormFile("image", "big.png")
		io.Copy(fw, &filler{n: n})
		for i := 0; i+1 < len(after); i += 2 {
			mw.WriteField(after[i], after[i+1])
		}
		pw.CloseWithError(mw.Close())
	}()
	t.Cleanup(func() { pr.Close(); <-done })
	return pr, mw.FormDataContentType(), func() string { <-done; return hex.EncodeToString(h.Sum(nil)) }
}

// TestLargeMultipartPassesThrough: a 40 MiB multipart edit without
// callback_url (async=false, "callback_url" in a field's value), of
// unknown length, passes through byte for byte. Before, it was answered
// 400 (over the 32 MiB MaxBodyBytes).
func TestLargeMultipartPassesThrough(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	s := &sink{}
	h := rec.Wrap("images_edits", s)
	body, ct, want := multipartBody(t, []string{"prompt", "callback_url", "async", "false"}, []string{"n", "1"}, 40<<20)
	req := httptest.NewRequest(http.MethodPost, "/v1/images/edits", body)
	req.ContentLength = -1
	req.Header.Set("Content-Type", ct)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusCreated {
		t.Fatalf("answer %d %q, want the handler's", w.Code, w.Body)
	}
	if s.n <= 40<<20 || s.sum() != want() || s.length != -1 {
		t.Errorf("handler read %d bytes, same bytes %v, ContentLength %d", s.n, s.sum() == want(), s.length)
	}
	if n := countFiles(tmp); n != 0 {
		t.Errorf("%d files left in the temporary directory", n)
	}
	if n := countTasks(t, store); n != 0 {
		t.Errorf("%d tasks stored", n)
	}
}

// TestLargeCallbackBodyLimits: a callback-mode body is still held to
// MaxBodyBytes (400 naming it, nothing stored, the handler never runs)
// wherever callback_url is and whether or not the length is declared; one
// between the spill threshold and MaxBodyBytes is accepted as before.
func TestLargeCallbackBodyLimits(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	rec := newRecorder(t, store, callback.Options{})
	s := &sink{}
	h := rec.Wrap("images_generations", s)
	cb := `"callback_url":"` + rc.URL + `/cb"`
	tooLarge := "request body must be at most 33554432 bytes"
	for _, tc := range []struct {
		name           string
		prefix, suffix string
		declared       bool
	}{
		{"First", cb + ",", "", true},
		{"FirstUnsized", cb + ",", "", false},
		{"Last", "", "," + cb, true},
		{"LastUnsized", "", "," + cb, false},
		{"AsyncLast", "", `,"async":true`, false},
		{"TwiceNull", `"callback_url":null,`, `,"callback_url":null`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gen, length := bigJSON(tc.prefix, tc.suffix, callback.DefaultMaxBodyBytes+1<<20)
			req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
			req.ContentLength = -1
			if tc.declared {
				req.ContentLength = length
			}
			req.Header.Set("Content-Type", "application/json")
			errorBody(t, serve(h, req), http.StatusBadRequest, "bad_request", tooLarge)
		})
	}
	t.Run("Multipart", func(t *testing.T) {
		body, ct, _ := multipartBody(t, []string{"prompt", "p"}, []string{"callback_url", rc.URL + "/cb"}, callback.DefaultMaxBodyBytes)
		req := httptest.NewRequest(http.MethodPost, "/v1/images/edits", body)
		req.Header.Set("Content-Type", ct)
		errorBody(t, serve(h, req), http.StatusBadRequest, "bad_request", tooLarge)
	})
	if s.calls != 0 {
		t.Errorf("the handler ran %d times", s.calls)
	}
	if n := countTasks(t, store); n != 0 {
		t.Errorf("%d tasks stored", n)
	}

	// Past the spill threshold, within the limits: accepted as before.
	up := &upstream{}
	h = rec.Wrap("images_generations", jsonHandler(up, 200, `{"data":[]}`))
	gen, _ := bigJSON(`"model":"m",`, `,"trace_id":"big",`+cb, 2*callback.SpillAt)
	var sent bytes.Buffer
	io.Copy(&sent, gen())
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
	req.Header.Set("Content-Type", "application/json")
	id := acceptedID(t, serve(h, req), "big")
	task := waitDelivery(t, store, id)
	if !bytes.Equal(task.Request, sent.Bytes()) {
		t.Errorf("stored request of %d bytes, want the %d bytes sent", len(task.Request), sent.Len())
	}
	_, upBody := up.last()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(upBody, &m); err != nil || m["callback_url"] != nil || m["trace_id"] != nil || len(m["prompt"]) != 2*callback.SpillAt+2 {
		t.Errorf("upstream body: %v, members %d", err, len(m))
	}

	body, ct, _ := multipartBody(t, []string{"prompt", "p"}, []string{"callback_url", rc.URL + "/cb"}, 3*callback.SpillAt)
	req = httptest.NewRequest(http.MethodPost, "/v1/images/edits", body)
	req.ContentLength = -1
	req.Header.Set("Content-Type", ct)
	id = acceptedID(t, serve(rec.Wrap("images_edits", jsonHandler(nil, 200, `{"data":[]}`)), req), "")
	task = waitDelivery(t, store, id)
	if !strings.Contains(string(task.Request), fmt.Sprintf(`"size":%d`, 3*callback.SpillAt)) {
		t.Errorf("stored request %s", task.Request)
	}
	if n := countFiles(tmp); n != 0 {
		t.Errorf("%d files left in the temporary directory", n)
	}
}

// TestSmallBodyOverMaxBodyBytes: MaxBodyBytes limits callback-mode bodies
// only; a larger synchronous one passes through.
func TestSmallBodyOverMaxBodyBytes(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{MaxBodyBytes: 64})
	s := &sink{}
	h := rec.Wrap("images_generations", s)
	body := `{"prompt":"` + strings.Repeat("p", 100) + `"}`
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if w := serve(h, req); w.Code != http.StatusCreated || s.n != int64(len(body)) {
		t.Fatalf("answer %d %q, handler read %d bytes", w.Code, w.Body, s.n)
	}
}

// TestLargeBodyReadError: a body that fails while Wrap scans it is 400, as
// before; http.MaxBytesReader's limit is named.
func TestLargeBodyReadError(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	s := &sink{}
	h := rec.Wrap("images_generations", s)
	gen, _ := bigJSON("", "", 4*callback.SpillAt)
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations",
		io.MultiReader(io.LimitReader(gen(), 3*callback.SpillAt), errReader{}))
	req.Header.Set("Content-Type", "application/json")
	errorBody(t, serve(h, req), http.StatusBadRequest, "bad_request", "the request body could not be read")

	req = httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	req.Body = http.MaxBytesReader(w, req.Body, 2*callback.SpillAt)
	h.ServeHTTP(w, req)
	errorBody(t, w, http.StatusBadRequest, "bad_request", fmt.Sprintf("request body must be at most %d bytes", 2*callback.SpillAt))
	if s.calls != 0 {
		t.Errorf("the handler ran %d times", s.calls)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func serve(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// TestLargeBodyNoTempDir: where no temporary file can be created (a
// read-only or missing temporary directory), a large body is held in
// memory instead, as before Wrap streamed bodies: served up to
// MaxBodyBytes, refused with 400 beyond it, never a 500.
func TestLargeBodyNoTempDir(t *testing.T) {
	t.Setenv("TMPDIR", filepath.Join(t.TempDir(), "missing"))
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{MaxBodyBytes: 4 << 20})
	s := &sink{}
	h := rec.Wrap("images_generations", s)
	for _, tc := range []struct {
		size int64
		want int
	}{{2 << 20, http.StatusCreated}, {8 << 20, http.StatusBadRequest}} {
		gen, length := bigJSON(`"model":"gpt-image-1",`, `,"n":1`, tc.size)
		want := sum(gen())
		req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Fatalf("%d bytes: answer %d %s, want %d", length, w.Code, w.Body, tc.want)
		}
		if tc.want == http.StatusCreated && (s.n != length || s.sum() != want) {
			t.Fatalf("%d bytes: the handler read %d bytes, same bytes %v", length, s.n, s.sum() == want)
		}
	}
}
