package callback

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// scanTiny scans with the smallest bufio buffer, so that strings, escapes
// and keys straddle the buffer's refills.
func scanTiny(body []byte) bool {
	s := jsonScanner{r: bufio.NewReaderSize(bytes.NewReader(body), 16)}
	return s.object()
}

// checkScanJSON: whenever inspectJSON calls a body callback mode or refuses
// it, the streaming scan calls it a candidate (so a body the scan lets
// through unlimited is one inspectJSON would have passed through).
func checkScanJSON(t *testing.T, body []byte) {
	t.Helper()
	in, err := inspectJSON(body, 1<<40, true)
	if !in.callback && err == nil {
		return
	}
	if !scanJSON(bytes.NewReader(body)) || !scanTiny(body) {
		t.Fatalf("scan missed a callback-mode body (callback %v, err %v): %q", in.callback, err, body)
	}
}

var scanJSONCases = []string{
	`{"prompt":"a \"callback_url\":\"http://a/\" \\","callback_url":"http://b/"}`,
	`{"prompt":"\\\\\\\"","n":[1,{"x":"]}"}],"async":true}`,
	`{"p":"` + strings.Repeat(`\\`, 40) + `","trace_id":"t"}`,
	`{"p":"` + strings.Repeat(`\"`, 40) + `","callback_url":""}`,
	`{"async":1}`,
	`{"callback_url":null,"callback_url":null}`,
	`{"async":false,"async":false}`,
	`{"trace_id":5,"prompt":"async"}`,
	` {"n":-1.5e3 , "b":true,"z":null,"o":{},"a":[],"async" :"yes"}`,
	`{"callback_url":false}`,
	`{"a` + strings.Repeat("b", 40) + `":1,"as\u0079nc":true}`,
	`{"\u0063allback_url":"http://c/"}`,
}

func TestScanJSONAgreesWithInspect(t *testing.T) {
	for _, s := range append(scanJSONCases, seedsJSON...) {
		checkScanJSON(t, []byte(s))
	}
	// Not candidates: the scan may stop early or lets them through.
	for _, s := range []string{
		`{"prompt":"a \"callback_url\":\"http://a/\""}`,
		`{"callback_url":null,"async":false,"trace_id":null}`,
		`[{"callback_url":"http://a/"}]`,
		`{"nested":{"callback_url":"http://a/","async":true}}`,
		`{"p":"` + strings.Repeat(`\`, 81) + `","trace_id":"t"}`, // the quote is escaped
		`{"p":1} {"callback_url":"http://a/"}`,
	} {
		if scanJSON(strings.NewReader(s)) || scanTiny([]byte(s)) {
			t.Errorf("%q: a candidate", s)
		}
	}
}

func FuzzScanJSON(f *testing.F) {
	for _, s := range append(scanJSONCases, seedsJSON...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkScanJSON(t, body) })
}

func checkScanMultipart(t *testing.T, body []byte, boundary string) {
	t.Helper()
	in, err := inspectMultipart(body, boundary, 1<<40, true)
	if !in.callback && err == nil {
		return
	}
	if !scanMultipart(bytes.NewReader(body), boundary) {
		t.Fatalf("scan missed a callback-mode form (callback %v, err %v): %q", in.callback, err, body)
	}
}

func TestScanMultipartAgreesWithInspect(t *testing.T) {
	for _, fields := range [][]string{
		{"prompt", "p", "callback_url", "http://a/"},
		{"async", "true"},
		{"async", "false", "async", "false"},
		{"async", "maybe"},
		{"async", strings.Repeat("f", 20)},
		{"trace_id", "t", "async", "1"},
		{"callback_url", ""},
	} {
		body, boundary := multipartSeed(fields...)
		checkScanMultipart(t, body, boundary)
	}
	for _, fields := range [][]string{
		{"prompt", "callback_url"},
		{"async", "false", "prompt", "async"},
	} {
		body, boundary := multipartSeed(fields...)
		if scanMultipart(bytes.NewReader(body), boundary) {
			t.Errorf("%q: a candidate", fields)
		}
	}
}

func FuzzScanMultipart(f *testing.F) {
	bodies, boundaries := seedsMultipart()
	for i := range bodies {
		f.Add(bodies[i], boundaries[i])
	}
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		if boundary == "" {
			return
		}
		checkScanMultipart(t, body, boundary)
	})
}
