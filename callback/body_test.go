package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"strconv"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/jsonw"
)

func TestResponseBytes(t *testing.T) {
	cases := []struct {
		name, traceID string
		o             outcome
		want          string
		ok            bool
	}{
		{"Success", "t<1>", outcome{status: 200, body: []byte(" {\"a\" : [1, {\"b\":\"\\u00e9\"}], \"success\":0}\n")},
			`{"success":true,"task_id":"id-1","trace_id":"t\u003c1\u003e","a":[1,{"b":"\u00e9"}]}`, true},
		{"EmptyObject", "", outcome{status: 204, body: []byte(`{}`)},
			`{"success":true,"task_id":"id-1"}`, true},
		{"EscapedKeyDropped", "", outcome{status: 200, body: []byte(`{"task\u005fid":"forged","x":1}`)},
			`{"success":true,"task_id":"id-1","x":1}`, true},
		{"Status3xx", "", outcome{status: 302, body: []byte(`{}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"upstream returned status 302"}}`, false},
		{"ErrorNotObject", "", outcome{status: 500, body: []byte(`{"error":"boom"}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"upstream returned status 500"}}`, false},
		{"ErrorCodeNumber", "", outcome{status: 429, body: []byte(`{"error":{"code":429,"message":"slow down"}}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"slow down"}}`, false},
		// The upstream's own code and message are each kept where it sent a
		// non-empty string (the package documentation's "Responses").
		{"ErrorCodeOnly", "", outcome{status: 429, body: []byte(`{"error":{"code":"rate_limit_exceeded"}}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"rate_limit_exceeded","message":"upstream returned status 429"}}`, false},
		{"ErrorMessageOnly", "", outcome{status: 400, body: []byte(`{"error":{"message":"bad prompt"}}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"bad prompt"}}`, false},
		{"ErrorEmptyAndNull", "", outcome{status: 503, body: []byte(`{"error":{"code":"","message":null}}`)},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"upstream returned status 503"}}`, false},
		// JSON text must be UTF-8: such a body is not stored or sent on.
		{"NotUTF8", "", outcome{status: 200, body: []byte("{\"data\":\"\xff\"}")},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"upstream response is not a JSON object"}}`, false},
		{"TooLarge", "", outcome{status: 200, tooLarge: true},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"upstream response is too large"}}`, false},
		{"RunError", "", outcome{err: errors.New("secret")},
			`{"success":false,"task_id":"id-1","error":{"code":"api_error","message":"task failed"}}`, false},
		{"WrappedTaskError", "", outcome{err: errors.Join(errors.New("x"), &TaskError{Code: "quota", Message: "over \"quota\""})},
			`{"success":false,"task_id":"id-1","error":{"code":"quota","message":"over \"quota\""}}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, _ := verdict("id-1", tc.traceID, tc.o)
			if string(got) != tc.want || ok != tc.ok {
				t.Errorf("got %s (ok %v)\nwant %s (ok %v)", got, ok, tc.want, tc.ok)
			}
			if !json.Valid(got) {
				t.Errorf("not valid JSON: %s", got)
			}
		})
	}
}

func TestCheckCallbackURL(t *testing.T) {
	for _, u := range []string{"http://example.com", "HTTPS://example.com:8443/cb?x=1#f", "http://user:pw@10.0.0.1/", "http://[::1]:80/"} {
		if err := checkCallbackURL(u, true); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range []string{"", "example.com/cb", "//example.com/cb", "ftp://example.com", "http:example.com", "http://", "http://:80/", "javascript:alert(1)",
		"http://exa mple.com/", "http://example.com/\n", "http://example.com/" + strings.Repeat("a", 2030)} {
		if err := checkCallbackURL(u, true); !errors.Is(err, ErrBadCallbackURL) {
			t.Errorf("%q accepted (%v)", u, err)
		}
	}
}

// TestCheckCallbackURLPrivate: unless private networks are allowed, an IP
// literal the delivery guard refuses, in any spelling, and a localhost name
// are refused with ErrBadCallbackURL (and errPrivateCallbackURL); public
// addresses and other names pass (names are checked when connecting).
func TestCheckCallbackURLPrivate(t *testing.T) {
	refused := []string{
		"http://[::ffff:127.0.0.1]/", "http://[::ffff:0:127.0.0.1]/", "http://10.0.0.1/",
		"http://169.254.169.254/", "http://0.0.0.0/", "http://[::1]/", "http://127.0.0.1:8080/cb",
		"http://127.0.0.1./", "http://[::ffff:7f00:1]/", "http://[2002:7f00:1::]/", "http://[fc00::1]/",
		"http://224.0.0.1/", "http://255.255.255.255/", "http://user:pw@192.168.0.1/", "http://localhost/",
		"http://a.b.localhost:80/",
	}
	accepted := []string{"http://93.184.216.34/", "https://[2606:2800:220:1:248:1893:25c8:1946]/cb",
		"http://example.com/", "http://localhost.example.com/", "http://10.0.0.1.nip.io/"}
	for _, u := range refused {
		err := checkCallbackURL(u, false)
		if !errors.Is(err, ErrBadCallbackURL) || !errors.Is(err, errPrivateCallbackURL) {
			t.Errorf("%s: %v, want a refused address", u, err)
		}
		if err := checkCallbackURL(u, true); err != nil {
			t.Errorf("%s with private networks allowed: %v", u, err)
		}
	}
	for _, u := range accepted {
		if err := checkCallbackURL(u, false); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if err := checkCallbackURL("ftp://10.0.0.1/", false); errors.Is(err, errPrivateCallbackURL) || !errors.Is(err, ErrBadCallbackURL) {
		t.Errorf("ftp: %v", err)
	}
}

// seedsJSON and seedsMultipart are also committed under testdata/fuzz.
var seedsJSON = []string{
	`{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb","trace_id":"t1","async":true,"n":1}`,
	`{"callback\u005furl":"http://a.example/","async":false}`,
	`{"prompt":"\"callback_url\": x","nested":{"callback_url":1},"async":null}`,
	`[1,2,{"callback_url":"http://a/"}]`,
	`{"callback_url":"http://a/","callback_url":"http://b/"}`,
	`{"async":true, "s": "\ud83d\ude00 \\ \/", "e": 1e-7, "t": [true,false,null,{},[]]}`,
}

func FuzzInspectJSON(f *testing.F) {
	for _, s := range seedsJSON {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := inspectJSON(body, 1<<40, true)
		if err != nil {
			if _, ok := errors.AsType[*badRequest](err); !ok {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		for _, status := range []int{200, 500} {
			if resp, _, _ := verdict("id", "tr", outcome{status: status, body: body}); !json.Valid(resp) {
				t.Fatalf("response for status %d is not valid JSON: %s", status, resp)
			}
		}
		if !in.callback {
			return
		}
		checkStoredLimit(t, len(in.stored), func(limit int64) error { _, err := inspectJSON(body, limit, true); return err })
		var want bytes.Buffer
		if err := json.Compact(&want, body); err != nil || !bytes.Equal(in.stored, want.Bytes()) {
			t.Fatalf("stored request %s, want the compacted body %s", in.stored, want.Bytes())
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(in.upstream, &m); err != nil {
			t.Fatalf("upstream body %s is not a JSON object: %v", in.upstream, err)
		}
		for _, k := range []string{fieldCallbackURL, fieldTraceID, fieldAsync} {
			if _, ok := m[k]; ok {
				t.Fatalf("upstream body %s still has %s", in.upstream, k)
			}
		}
		var orig map[string]json.RawMessage
		json.Unmarshal(body, &orig)
		for k := range orig {
			if _, ok := m[k]; !ok && k != fieldCallbackURL && k != fieldTraceID && k != fieldAsync {
				t.Fatalf("upstream body %s lost member %q", in.upstream, k)
			}
		}
		if in.callbackURL != "" && checkCallbackURL(in.callbackURL, true) != nil {
			t.Fatalf("accepted callback_url %q", in.callbackURL)
		}
	})
}

func multipartSeed(fields ...string) (body []byte, boundary string) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for i := 0; i+1 < len(fields); i += 2 {
		if strings.HasPrefix(fields[i], "file:") {
			w, _ := mw.CreateFormFile(strings.TrimPrefix(fields[i], "file:"), "f.png")
			io.WriteString(w, fields[i+1])
			continue
		}
		mw.WriteField(fields[i], fields[i+1])
	}
	mw.Close()
	return b.Bytes(), mw.Boundary()
}

func seedsMultipart() (bodies [][]byte, boundaries []string) {
	for _, fields := range [][]string{
		{"prompt", "p", "callback_url", "http://example.com/cb", "trace_id", "t", "file:image", "\x89PNG\r\n--x\r\n"},
		{"async", "true", "file:image[]", "a", "file:image[]", "b", "n", "2"},
		{"callback_url", "ftp://x"},
		{"prompt", "no fields"},
	} {
		b, bd := multipartSeed(fields...)
		bodies, boundaries = append(bodies, b), append(boundaries, bd)
	}
	// A boundary the multipart writer refuses ('*'): a new one is made.
	bodies = append(bodies, []byte(newBoundaryBody))
	boundaries = append(boundaries, "a*b")
	return bodies, boundaries
}

const newBoundaryBody = "--a*b\r\nContent-Disposition: form-data; name=\"async\"\r\n\r\ntrue\r\n" +
	"--a*b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhello\r\n--a*b--\r\n"

func TestMultipartNewBoundary(t *testing.T) {
	in, err := inspectMultipart([]byte(newBoundaryBody), "a*b", 1<<40, true)
	if err != nil || !in.callback {
		t.Fatalf("inspect: %+v, %v", in, err)
	}
	mt, params, err := mime.ParseMediaType(in.contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" || params["boundary"] == "a*b" {
		t.Fatalf("new Content-Type %q (%v)", in.contentType, err)
	}
	form, err := multipart.NewReader(bytes.NewReader(in.upstream), params["boundary"]).ReadForm(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(form.Value) != 1 || form.Value["prompt"][0] != "hello" {
		t.Errorf("upstream form %v", form.Value)
	}
	if string(in.stored) != `{"async":"true","prompt":"hello"}` {
		t.Errorf("stored %s", in.stored)
	}
}

func FuzzInspectMultipart(f *testing.F) {
	bodies, boundaries := seedsMultipart()
	for i := range bodies {
		f.Add(bodies[i], boundaries[i])
	}
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		if boundary == "" {
			return // Wrap never inspects a multipart body without a boundary
		}
		in, err := inspectMultipart(body, boundary, 1<<40, true)
		if err != nil {
			if _, ok := errors.AsType[*badRequest](err); !ok {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if !in.callback {
			return
		}
		if !json.Valid(in.stored) || in.stored[0] != '{' {
			t.Fatalf("stored request is not a JSON object: %s", in.stored)
		}
		checkStoredLimit(t, len(in.stored), func(limit int64) error { _, err := inspectMultipart(body, boundary, limit, true); return err })
		bd := boundary
		if in.contentType != "" {
			_, params, err := mime.ParseMediaType(in.contentType)
			if err != nil {
				t.Fatalf("new Content-Type %q: %v", in.contentType, err)
			}
			bd = params["boundary"]
		}
		mr := multipart.NewReader(bytes.NewReader(in.upstream), bd)
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("upstream body does not parse: %v\n%q", err, in.upstream)
			}
			switch p.FormName() {
			case fieldCallbackURL, fieldTraceID, fieldAsync:
				t.Fatalf("upstream body still has %s", p.FormName())
			}
		}
	})
}

func BenchmarkInspectJSON(b *testing.B) {
	body := []byte(`{"model":"gpt-image-1","prompt":"A watercolor cat wearing a tiny hat, studio light","size":"1024x1024","n":1,` +
		`"callback_url":"https://receiver.example/cb","trace_id":"bench-trace"}`)
	b.ReportAllocs()
	for b.Loop() {
		if in, err := inspectJSON(body, 1<<30, true); err != nil || !in.callback {
			b.Fatal(in, err)
		}
	}
}

func BenchmarkVerdict(b *testing.B) {
	o := outcome{status: 200, body: []byte(`{"created":1721626477,"data":[{"url":"https://img.example/1.png","revised_prompt":"A watercolor cat"}]}`)}
	b.ReportAllocs()
	for b.Loop() {
		if _, ok, _ := verdict("7489df4c-ef03-4de0-b598-e9a590793434", "bench-trace", o); !ok {
			b.Fatal("not ok")
		}
	}
}

// dribble returns its bytes in reads of at most step bytes.
type dribble struct {
	b    []byte
	step int
}

func (d *dribble) Read(p []byte) (int, error) {
	if len(d.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), d.step)], d.b)
	d.b = d.b[n:]
	return n, nil
}

// TestReadBodyGrowsWithBytes: a declared length is not allocated before the
// bytes arrive (a body declaring 32 MiB and sending 10 bytes costs a small
// buffer), an honest body ends in a buffer of its own size, and the limit
// holds however the length is declared.
func TestReadBodyGrowsWithBytes(t *testing.T) {
	const max = 32 << 20
	got, err := readBody(&dribble{b: []byte(`{"a":1}   `), step: 3}, max, max)
	if err != nil || string(got) != `{"a":1}   ` {
		t.Fatalf("got %q, %v", got, err)
	}
	if cap(got) > firstRead {
		t.Errorf("10 bytes of a body declaring 32 MiB took a %d-byte buffer, want at most %d", cap(got), firstRead)
	}
	for _, size := range []int{0, 1, firstRead - 1, firstRead, firstRead + 1, 3 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		for _, declared := range []int64{int64(size), -1} {
			got, err := readBody(&dribble{b: body, step: 1 << 15}, declared, max)
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("size %d declared %d: %d bytes, %v", size, declared, len(got), err)
			}
			if declared >= 0 && cap(got) > size+1 && cap(got) > firstRead {
				t.Errorf("size %d declared: buffer of %d bytes, want at most %d", size, cap(got), size+1)
			}
			if cap(got) > 2*size+firstRead {
				t.Errorf("size %d declared %d: buffer of %d bytes, more than twice the body", size, declared, cap(got))
			}
		}
	}
	for _, declared := range []int64{-1, 100, 1000} {
		if _, err := readBody(&dribble{b: make([]byte, 1001), step: 7}, declared, 1000); !errors.Is(err, errTooLarge) {
			t.Errorf("1001 bytes, declared %d, limit 1000: %v, want errTooLarge", declared, err)
		}
	}
	if _, err := readBody(&dribble{}, 1001, 1000); !errors.Is(err, errTooLarge) {
		t.Errorf("declared 1001, limit 1000: %v, want errTooLarge", err)
	}
}

// checkStoredLimit checks that a body whose stored request is size bytes is
// accepted with a limit of size bytes and refused, with a message naming
// the limit, with one byte less.
func checkStoredLimit(t *testing.T, size int, inspect func(limit int64) error) {
	t.Helper()
	if err := inspect(int64(size)); err != nil {
		t.Fatalf("a %d-byte stored request refused with a limit of %d: %v", size, size, err)
	}
	err := inspect(int64(size - 1))
	br, ok := errors.AsType[*badRequest](err)
	if !ok || !strings.Contains(br.msg, strconv.Itoa(size-1)+" bytes") {
		t.Fatalf("a %d-byte stored request with a limit of %d: %v, want a 400 naming the limit", size, size-1, err)
	}
}

// TestStoredSize: the stored form of a multipart form is sized before it
// is built, exactly; a field of control bytes counts 6 bytes each, a file
// its description whatever its size.
func TestStoredSize(t *testing.T) {
	for _, s := range []string{"", "plain", "\x00\x01\x1f\x7f", "<a&b>", "\\\"\b\f\n\r\t", "é€😀", "\xff\xc3", "\u2028\u2029", strings.Repeat("\x01", 100)} {
		if got, want := stringSize([]byte(s)), int64(len(jsonw.AppendString(nil, s))); got != want {
			t.Errorf("stringSize(%q) = %d, want %d", s, got, want)
		}
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("prompt", strings.Repeat("\x01", 1000))
	mw.WriteField("n", "1")
	mw.WriteField("n", "2")
	fw, _ := mw.CreateFormFile("image", "cat \"1\".png")
	fw.Write(bytes.Repeat([]byte{0}, 100000))
	mw.WriteField("async", "true")
	mw.Close()
	in, err := inspectMultipart(buf.Bytes(), mw.Boundary(), 1<<30, true)
	if err != nil || !in.callback {
		t.Fatal(in, err)
	}
	checkStoredLimit(t, len(in.stored), func(limit int64) error {
		_, err := inspectMultipart(buf.Bytes(), mw.Boundary(), limit, true)
		return err
	})
	if len(in.stored) < 6000 || len(in.stored) > 6400 {
		t.Errorf("a form of 1,000 control bytes and a 100 kB file is stored as %d bytes, want about 6,000 + the file's description", len(in.stored))
	}
}
