package callback_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"testing"

	"github.com/google/uuid"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

func TestJSONHappyPath(t *testing.T) {
	stores := map[string]func(testing.TB) taskstore.Store{"memstore": newMemStore, "sqlitestore": newSQLiteStore}
	for storeName, newStore := range stores {
		for _, traceID := range []string{"trace-1", ""} {
			t.Run(fmt.Sprintf("%s/trace=%q", storeName, traceID), func(t *testing.T) {
				testJSONHappyPath(t, newStore(t), traceID)
			})
		}
	}
}

func testJSONHappyPath(t *testing.T, store taskstore.Store, traceID string) {
	key := make([]byte, 32)
	rand.Read(key)
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	rec := newRecorder(t, store, callback.Options{Secret: secret})
	rc := newReceiver(t, nil)

	var up upstream
	type seen struct {
		principal taskstore.Principal
		taskID    string
	}
	seenc := make(chan seen, 1)
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up.record(r)
		p, _ := taskstore.FromContext(r.Context())
		id, _ := callback.TaskID(r.Context())
		seenc <- seen{p, id}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "{\"created\": 1721626477,\n \"data\": [{\"url\": \"https://img.example/1.png\"}]}\n")
	})
	caller := taskstore.Principal{ApplicationID: "app-1", UserID: "user-1", CredentialID: "cred-1"}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.Wrap("images_generations", images).ServeHTTP(w, r.WithContext(taskstore.NewContext(r.Context(), caller)))
	})

	traceMember := ""
	if traceID != "" {
		traceMember = `, "trace_id": "` + traceID + `"`
	}
	body := `{"model": "gpt-image-1", "prompt": "A cat <3", "callback_url": "` + rc.URL + `/cb?x=1"` + traceMember + `, "n": 1}`
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations?q=1", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("X-Custom", "kept")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	id := acceptedID(t, w, traceID)

	// The stored request is the body as sent (compacted), callback_url included.
	task := waitDelivery(t, store, id)
	if got, want := string(task.Request), compact(t, body); got != want {
		t.Errorf("stored request %s, want %s", got, want)
	}
	if task.Type != "images_generations" || task.TraceID != traceID || task.Callback.URL != rc.URL+"/cb?x=1" {
		t.Errorf("task type %q trace %q url %q", task.Type, task.TraceID, task.Callback.URL)
	}
	if task.ApplicationID != "app-1" || task.UserID != "user-1" || task.CredentialID != "cred-1" {
		t.Errorf("principal not stamped: %+v", task)
	}
	if task.StartedAt.IsZero() || task.StartedAt.Before(task.CreatedAt) || task.FinishedAt.Before(task.StartedAt) {
		t.Errorf("times created %v started %v finished %v", task.CreatedAt, task.StartedAt, task.FinishedAt)
	}

	// The response: success, task_id, trace_id first, then the upstream's members.
	want := `{"success":true,"task_id":"` + id + `",` + `"created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`
	if traceID != "" {
		want = `{"success":true,"task_id":"` + id + `","trace_id":"` + traceID + `","created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`
	}
	if string(task.Response) != want {
		t.Errorf("response\n got %s\nwant %s", task.Response, want)
	}

	// The upstream saw the body without the callback-mode fields, with the
	// request's method, URL, headers and principal.
	s := <-seenc
	ur, ubody := up.last()
	if got, want := string(ubody), `{"model":"gpt-image-1","prompt":"A cat <3","n":1}`; got != want {
		t.Errorf("upstream body %s, want %s", got, want)
	}
	if ur.ContentLength != int64(len(ubody)) || ur.Header.Get("Content-Length") != "" {
		t.Errorf("upstream ContentLength %d, header %q, body %d bytes", ur.ContentLength, ur.Header.Get("Content-Length"), len(ubody))
	}
	if ur.Method != http.MethodPost || ur.URL.String() != "/v1/images/generations?q=1" || ur.Header.Get("X-Custom") != "kept" {
		t.Errorf("upstream request %s %s X-Custom=%q", ur.Method, ur.URL, ur.Header.Get("X-Custom"))
	}
	if s.principal != caller || s.taskID != id {
		t.Errorf("upstream context principal %+v task %q", s.principal, s.taskID)
	}

	// The callback body is the stored response, signed.
	if task.CallbackStatus() != taskstore.CallbackDelivered || task.Callback.Attempts != 1 || task.Callback.LastStatus != 200 {
		t.Errorf("callback state %v %+v", task.CallbackStatus(), task.Callback)
	}
	ds := rc.deliveries()
	if len(ds) != 1 {
		t.Fatalf("receiver got %d deliveries", len(ds))
	}
	d := ds[0]
	if !bytes.Equal(d.body, task.Response) {
		t.Errorf("callback body %s, stored response %s", d.body, task.Response)
	}
	if d.header.Get("webhook-id") != id || d.header.Get("Content-Type") != "application/json" || d.header.Get("webhook-timestamp") == "" {
		t.Errorf("callback headers %v", d.header)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(d.body, d.header); err != nil {
		t.Errorf("signature does not verify: %v", err)
	}
}

func TestAsyncWithoutCallback(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	var up upstream
	h := rec.Wrap("images_generations", jsonHandler(&up, 200, `{"data":[]}`))
	id := acceptedID(t, post(h, "application/json", `{"prompt":"p","async":true,"trace_id":"t-9"}`), "t-9")
	task := waitFinished(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackNone {
		t.Errorf("delivery state %v, want none", task.CallbackStatus())
	}
	if got, want := string(task.Response), `{"success":true,"task_id":"`+id+`","trace_id":"t-9","data":[]}`; got != want {
		t.Errorf("response %s, want %s", got, want)
	}
	if _, body := up.last(); string(body) != `{"prompt":"p"}` {
		t.Errorf("upstream body %s", body)
	}
}

// trace_id is limited to 128 characters (the README's "Limits"), not bytes.
func TestTraceIDCountsCharacters(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	var up upstream
	h := rec.Wrap("images_generations", jsonHandler(&up, 200, `{"data":[]}`))
	trace := strings.Repeat("é", 128) // 256 bytes
	id := acceptedID(t, post(h, "application/json", `{"prompt":"p","async":true,"trace_id":"`+trace+`"}`), trace)
	if task := waitFinished(t, store, id); task.TraceID != trace {
		t.Errorf("stored trace_id %q", task.TraceID)
	}
	errorBody(t, post(h, "application/json", `{"prompt":"p","async":true,"trace_id":"`+trace+`é"}`),
		http.StatusBadRequest, "bad_request", "trace_id must be a string of at most 128 characters")
}

func TestMultipartEdit(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	rc := newReceiver(t, nil)

	imgA := make([]byte, 20000)
	rand.Read(imgA)
	copy(imgA[100:], "\r\n--not-the-boundary\r\n") // boundary-like bytes must survive
	imgB := []byte("second image")

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("model", "gpt-image-1")
	mw.WriteField("prompt", "A cat\nwearing a \"hat\"")
	mw.WriteField("callback_url", rc.URL+"/cb")
	mw.WriteField("trace_id", "edit-1")
	addFile := func(name, filename, ct string, data []byte) {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="%s"; filename="%s"`, name, filename))
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		p, _ := mw.CreatePart(h)
		p.Write(data)
	}
	addFile("image[]", "a.png", "image/png", imgA)
	addFile("image[]", "b.webp", "image/webp", imgB)
	addFile("mask", "mask.bin", "", imgB) // no Content-Type: application/octet-stream
	mw.WriteField("tag", "x")
	mw.WriteField("tag", "y")
	mw.WriteField("async", "true")
	mw.Close()

	type seen struct {
		form  map[string][]string
		files map[string][][]byte
		ct    string
	}
	seenc := make(chan seen, 1)
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseMultipartForm(1 << 20); err != nil {
			t.Errorf("upstream cannot parse the multipart body: %v", err)
			w.WriteHeader(400)
			return
		}
		s := seen{form: r.MultipartForm.Value, files: map[string][][]byte{}, ct: r.Header.Get("Content-Type")}
		for name, fhs := range r.MultipartForm.File {
			for _, fh := range fhs {
				f, _ := fh.Open()
				b, _ := io.ReadAll(f)
				f.Close()
				s.files[name] = append(s.files[name], b)
			}
		}
		seenc <- s
		io.WriteString(w, `{"created":1,"data":[{"b64_json":"AAAA"}]}`)
	})
	req := httptest.NewRequest(http.MethodPost, "/v1/images/edits", bytes.NewReader(buf.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	w := httptest.NewRecorder()
	rec.Wrap("images_edits", images).ServeHTTP(w, req)
	id := acceptedID(t, w, "edit-1")

	task := waitDelivery(t, store, id)
	sumA, sumB := sha256.Sum256(imgA), sha256.Sum256(imgB)
	wantReq := `{"model":"gpt-image-1","prompt":"A cat\nwearing a \"hat\"","callback_url":"` + rc.URL + `/cb","trace_id":"edit-1",` +
		`"image[]":[{"filename":"a.png","content_type":"image/png","size":20000,"sha256":"` + hex.EncodeToString(sumA[:]) + `"},` +
		`{"filename":"b.webp","content_type":"image/webp","size":12,"sha256":"` + hex.EncodeToString(sumB[:]) + `"}],` +
		`"mask":{"filename":"mask.bin","content_type":"application/octet-stream","size":12,"sha256":"` + hex.EncodeToString(sumB[:]) + `"},` +
		`"tag":["x","y"],"async":"true"}`
	if string(task.Request) != wantReq {
		t.Errorf("stored request\n got %s\nwant %s", task.Request, wantReq)
	}
	if task.CallbackStatus() != taskstore.CallbackDelivered {
		t.Errorf("delivery state %v (%+v)", task.CallbackStatus(), task.Callback)
	}
	if want := `{"success":true,"task_id":"` + id + `","trace_id":"edit-1","created":1,"data":[{"b64_json":"AAAA"}]}`; string(task.Response) != want {
		t.Errorf("response %s, want %s", task.Response, want)
	}

	s := <-seenc
	if s.ct != mw.FormDataContentType() {
		t.Errorf("upstream Content-Type %q, want the original %q", s.ct, mw.FormDataContentType())
	}
	for _, f := range []string{"callback_url", "trace_id", "async"} {
		if _, ok := s.form[f]; ok {
			t.Errorf("upstream still got field %s", f)
		}
	}
	if s.form["model"][0] != "gpt-image-1" || s.form["prompt"][0] != "A cat\nwearing a \"hat\"" || len(s.form["tag"]) != 2 {
		t.Errorf("upstream form %v", s.form)
	}
	if fs := s.files["image[]"]; len(fs) != 2 || !bytes.Equal(fs[0], imgA) || !bytes.Equal(fs[1], imgB) {
		t.Errorf("upstream files not intact (%d files)", len(fs))
	}
}

func TestPassthroughUntouched(t *testing.T) {
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("prompt", "no callback here")
	mw.Close()
	var mpAsync bytes.Buffer
	mwAsync := multipart.NewWriter(&mpAsync)
	mwAsync.WriteField("prompt", "p")
	mwAsync.WriteField("async", "false")
	mwAsync.Close()

	cases := []struct{ name, contentType, body string }{
		{"JSONWithoutCallback", "application/json", "{\"model\": \"m\",\n  \"prompt\": \"p\"}"},
		{"JSONAsyncFalse", "application/json", `{"prompt":"p", "async": false}`},
		{"JSONCallbackNull", "application/json", `{"prompt":"p","callback_url":null}`},
		{"JSONArray", "application/json", `[{"callback_url":"http://127.0.0.1/cb"}]`},
		{"InvalidJSON", "application/json", `{"callback_url":"http://127.0.0.1/cb"`},
		{"TextPlain", "text/plain", `{"callback_url":"http://127.0.0.1/cb"}`},
		{"NoContentType", "", `{"callback_url":"http://127.0.0.1/cb"}`},
		{"MultipartWithoutCallback", mw.FormDataContentType(), mp.String()},
		{"MultipartAsyncFalse", mwAsync.FormDataContentType(), mpAsync.String()},
		{"MalformedMultipart", "multipart/form-data; boundary=xyz", "callback_url garbage"},
	}
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var up upstream
			var gotLen int64
			h := rec.Wrap("images_generations", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotLen = r.ContentLength
				up.record(r)
				w.Header().Set("X-Upstream", "yes")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, "sync answer")
			}))
			req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(tc.body))
			if tc.contentType != "" {
				req.Header.Set("Content-Type", tc.contentType)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusCreated || w.Body.String() != "sync answer" || w.Header().Get("X-Upstream") != "yes" {
				t.Errorf("answer %d %q: not the handler's", w.Code, w.Body)
			}
			if _, body := up.last(); string(body) != tc.body {
				t.Errorf("upstream body %q, want the original %q", body, tc.body)
			}
			if gotLen != int64(len(tc.body)) {
				t.Errorf("ContentLength %d, want %d", gotLen, len(tc.body))
			}
			if n := countTasks(t, store); n != 0 {
				t.Errorf("%d tasks stored", n)
			}
		})
	}
}

func TestBadFieldsRefused(t *testing.T) {
	const (
		badURL   = "callback_url must be an absolute http or https URL"
		badTrace = "trace_id must be a string of at most 128 characters"
	)
	form := func(fields ...string) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		for i := 0; i < len(fields); i += 2 {
			mw.WriteField(fields[i], fields[i+1])
		}
		mw.Close()
		return mw.FormDataContentType(), b.String()
	}
	// fileForm is a valid callback_url field plus, unless name is that
	// field itself, the field name sent as a file part holding value.
	fileForm := func(name, value string) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		if name != "callback_url" {
			mw.WriteField("callback_url", "http://127.0.0.1/cb")
		}
		fw, _ := mw.CreateFormFile(name, "field.txt")
		io.WriteString(fw, value)
		mw.Close()
		return mw.FormDataContentType(), b.String()
	}
	ok := `"callback_url":"http://127.0.0.1/cb"`
	cases := []struct{ name, ct, body, msg string }{
		{"FTPScheme", "application/json", `{"callback_url":"ftp://example.com/cb"}`, badURL},
		{"Relative", "application/json", `{"callback_url":"/cb"}`, badURL},
		{"Empty", "application/json", `{"callback_url":""}`, badURL},
		{"NotString", "application/json", `{"callback_url":12}`, badURL},
		{"NoHost", "application/json", `{"callback_url":"http://"}`, badURL},
		// URLs the sender would never try (webhook.CheckURL).
		{"PortTooBig", "application/json", `{"callback_url":"http://example.com:99999/cb"}`, badURL},
		{"PortZero", "application/json", `{"callback_url":"http://example.com:0/cb"}`, badURL},
		{"EmptyPort", "application/json", `{"callback_url":"http://example.com:/cb"}`, badURL},
		{"HexHost", "application/json", `{"callback_url":"http://0x7f000001/cb"}`, badURL},
		{"DecimalHost", "application/json", `{"callback_url":"http://2130706433/cb"}`, badURL},
		{"Opaque", "application/json", `{"callback_url":"mailto:a@b.c"}`, badURL},
		{"TooLong", "application/json", `{"callback_url":"http://example.com/` + strings.Repeat("a", 2048) + `"}`, badURL},
		{"Duplicate", "application/json", `{"callback_url":"http://a.example/","callback_url":"http://b.example/"}`, "callback_url must not appear more than once"},
		{"TraceTooLong", "application/json", `{` + ok + `,"trace_id":"` + strings.Repeat("x", 129) + `"}`, badTrace},
		{"TraceNotString", "application/json", `{` + ok + `,"trace_id":5}`, badTrace},
		{"AsyncNotBool", "application/json", `{"async":"yes"}`, "async must be a boolean"},
		{"AsyncBadWithURL", "application/json", `{` + ok + `,"async":1}`, "async must be a boolean"},
		{"InvalidUTF8", "application/json", `{` + ok + `,"prompt":"` + "\xff\xfe" + `"}`, "the request body must be valid UTF-8"},
		{"OverlongUTF8Trace", "application/json", `{` + ok + `,"trace_id":"` + "\xc0\xaf" + `"}`, "the request body must be valid UTF-8"},
	}
	ct, body := form("prompt", "p", "callback_url", "gopher://x/")
	cases = append(cases, struct{ name, ct, body, msg string }{"MultipartBadURL", ct, body, badURL})
	ct, body = form("prompt", "p", "async", "maybe")
	cases = append(cases, struct{ name, ct, body, msg string }{"MultipartBadAsync", ct, body, "async must be true or false"})
	ct, body = fileForm("callback_url", "http://127.0.0.1/cb")
	cases = append(cases, struct{ name, ct, body, msg string }{"MultipartURLAsFile", ct, body, badURL})
	ct, body = fileForm("trace_id", "t-1")
	cases = append(cases, struct{ name, ct, body, msg string }{"MultipartTraceAsFile", ct, body, badTrace})
	ct, body = fileForm("async", "true")
	cases = append(cases, struct{ name, ct, body, msg string }{"MultipartAsyncAsFile", ct, body, "async must be true or false"})

	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	var up upstream
	h := rec.Wrap("images_generations", jsonHandler(&up, 200, `{}`))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errorBody(t, post(h, tc.ct, tc.body), http.StatusBadRequest, "bad_request", tc.msg)
		})
	}
	t.Run("BodyTooLarge", func(t *testing.T) {
		small := newRecorder(t, store, callback.Options{MaxBodyBytes: 64})
		h := small.Wrap("images_generations", jsonHandler(&up, 200, `{}`))
		errorBody(t, post(h, "application/json", `{"callback_url":"http://127.0.0.1/cb","prompt":"`+strings.Repeat("p", 64)+`"}`),
			http.StatusBadRequest, "bad_request", "request body must be at most 64 bytes")
	})
	if n := countTasks(t, store); n != 0 {
		t.Errorf("%d tasks stored", n)
	}
	if up.count() != 0 {
		t.Errorf("the upstream ran %d times", up.count())
	}
}

func TestPrincipalOption(t *testing.T) {
	store := newMemStore(t)
	want := taskstore.Principal{ApplicationID: "from-header"}
	rec := newRecorder(t, store, callback.Options{Principal: func(r *http.Request) taskstore.Principal {
		return taskstore.Principal{ApplicationID: r.Header.Get("X-App")}
	}})
	seen := make(chan taskstore.Principal, 1)
	h := rec.Wrap("images_generations", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := taskstore.FromContext(r.Context())
		seen <- p
		io.WriteString(w, `{}`)
	}))
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"async":true}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-App", "from-header")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	id := acceptedID(t, w, "")
	if task := waitFinished(t, store, id); task.ApplicationID != "from-header" {
		t.Errorf("stored application_id %q", task.ApplicationID)
	}
	if p := <-seen; p != want {
		t.Errorf("upstream principal %+v, want %+v", p, want)
	}
}

func TestWrapPanicsOnBadType(t *testing.T) {
	rec := newRecorder(t, newMemStore(t), callback.Options{})
	for _, typ := range []string{"", strings.Repeat("t", 129)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Wrap(%q) did not panic", typ)
				}
			}()
			rec.Wrap(typ, http.NotFoundHandler())
		}()
	}
}

func TestTaskIDsAreVersion7(t *testing.T) {
	rec := newRecorder(t, newMemStore(t), callback.Options{})
	h := rec.Wrap("images_generations", jsonHandler(&upstream{}, http.StatusOK, `{"data":[]}`))
	var prev string
	for range 50 {
		id := acceptedID(t, post(h, "application/json", `{"prompt":"p","async":true}`), "")
		u, err := uuid.Parse(id)
		if err != nil || u.Version() != 7 {
			t.Fatalf("task id %q: version %d, %v", id, u.Version(), err)
		}
		if id <= prev {
			t.Fatalf("task id %q does not sort after %q", id, prev)
		}
		prev = id
	}
	// Submit makes the same kind of id.
	id, err := rec.Submit(context.Background(), callback.Submission{Type: "images_generations", Request: json.RawMessage(`{"prompt":"p"}`)},
		func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"data":[]}`), nil })
	if err != nil {
		t.Fatal(err)
	}
	if u, err := uuid.Parse(id); err != nil || u.Version() != 7 || id <= prev {
		t.Errorf("Submit id %q after %q", id, prev)
	}
}
