package handler

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestParseSeconds(t *testing.T) {
	for _, tc := range []struct {
		in     string
		sec    int64
		nsec   int64
		beyond bool
		bad    bool
	}{
		{in: "0"},
		{in: "-0"},
		{in: "0.000"},
		{in: "0e5"},
		{in: "-0.0e-3"},
		{in: "1", sec: 1},
		{in: "1763142607.967", sec: 1763142607, nsec: 967_000_000},
		{in: "1763142607.9670", sec: 1763142607, nsec: 967_000_000},
		{in: "1763142607.000000001", sec: 1763142607, nsec: 1},
		{in: "1763142607.0000000001", sec: 1763142607, beyond: true},
		{in: "1763142607.0000000000", sec: 1763142607},
		{in: "1.763142607967e9", sec: 1763142607, nsec: 967_000_000},
		{in: "1.763142607967E+9", sec: 1763142607, nsec: 967_000_000},
		{in: "17631426079670e-4", sec: 1763142607, nsec: 967_000_000},
		{in: "0.5", nsec: 500_000_000},
		{in: "0.0015", nsec: 1_500_000},
		{in: "5e-10", beyond: true},
		{in: "1e-1000000000000", beyond: true},
		{in: "00012", sec: 12},
		{in: "10000000000", sec: 10_000_000_000},
		{in: "10000000000.000", sec: 10_000_000_000},
		{in: "1e10", sec: 10_000_000_000},
		{in: "9999999999.999999999999999999999999999999", sec: 9999999999, nsec: 999_999_999, beyond: true},
		{in: "1" + strings.Repeat("0", 9) + "." + strings.Repeat("0", 40) + "1", sec: 1_000_000_000, beyond: true},
		{in: "10000000000.000000000001", bad: true},
		{in: "10000000001", bad: true},
		{in: "1e11", bad: true},
		{in: "1e300", bad: true},
		{in: "1e1000000000000", bad: true},
		{in: "-1", bad: true},
		{in: "-1e-300", bad: true},
		{in: `"1"`, bad: true},
		{in: "true", bad: true},
		{in: "[1]", bad: true},
	} {
		sec, nsec, beyond, err := parseSeconds("x", []byte(tc.in))
		if (err != nil) != tc.bad {
			t.Errorf("%s: err = %v, want error %v", tc.in, err, tc.bad)
			continue
		}
		if !tc.bad && (sec != tc.sec || nsec != tc.nsec || beyond != tc.beyond) {
			t.Errorf("%s = %d, %d, %v; want %d, %d, %v", tc.in, sec, nsec, beyond, tc.sec, tc.nsec, tc.beyond)
		}
	}
}

func TestParseInt(t *testing.T) {
	for _, tc := range []struct {
		in string
		n  int64
		ok bool
	}{
		{"0", 0, true}, {"-0", 0, true}, {"12", 12, true}, {"-7", -7, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"99999999999999999999", 1<<63 - 1, true},
		{"-99999999999999999999", -1 << 63, true},
		{"1.0", 0, false}, {"1e3", 0, false}, {`"3"`, 0, false}, {"-", 0, false}, {"", 0, false}, {"null", 0, false},
	} {
		n, ok := parseInt([]byte(tc.in))
		if n != tc.n || ok != tc.ok {
			t.Errorf("parseInt(%s) = %d, %v; want %d, %v", tc.in, n, ok, tc.n, tc.ok)
		}
	}
}

func TestJSONContentType(t *testing.T) {
	for ct, want := range map[string]bool{
		"":                                 true,
		"application/json":                 true,
		"application/json; charset=utf-8":  true,
		"APPLICATION/JSON;charset=UTF-8":   true,
		"application/json ; q=1":           true,
		"text/json":                        false,
		"application/jsonx":                false,
		"application/json-patch+json":      false,
		"application/problem+json":         false,
		"text/plain":                       false,
		"application/json; charset":        false,
		"multipart/form-data; boundary=xx": false,
	} {
		if got := jsonContentType(ct); got != want {
			t.Errorf("jsonContentType(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc":     "abc",
		"bearer abc":     "abc",
		"BEARER\tabc":    "abc",
		"Bearer   abc  ": "abc",
		"Bearer a b":     "a b",
		"Bearer":         "",
		"Bearer ":        "",
		"Bearerabc":      "",
		"Basic abc":      "",
		"abc":            "",
		"":               "",
	} {
		got, ok := bearerToken(h)
		if got != want || ok != (want != "") {
			t.Errorf("bearerToken(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
}

// TestParseRequestAllocs keeps the hot path lean: parsing a retrieve by id
// allocates only the id string.
func TestParseRequestAllocs(t *testing.T) {
	body := []byte(`{"action":"retrieve","id":"7489df4c-ef03-4de0-b598-e9a590793434"}`)
	allocs := testing.AllocsPerRun(100, func() {
		var req request
		if err := parseRequest(body, &req); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("parseRequest allocates %v times, want at most 1", allocs)
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

// TestReadBodyGrowsWithBytes: a declared Content-Length is not allocated
// before the bytes arrive, a body that fits the buffer allocates nothing,
// and the 1 MiB limit holds however the length is declared.
func TestReadBodyGrowsWithBytes(t *testing.T) {
	got, err := readBody(&dribble{b: []byte(`{"id":"x"}`), step: 4}, MaxBodyBytes, nil)
	if err != nil || string(got) != `{"id":"x"}` {
		t.Fatalf("got %q, %v", got, err)
	}
	if cap(got) > 512 {
		t.Errorf("10 bytes of a body declaring 1 MiB took a %d-byte buffer", cap(got))
	}
	buf := make([]byte, 0, 4096)
	small := []byte(`{"action":"retrieve","id":"abc"}`)
	d := &dribble{}
	allocs := testing.AllocsPerRun(100, func() {
		*d = dribble{b: small, step: 100}
		readBody(d, int64(len(small)), buf)
	})
	if allocs > 0 {
		t.Errorf("a small body allocated %v times", allocs)
	}
	for _, size := range []int{0, 4095, 4096, 4097, MaxBodyBytes} {
		body := bytes.Repeat([]byte(" "), size)
		for _, declared := range []int64{int64(size), -1} {
			got, err := readBody(&dribble{b: body, step: 1 << 14}, declared, make([]byte, 0, 4096))
			if err != nil || len(got) != size {
				t.Fatalf("size %d declared %d: %d bytes, %v", size, declared, len(got), err)
			}
			if declared >= 0 && cap(got) > max(size+1, 4096) {
				t.Errorf("size %d declared: buffer of %d bytes, want at most %d", size, cap(got), size+1)
			}
		}
	}
	for _, declared := range []int64{-1, 100} {
		if _, err := readBody(&dribble{b: make([]byte, MaxBodyBytes+1), step: 1 << 16}, declared, nil); err != errTooLarge {
			t.Errorf("1 MiB + 1, declared %d: %v, want errTooLarge", declared, err)
		}
	}
}
