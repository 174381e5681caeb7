package standin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// newServer serves g on a loopback server with the routes tasksd uses.
func newServer(tb testing.TB, g *Generator) *httptest.Server {
	tb.Helper()
	mux := http.NewServeMux()
	mux.Handle("/v1/images/generations", g.Generations())
	mux.Handle("/v1/images/edits", g.Edits())
	mux.Handle("/v1/chat/completions", g.ChatCompletions())
	mux.Handle("GET /files/", g.Files())
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(tb testing.TB, method, url, contentType string, body []byte) answer {
	tb.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func postJSON(tb testing.TB, url, body string) answer {
	tb.Helper()
	return do(tb, http.MethodPost, url, "application/json", []byte(body))
}

type imagesResp struct {
	Created int64 `json:"created"`
	Data    []struct {
		URL           *string `json:"url"`
		B64JSON       *string `json:"b64_json"`
		RevisedPrompt string  `json:"revised_prompt"`
	} `json:"data"`
}

func decodeImages(tb testing.TB, a answer) imagesResp {
	tb.Helper()
	if a.status != http.StatusOK {
		tb.Fatalf("status %d, body %s", a.status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q", ct)
	}
	var r imagesResp
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		tb.Fatalf("decoding %s: %v", a.body, err)
	}
	return r
}

// checkPNG decodes b as a PNG of side × side pixels.
func checkPNG(tb testing.TB, b []byte, side int) {
	tb.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		tb.Fatalf("not a PNG: %v", err)
	}
	if got := img.Bounds(); got.Min.X != 0 || got.Min.Y != 0 || got.Dx() != side || got.Dy() != side {
		tb.Fatalf("bounds %v, want %dx%d", got, side, side)
	}
}

// checkError asserts an OpenAI-style error answer, exactly:
// {"error":{"message":…,"type":…,"param":…,"code":…}}.
func checkError(tb testing.TB, a answer, status int, typ string, param any, code any, msgPart string) {
	tb.Helper()
	if a.status != status {
		tb.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q", ct)
	}
	var top map[string]map[string]any
	if err := json.Unmarshal(a.body, &top); err != nil {
		tb.Fatalf("body %s: %v", a.body, err)
	}
	if len(top) != 1 || top["error"] == nil {
		tb.Fatalf("body %s: want only an error object", a.body)
	}
	e := top["error"]
	if keys := slices.Sorted(maps.Keys(e)); !slices.Equal(keys, []string{"code", "message", "param", "type"}) {
		tb.Fatalf("error keys %v in %s", keys, a.body)
	}
	if e["type"] != typ {
		tb.Errorf("type %v, want %s", e["type"], typ)
	}
	if e["param"] != param {
		tb.Errorf("param %#v, want %#v", e["param"], param)
	}
	if e["code"] != code {
		tb.Errorf("code %#v, want %#v", e["code"], code)
	}
	msg, _ := e["message"].(string)
	if msg == "" || !strings.Contains(msg, msgPart) {
		tb.Errorf("message %q, want it to contain %q", msg, msgPart)
	}
}

func TestGenerationsErrors(t *testing.T) {
	srv := newServer(t, New(Options{}))
	long := strings.Repeat("é", maxPrompt+1)
	for _, tc := range []struct {
		name, body string
		param      any // nil or the param name
		msg        string
	}{
		{"EmptyBody", ``, nil, "could not parse the JSON body"},
		{"InvalidJSON", `{"prompt":`, nil, "could not parse the JSON body"},
		{"TrailingData", `{"prompt":"a"} {}`, nil, "could not parse the JSON body"},
		{"NotAnObject", `["prompt"]`, nil, "must be a JSON object"},
		{"StringBody", `"a cat"`, nil, "must be a JSON object"},
		{"MissingPrompt", `{"n":1}`, "prompt", "Missing required parameter: 'prompt'."},
		{"NullPrompt", `{"prompt":null}`, "prompt", "Missing required parameter: 'prompt'."},
		{"PromptNumber", `{"prompt":42}`, "prompt", "expected a string, but got an integer instead"},
		{"PromptArray", `{"prompt":["a"]}`, "prompt", "expected a string, but got an array instead"},
		{"EmptyPrompt", `{"prompt":""}`, "prompt", "empty string"},
		{"BlankPrompt", `{"prompt":" \n\t"}`, "prompt", "empty string"},
		{"PromptTooLong", `{"prompt":"` + long + `"}`, "prompt", "maximum length 32000, but got a string with length 32001"},
		{"NZero", `{"prompt":"a","n":0}`, "n", "Expected a value >= 1, but got 0"},
		{"NNegative", `{"prompt":"a","n":-3}`, "n", "Expected a value >= 1, but got -3"},
		{"NFive", `{"prompt":"a","n":5}`, "n", "Expected a value <= 4, but got 5"},
		{"NHuge", `{"prompt":"a","n":123456789012345678901234567890}`, "n", "Expected a value <= 4"},
		{"NString", `{"prompt":"a","n":"2"}`, "n", "expected an integer, but got a string instead"},
		{"NDecimal", `{"prompt":"a","n":1.5}`, "n", "expected an integer, but got a decimal number instead"},
		{"NBool", `{"prompt":"a","n":true}`, "n", "expected an integer, but got a boolean instead"},
		{"BadSize", `{"prompt":"a","size":"300x300"}`, "size", "Invalid value: '300x300'"},
		{"UnsupportedSize", `{"prompt":"a","size":"1792x1024"}`, "size", "Supported values are"},
		{"SizeNumber", `{"prompt":"a","size":256}`, "size", "expected a string, but got an integer"},
		{"BadFormat", `{"prompt":"a","response_format":"xml"}`, "response_format", "Invalid value: 'xml'"},
		{"FormatObject", `{"prompt":"a","response_format":{}}`, "response_format", "expected a string, but got an object"},
		{"ModelNumber", `{"prompt":"a","model":3}`, "model", "expected a string, but got an integer"},
		{"UnknownField", `{"prompt":"a","callback_url":"https://example.com/cb","frobnicate":1}`, "frobnicate", "Unrecognized request argument supplied: frobnicate"},
		{"UnknownFieldsSorted", `{"prompt":"a","zz":1,"aa":true,"async":true}`, "aa", "Unrecognized request argument supplied: aa"},
		{"Stream", `{"prompt":"a","stream":true}`, "stream", "does not stream"},
		{"StreamString", `{"prompt":"a","stream":"no"}`, "stream", "expected a boolean, but got a string"},
		{"OutputFormat", `{"prompt":"a","output_format":"jpeg"}`, "output_format", "only 'png'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := postJSON(t, srv.URL+"/v1/images/generations", tc.body)
			checkError(t, a, http.StatusBadRequest, typeInvalid, tc.param, nil, tc.msg)
		})
	}

	t.Run("MethodNotAllowed", func(t *testing.T) {
		a := do(t, http.MethodGet, srv.URL+"/v1/images/generations", "", nil)
		checkError(t, a, http.StatusMethodNotAllowed, typeInvalid, nil, nil, "use POST")
		if got := a.header.Get("Allow"); got != "POST" {
			t.Errorf("Allow %q", got)
		}
	})
	t.Run("BodyTooLarge", func(t *testing.T) {
		body := `{"prompt":"` + strings.Repeat("a", maxJSONBytes) + `"}`
		a := postJSON(t, srv.URL+"/v1/images/generations", body)
		checkError(t, a, http.StatusRequestEntityTooLarge, typeInvalid, nil, nil, "too large")
	})
}

func TestGenerationsAccepted(t *testing.T) {
	now := time.Date(2025, 7, 22, 5, 34, 37, 0, time.UTC)
	srv := newServer(t, New(Options{Now: func() time.Time { return now }}))
	for _, body := range []string{
		`{"prompt":"a cat"}`,
		`{"prompt":"a cat","n":null,"size":null,"response_format":null,"model":null,"stream":false}`,
		`{"prompt":"a cat","model":"gpt-image-1","quality":"high","style":"vivid","user":"u1","background":"auto","moderation":"low","output_compression":100,"output_format":"png","partial_images":0}`,
		`{"prompt":"a cat","size":"auto"}`,
		` {"prompt":"a cat"} `,
	} {
		r := decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", body))
		if r.Created != now.Unix() {
			t.Errorf("%s: created %d, want %d", body, r.Created, now.Unix())
		}
		if len(r.Data) != 1 || r.Data[0].URL == nil || r.Data[0].B64JSON != nil || r.Data[0].RevisedPrompt != "a cat" {
			t.Errorf("%s: data %+v", body, r.Data)
		}
	}
}

// Callback-mode fields on a synchronous request are ignored; a body that is
// not sent as JSON is refused.
func TestGenerationsCallbackFieldsAndContentType(t *testing.T) {
	srv := newServer(t, New(Options{}))
	url := srv.URL + "/v1/images/generations"
	r := decodeImages(t, postJSON(t, url, `{"prompt":"a cat","trace_id":"t-1","async":false,"callback_url":null}`))
	if len(r.Data) != 1 {
		t.Fatalf("data %+v", r.Data)
	}
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "json"} {
		a := do(t, http.MethodPost, url, ct, []byte(`{"prompt":"a cat"}`))
		if a.status != http.StatusBadRequest || !bytes.Contains(a.body, []byte("expected application/json")) {
			t.Errorf("Content-Type %s: %d %s", ct, a.status, a.body)
		}
	}
	if a := do(t, http.MethodPost, url, "", []byte(`{"prompt":"a cat"}`)); a.status != http.StatusOK {
		t.Errorf("no Content-Type: %d %s", a.status, a.body)
	}
}

var fileURL = regexp.MustCompile(`^http://127\.0\.0\.1:\d+/files/[0-9a-f]{32}\.png$`)

func TestGenerationsNAndSize(t *testing.T) {
	srv := newServer(t, New(Options{}))
	for _, tc := range []struct{ size, n int }{{256, 1}, {256, 2}, {256, 4}, {512, 3}, {1024, 1}, {1024, 2}} {
		size, n := tc.size, tc.n
		t.Run(fmt.Sprintf("%dx%d/n%d", size, size, n), func(t *testing.T) {
			prompt := fmt.Sprintf("a lighthouse at dusk <%d,%d> & \"friends\"", size, n)
			for _, format := range []string{"b64_json", "url"} {
				body := fmt.Sprintf(`{"prompt":%q,"n":%d,"size":"%dx%d","response_format":%q}`, prompt, n, size, size, format)
				r := decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", body))
				if len(r.Data) != n {
					t.Fatalf("%d images, want %d", len(r.Data), n)
				}
				seen := map[string]bool{}
				for _, d := range r.Data {
					if d.RevisedPrompt != prompt {
						t.Errorf("revised_prompt %q", d.RevisedPrompt)
					}
					var b []byte
					if format == "b64_json" {
						if d.B64JSON == nil || d.URL != nil {
							t.Fatalf("item %+v", d)
						}
						var err error
						if b, err = base64.StdEncoding.DecodeString(*d.B64JSON); err != nil {
							t.Fatal(err)
						}
					} else {
						if d.URL == nil || d.B64JSON != nil || !fileURL.MatchString(*d.URL) {
							t.Fatalf("item %+v", d)
						}
						a := do(t, http.MethodGet, *d.URL, "", nil)
						if a.status != http.StatusOK || a.header.Get("Content-Type") != "image/png" {
							t.Fatalf("GET %s: %d %q", *d.URL, a.status, a.header.Get("Content-Type"))
						}
						b = a.body
					}
					checkPNG(t, b, size)
					if seen[string(b)] {
						t.Error("two images of one answer are identical")
					}
					seen[string(b)] = true
				}
			}
		})
	}
}

func TestDeterministic(t *testing.T) {
	g1, g2 := New(Options{}), New(Options{})
	s1, s2 := newServer(t, g1), newServer(t, g2)
	get := func(srv *httptest.Server, body string) imagesResp {
		return decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", body))
	}
	const b64 = `{"prompt":"a red fox","n":2,"size":"256x256","response_format":"b64_json"}`
	a, b := get(s1, b64), get(s2, b64)
	for i := range a.Data {
		if *a.Data[i].B64JSON != *b.Data[i].B64JSON {
			t.Errorf("image %d differs between two generators", i)
		}
	}
	if again := get(s1, b64); *again.Data[0].B64JSON != *a.Data[0].B64JSON {
		t.Error("image differs between two requests")
	}
	other := get(s1, `{"prompt":"a red fox.","size":"256x256","response_format":"b64_json"}`)
	if *other.Data[0].B64JSON == *a.Data[0].B64JSON {
		t.Error("different prompts gave the same image")
	}

	// The URL of an image names the same bytes as its b64_json.
	u1 := get(s1, `{"prompt":"a red fox","n":2,"size":"256x256"}`)
	u2 := get(s1, `{"prompt":"a red fox","n":2,"size":"256x256"}`)
	for i := range u1.Data {
		if *u1.Data[i].URL != *u2.Data[i].URL {
			t.Errorf("URL %d differs between requests", i)
		}
		f := do(t, http.MethodGet, *u1.Data[i].URL, "", nil)
		want, _ := base64.StdEncoding.DecodeString(*a.Data[i].B64JSON)
		if !bytes.Equal(f.body, want) {
			t.Errorf("file %d differs from the b64_json image", i)
		}
	}
	big := get(s1, `{"prompt":"a red fox","size":"512x512"}`)
	if *big.Data[0].URL == *u1.Data[0].URL {
		t.Error("two sizes share a URL")
	}
}

// buildMultipart builds an images/edits body.
func buildMultipart(tb testing.TB, fields map[string]string, files map[string][]byte) (string, []byte) {
	tb.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if err := mw.WriteField(k, fields[k]); err != nil {
			tb.Fatal(err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fw, err := mw.CreateFormFile(k, k+".png")
		if err != nil {
			tb.Fatal(err)
		}
		fw.Write(files[k])
	}
	if err := mw.Close(); err != nil {
		tb.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

func TestEdits(t *testing.T) {
	srv := newServer(t, New(Options{}))
	url := srv.URL + "/v1/images/edits"
	input := []byte("\x89PNG\r\n\x1a\nnot really a png, but bytes")

	t.Run("OK", func(t *testing.T) {
		ct, body := buildMultipart(t, map[string]string{"prompt": "add a hat", "n": "2", "size": "512x512",
			"response_format": "b64_json", "model": "gpt-image-1", "quality": "low"}, map[string][]byte{"image": input, "mask": input})
		r := decodeImages(t, do(t, http.MethodPost, url, ct, body))
		if len(r.Data) != 2 {
			t.Fatalf("%d images", len(r.Data))
		}
		for _, d := range r.Data {
			b, err := base64.StdEncoding.DecodeString(*d.B64JSON)
			if err != nil {
				t.Fatal(err)
			}
			checkPNG(t, b, 512)
			if d.RevisedPrompt != "add a hat" {
				t.Errorf("revised_prompt %q", d.RevisedPrompt)
			}
		}

		// The input image is part of the seed.
		ct, body = buildMultipart(t, map[string]string{"prompt": "add a hat", "size": "512x512", "response_format": "b64_json"},
			map[string][]byte{"image[]": append([]byte("other "), input...)})
		r2 := decodeImages(t, do(t, http.MethodPost, url, ct, body))
		if *r2.Data[0].B64JSON == *r.Data[0].B64JSON {
			t.Error("two input images gave the same edit")
		}
	})
	t.Run("URL", func(t *testing.T) {
		ct, body := buildMultipart(t, map[string]string{"prompt": "add a hat", "size": "256x256"}, map[string][]byte{"image": input})
		r := decodeImages(t, do(t, http.MethodPost, url, ct, body))
		if len(r.Data) != 1 || r.Data[0].URL == nil || !fileURL.MatchString(*r.Data[0].URL) {
			t.Fatalf("data %+v", r.Data)
		}
		a := do(t, http.MethodGet, *r.Data[0].URL, "", nil)
		checkPNG(t, a.body, 256)
	})

	for _, tc := range []struct {
		name   string
		fields map[string]string
		files  map[string][]byte
		param  any
		msg    string
	}{
		{"MissingImage", map[string]string{"prompt": "a"}, nil, "image", "Missing required parameter: 'image'."},
		{"EmptyImage", map[string]string{"prompt": "a"}, map[string][]byte{"image": {}}, "image", "the file is empty"},
		{"MissingPrompt", nil, map[string][]byte{"image": input}, "prompt", "Missing required parameter: 'prompt'."},
		{"EmptyPrompt", map[string]string{"prompt": ""}, map[string][]byte{"image": input}, "prompt", "empty string"},
		{"NNotInteger", map[string]string{"prompt": "a", "n": "two"}, map[string][]byte{"image": input}, "n", "expected an integer, but got 'two'"},
		{"NTooLarge", map[string]string{"prompt": "a", "n": "9"}, map[string][]byte{"image": input}, "n", "Expected a value <= 4, but got 9"},
		{"BadSize", map[string]string{"prompt": "a", "size": "big"}, map[string][]byte{"image": input}, "size", "Invalid value: 'big'"},
		{"BadFormat", map[string]string{"prompt": "a", "response_format": "gif"}, map[string][]byte{"image": input}, "response_format", "Invalid value: 'gif'"},
		{"UnknownField", map[string]string{"prompt": "a", "trace_id": "t", "frobnicate": "1"}, map[string][]byte{"image": input}, "frobnicate", "Unrecognized request argument supplied: frobnicate"},
		{"Stream", map[string]string{"prompt": "a", "stream": "true"}, map[string][]byte{"image": input}, "stream", "does not stream"},
		{"InvalidUTF8", map[string]string{"prompt": "a\xff"}, map[string][]byte{"image": input}, "prompt", "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := buildMultipart(t, tc.fields, tc.files)
			checkError(t, do(t, http.MethodPost, url, ct, body), http.StatusBadRequest, typeInvalid, tc.param, nil, tc.msg)
		})
	}
	t.Run("JSONBody", func(t *testing.T) {
		a := postJSON(t, url, `{"prompt":"add a hat"}`)
		checkError(t, a, http.StatusBadRequest, typeInvalid, nil, nil, "Invalid Content-Type header (application/json), expected multipart/form-data.")
	})
	t.Run("NoContentType", func(t *testing.T) {
		a := do(t, http.MethodPost, url, "", []byte("prompt=a"))
		checkError(t, a, http.StatusBadRequest, typeInvalid, nil, nil, "expected multipart/form-data")
	})
	t.Run("NoBoundary", func(t *testing.T) {
		a := do(t, http.MethodPost, url, "multipart/form-data", []byte("--x\r\n"))
		checkError(t, a, http.StatusBadRequest, typeInvalid, nil, nil, "no boundary")
	})
	t.Run("Truncated", func(t *testing.T) {
		ct, body := buildMultipart(t, map[string]string{"prompt": "a"}, map[string][]byte{"image": input})
		a := do(t, http.MethodPost, url, ct, body[:len(body)-20])
		checkError(t, a, http.StatusBadRequest, typeInvalid, nil, nil, "malformed")
	})
	t.Run("TooManyImages", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("prompt", "a")
		for range maxImages + 1 {
			fw, _ := mw.CreateFormFile("image[]", "i.png")
			fw.Write(input)
		}
		mw.Close()
		a := do(t, http.MethodPost, url, mw.FormDataContentType(), buf.Bytes())
		checkError(t, a, http.StatusBadRequest, typeInvalid, "image", nil, "at most 16 images")
	})
}

type chatResp struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string  `json:"role"`
			Content string  `json:"content"`
			Refusal *string `json:"refusal"`
		} `json:"message"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason string    `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
	SystemFingerprint *string `json:"system_fingerprint"`
}

var markdownImage = regexp.MustCompile(`^!\[image\]\((http://127\.0\.0\.1:\d+/files/[0-9a-f]{32}\.png)\)$`)

func TestChatCompletions(t *testing.T) {
	now := time.Unix(1763142637, 0)
	srv := newServer(t, New(Options{Now: func() time.Time { return now }}))
	url := srv.URL + "/v1/chat/completions"

	chat := func(t *testing.T, body string) (chatResp, string) {
		t.Helper()
		a := postJSON(t, url, body)
		if a.status != http.StatusOK || a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("%d %q %s", a.status, a.header.Get("Content-Type"), a.body)
		}
		var r chatResp
		dec := json.NewDecoder(bytes.NewReader(a.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			t.Fatalf("%s: %v", a.body, err)
		}
		if !strings.HasPrefix(r.ID, "chatcmpl-") || r.Object != "chat.completion" || r.Created != now.Unix() {
			t.Errorf("id %q object %q created %d", r.ID, r.Object, r.Created)
		}
		if len(r.Choices) != 1 {
			t.Fatalf("%d choices", len(r.Choices))
		}
		c := r.Choices[0]
		if c.Index != 0 || c.Message.Role != "assistant" || c.FinishReason != "stop" || c.Message.Refusal != nil {
			t.Errorf("choice %+v", c)
		}
		if r.Usage.TotalTokens != r.Usage.PromptTokens+r.Usage.CompletionTokens || r.Usage.PromptTokens == 0 {
			t.Errorf("usage %+v", r.Usage)
		}
		m := markdownImage.FindStringSubmatch(c.Message.Content)
		if m == nil {
			t.Fatalf("content %q holds no image link", c.Message.Content)
		}
		return r, m[1]
	}

	r, link := chat(t, `{"model":"gpt-4o-image","temperature":0.2,"messages":[
		{"role":"system","content":"You draw."},
		{"role":"user","content":"a teapot"},
		{"role":"assistant","content":"Which colour?"},
		{"role":"user","content":[{"type":"text","text":"a blue teapot"},{"type":"image_url","image_url":{"url":"https://example.com/x.png"}}]}]}`)
	if r.Model != "gpt-4o-image" {
		t.Errorf("model %q", r.Model)
	}
	a := do(t, http.MethodGet, link, "", nil)
	if a.status != http.StatusOK {
		t.Fatalf("GET %s: %d", link, a.status)
	}
	checkPNG(t, a.body, chatSide)

	// The last user message is the prompt: the same image as a generation.
	gen := decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", `{"prompt":"a blue teapot"}`))
	if *gen.Data[0].URL != link {
		t.Errorf("chat image %s, generation image %s", link, *gen.Data[0].URL)
	}
	r2, _ := chat(t, `{"messages":[{"role":"user","content":"a blue teapot"}]}`)
	if r2.Model != chatModel {
		t.Errorf("default model %q", r2.Model)
	}
	if r2.ID == r.ID {
		t.Error("two answers share an id")
	}

	for _, tc := range []struct {
		name, body string
		param      any
		msg        string
	}{
		{"InvalidJSON", `{"messages":[`, nil, "could not parse"},
		{"MissingMessages", `{"model":"m"}`, "messages", "Missing required parameter: 'messages'."},
		{"MessagesObject", `{"messages":{}}`, "messages", "expected an array, but got an object"},
		{"EmptyMessages", `{"messages":[]}`, "messages", "empty array"},
		{"MessageString", `{"messages":["hi"]}`, "messages[0]", "expected an object, but got a string"},
		{"MissingRole", `{"messages":[{"content":"hi"}]}`, "messages[0].role", "Missing required parameter: 'messages[0].role'."},
		{"RoleNumber", `{"messages":[{"role":1,"content":"hi"}]}`, "messages[0].role", "expected a string"},
		{"ContentNumber", `{"messages":[{"role":"user","content":1}]}`, "messages[0].content", "expected a string"},
		{"PartText", `{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, "messages[0].content[0].text", "expected a string"},
		{"NoUserMessage", `{"messages":[{"role":"system","content":"hi"}]}`, "messages", "there is none"},
		{"EmptyUserText", `{"messages":[{"role":"user","content":"  "}]}`, "messages", "empty string"},
		{"ModelNumber", `{"model":4,"messages":[{"role":"user","content":"hi"}]}`, "model", "expected a string"},
		{"Stream", `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`, "stream", "does not stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkError(t, postJSON(t, url, tc.body), http.StatusBadRequest, typeInvalid, tc.param, nil, tc.msg)
		})
	}
}

func TestFiles(t *testing.T) {
	g := New(Options{MaxFiles: 2})
	srv := newServer(t, g)
	var urls []string
	for i := range 3 {
		r := decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", fmt.Sprintf(`{"prompt":"p%d","size":"256x256"}`, i)))
		urls = append(urls, *r.Data[0].URL)
	}
	// MaxFiles 2: the oldest is gone.
	checkError(t, do(t, http.MethodGet, urls[0], "", nil), http.StatusNotFound, typeInvalid, nil, nil, "not found")
	for _, u := range urls[1:] {
		a := do(t, http.MethodGet, u, "", nil)
		checkPNG(t, a.body, 256)
		if a.header.Get("ETag") == "" || a.header.Get("Cache-Control") == "" {
			t.Errorf("headers %v", a.header)
		}
	}
	head := do(t, http.MethodHead, urls[2], "", nil)
	if head.status != http.StatusOK || head.header.Get("Content-Type") != "image/png" || head.header.Get("Content-Length") == "" || len(head.body) != 0 {
		t.Errorf("HEAD: %d %v %d bytes", head.status, head.header, len(head.body))
	}
	for _, p := range []string{"/files/", "/files/nope.png", "/files/" + strings.Repeat("0", 32) + ".png", "/files/a/b.png"} {
		if a := do(t, http.MethodGet, srv.URL+p, "", nil); a.status != http.StatusNotFound {
			t.Errorf("GET %s: %d", p, a.status)
		}
	}
	// Called directly, other methods are refused.
	rec := httptest.NewRecorder()
	g.Files().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, urls[2], nil))
	checkError(t, answer{rec.Code, rec.Header(), rec.Body.Bytes()}, http.StatusMethodNotAllowed, typeInvalid, nil, nil, "use GET")
}

// TestFileNamesKeyed: a file name cannot be derived from the prompt: two
// generators (two processes) name the same picture differently, and
// neither name is a plain hash of the picture. One generator keeps naming a
// picture the same way.
func TestFileNamesKeyed(t *testing.T) {
	g1, g2 := New(Options{}), New(Options{})
	s1, s2 := newServer(t, g1), newServer(t, g2)
	const body = `{"prompt":"a guessable prompt","size":"256x256"}`
	u1 := *decodeImages(t, postJSON(t, s1.URL+"/v1/images/generations", body)).Data[0].URL
	u2 := *decodeImages(t, postJSON(t, s2.URL+"/v1/images/generations", body)).Data[0].URL
	again := *decodeImages(t, postJSON(t, s1.URL+"/v1/images/generations", body)).Data[0].URL
	name := func(u string) string { return u[strings.LastIndexByte(u, '/')+1:] }
	if name(u1) == name(u2) {
		t.Errorf("two generators name one picture %s: the name derives from the prompt", name(u1))
	}
	if again != u1 {
		t.Errorf("one generator named one picture %s, then %s", u1, again)
	}
	// The names of the old scheme, sha256(seed ‖ side) and sha256(seed).
	p := newPicture(promptSeed("a guessable prompt", nil), 0, 256)
	var b [36]byte
	copy(b[:], p.seed[:])
	binary.BigEndian.PutUint32(b[32:], 256)
	for _, sum := range [][32]byte{sha256.Sum256(b[:]), sha256.Sum256(p.seed[:]), p.seed} {
		if guess := hex.EncodeToString(sum[:16]) + ".png"; guess == name(u1) || guess == name(u2) {
			t.Errorf("the file name %s is an unkeyed hash of the picture", guess)
		}
	}
	// Fetching by a name derived from the prompt finds nothing.
	if a := do(t, http.MethodGet, s1.URL+"/files/"+hex.EncodeToString(p.seed[:16])+".png", "", nil); a.status != http.StatusNotFound {
		t.Errorf("a guessed name: %d", a.status)
	}
}

// TestFilesRange: one range is served (206); several ranges, in one header
// or in several, get the whole file (200), never a multipart answer larger
// than the file.
func TestFilesRange(t *testing.T) {
	srv := newServer(t, New(Options{}))
	u := *decodeImages(t, postJSON(t, srv.URL+"/v1/images/generations", `{"prompt":"ranges","size":"256x256"}`)).Data[0].URL
	whole := do(t, http.MethodGet, u, "", nil).body
	get := func(ranges ...string) answer {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for _, r := range ranges {
			req.Header.Add("Range", r)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, resp.Header, b}
	}
	if a := get("bytes=0-9"); a.status != http.StatusPartialContent || !bytes.Equal(a.body, whole[:10]) {
		t.Errorf("one range: %d, %d bytes", a.status, len(a.body))
	}
	if a := get(fmt.Sprintf("bytes=%d-", len(whole)+10)); a.status != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("a range past the end: %d", a.status)
	}
	// 2,000 one-byte ranges: within the file's size, so net/http would
	// answer them all, each with its own part headers (about 100 times the
	// header's size in answer).
	many := "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 2000), ",")
	for _, ranges := range [][]string{{"bytes=0-0,5-9"}, {many}, {"bytes=0-0", "bytes=5-9"}, {"bytes=0-1, 3-4"}} {
		a := get(ranges...)
		if a.status != http.StatusOK || !bytes.Equal(a.body, whole) || a.header.Get("Content-Type") != "image/png" {
			t.Errorf("Range %.40q: %d %q, %d bytes; want 200 with the whole file (%d bytes)",
				ranges, a.status, a.header.Get("Content-Type"), len(a.body), len(whole))
		}
	}
}

func TestBaseURL(t *testing.T) {
	g := New(Options{BaseURL: "https://images.example.com/"})
	rec := httptest.NewRecorder()
	g.Generations().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(`{"prompt":"x","size":"256x256"}`)))
	r := decodeImages(t, answer{rec.Code, rec.Header(), rec.Body.Bytes()})
	u := *r.Data[0].URL
	if !regexp.MustCompile(`^https://images\.example\.com/files/[0-9a-f]{32}\.png$`).MatchString(u) {
		t.Fatalf("url %q", u)
	}
	// The file is served under the path of its URL.
	rec = httptest.NewRecorder()
	g.Files().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, strings.TrimPrefix(u, "https://images.example.com"), nil))
	checkPNG(t, rec.Body.Bytes(), 256)
}

func TestDelay(t *testing.T) {
	g := New(Options{Delay: time.Hour})
	call := func(ctx context.Context, h http.Handler, ct, body string) answer {
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/", strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
	}
	ct, edit := buildMultipart(t, map[string]string{"prompt": "a"}, map[string][]byte{"image": []byte("x")})
	for _, tc := range []struct {
		name     string
		h        http.Handler
		ct, body string
	}{
		{"Generations", g.Generations(), "application/json", `{"prompt":"a"}`},
		{"Edits", g.Edits(), ct, string(edit)},
		{"Chat", g.ChatCompletions(), "application/json", `{"messages":[{"role":"user","content":"a"}]}`},
	} {
		t.Run(tc.name+"/Canceled", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan answer)
			go func() { done <- call(ctx, tc.h, tc.ct, tc.body) }()
			cancel()
			a := <-done
			checkError(t, a, http.StatusServiceUnavailable, typeAPI, nil, "canceled", "canceled")
		})
		t.Run(tc.name+"/Deadline", func(t *testing.T) {
			ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
			defer cancel()
			checkError(t, call(ctx, tc.h, tc.ct, tc.body), http.StatusGatewayTimeout, typeAPI, nil, "timeout", "timed out")
		})
	}
	t.Run("ValidationFirst", func(t *testing.T) {
		// A bad request is refused at once, without waiting out the delay.
		a := call(t.Context(), g.Generations(), "application/json", `{}`)
		checkError(t, a, http.StatusBadRequest, typeInvalid, "prompt", nil, "Missing")
	})
	t.Run("Elapses", func(t *testing.T) {
		g := New(Options{Delay: time.Millisecond})
		decodeImages(t, call(t.Context(), g.Generations(), "application/json", `{"prompt":"a","size":"256x256"}`))
	})
}

func TestConcurrentEncode(t *testing.T) {
	g := New(Options{})
	p := newPicture(promptSeed("same", nil), 0, 256)
	var wg sync.WaitGroup
	out := make([][]byte, 8)
	for i := range out {
		wg.Go(func() { out[i] = g.png(p.name(g.fileKey), p) })
	}
	wg.Wait()
	for i := range out {
		if !bytes.Equal(out[i], out[0]) {
			t.Fatal("concurrent encodings differ")
		}
	}
	checkPNG(t, out[0], 256)
}

func TestLRU(t *testing.T) {
	c := newLRU[[]byte](10, func(b []byte) int64 { return int64(len(b)) })
	c.put("a", make([]byte, 4))
	c.put("b", make([]byte, 4))
	c.get("a") // a is now the most recent
	c.put("c", make([]byte, 4))
	if _, ok := c.get("b"); ok {
		t.Error("b should have been evicted")
	}
	if _, ok := c.get("a"); !ok {
		t.Error("a was evicted")
	}
	c.put("big", make([]byte, 100)) // kept alone, whatever its cost
	if _, ok := c.get("big"); !ok || c.len() != 1 || c.used != 100 {
		t.Errorf("len %d used %d", c.len(), c.used)
	}
	c.put("big", make([]byte, 3))
	if c.used != 3 {
		t.Errorf("used %d after replacing", c.used)
	}
}

func FuzzGenerations(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"a cat"}`, `{"prompt":"a","n":2,"size":"256x256","response_format":"b64_json"}`,
		`{"prompt":""}`, `{"n":"x"}`, `[]`, `{"prompt":"a","size":"512x512","stream":false,"model":null}`,
	} {
		f.Add([]byte(s))
	}
	g := New(Options{})
	h := g.Generations()
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			var r imagesResp
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || len(r.Data) < 1 || len(r.Data) > maxN {
				t.Fatalf("200 with %s (%v)", rec.Body.Bytes(), err)
			}
		case http.StatusBadRequest:
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Message == "" || e.Error.Type != typeInvalid {
				t.Fatalf("400 with %s (%v)", rec.Body.Bytes(), err)
			}
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

func BenchmarkDrawEncode(b *testing.B) {
	for _, side := range []int{256, 512, 1024} {
		b.Run(fmt.Sprintf("%d", side), func(b *testing.B) {
			var size int
			for i := 0; b.Loop(); i++ {
				size = len(newPicture(promptSeed("bench", nil), i, side).encode())
			}
			b.ReportMetric(float64(size), "png-bytes")
		})
	}
}

func BenchmarkGenerationsCached(b *testing.B) {
	h := New(Options{}).Generations()
	body := `{"prompt":"a cat","size":"1024x1024","response_format":"b64_json"}`
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

// The parameter lists are searched with slices.BinarySearch: one inserted
// out of order would make a valid parameter "unrecognized".
func TestParamListsSorted(t *testing.T) {
	for name, list := range map[string][]string{"generationParams": generationParams, "editParams": editParams} {
		if !slices.IsSorted(list) {
			t.Errorf("%s is not sorted: %v", name, list)
		}
	}
}
