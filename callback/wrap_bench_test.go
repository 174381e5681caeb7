package callback_test

import (
	"bytes"
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
)

// BenchmarkWrapSmall measures what Wrap costs a small request, in process
// (no network): a JSON and a multipart request without callback_url passed
// through to a handler that reads the body, and an async JSON submission
// stored in memstore. It is the before/after check that streaming large
// bodies (issue #16) costs small ones nothing.
func BenchmarkWrapSmall(b *testing.B) {
	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{Queue: 1 << 20, AllowPrivateNetworks: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rec.Close(ctx)
	}()
	h := rec.Wrap("images_generations", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`)
	}))
	const prompt = "A watercolor cat wearing a tiny hat, studio light"
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("model", "gpt-image-1")
	mw.WriteField("prompt", prompt)
	fw, _ := mw.CreateFormFile("image", "cat.png")
	fw.Write(bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 1024))
	mw.Close()
	for _, bc := range []struct{ name, ct, body string }{
		{"passthrough-json", "application/json", `{"model":"gpt-image-1","prompt":"` + prompt + `","size":"1024x1024","n":1}`},
		{"passthrough-multipart-4KiB", mw.FormDataContentType(), mp.String()},
		{"async-json", "application/json", `{"model":"gpt-image-1","prompt":"` + prompt + `","size":"1024x1024","n":1,"async":true}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(bc.body))
				req.Header.Set("Content-Type", bc.ct)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkWrapLarge measures a 64 MiB JSON request without callback_url
// streamed through Wrap (scanned while spilled to a temporary file, then
// read back by the handler) against the same body read by the handler
// directly.
func BenchmarkWrapLarge(b *testing.B) {
	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{AllowPrivateNetworks: true, Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer rec.Close(context.Background())
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) })
	gen, length := bigJSON(`"model":"m",`, `,"n":1`, 64<<20)
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"bare", bare}, {"wrap", rec.Wrap("images_generations", bare)}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(length)
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", gen())
				req.ContentLength = length
				req.Header.Set("Content-Type", "application/json")
				bc.h.ServeHTTP(httptest.NewRecorder(), req)
			}
		})
	}
}
