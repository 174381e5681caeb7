// Package standin is a built-in stand-in for the OpenAI images API: it needs
// no network and no keys, so that tasksd runs on a fresh machine.
//
// It answers what clients of the images API use, in OpenAI's wire format:
//
//   - POST images/generations (JSON): prompt (required, at most 32000
//     characters), n (1–4, default 1), size ("256x256", "512x512",
//     "1024x1024" or "auto", default 1024x1024), response_format ("url",
//     the default, or "b64_json"), model (any string, ignored).
//   - POST images/edits (multipart/form-data): the same fields plus an
//     image file part ("image" or "image[]", required) and an optional
//     "mask" file part.
//   - POST chat/completions (JSON): the text of the last user message is the
//     prompt; the answer is a chat.completion whose message content is a
//     Markdown image link to a generated 1024x1024 PNG.
//   - GET files/<name>.png: the PNGs that url answers point at.
//
// A success is {"created":<unix>,"data":[{"url":…,"revised_prompt":…}]}
// (b64_json instead of url when asked); revised_prompt is the prompt. A bad
// request is refused with HTTP 400 and OpenAI's error body,
// {"error":{"message":…,"type":"invalid_request_error","param":…,"code":null}},
// naming the offending parameter. Request fields OpenAI does not define are
// refused too ("Unrecognized request argument supplied"), as OpenAI does; the
// known ones the stand-in has no use for (quality, style, user, background,
// …) are accepted and ignored, and so are the callback-mode fields
// callback_url, trace_id and async, which a synchronous request may carry. Streaming and output formats other than PNG
// are refused.
//
// Images are deterministic: a picture (a gradient, a disc and a ring) drawn
// from the SHA-256 of the prompt (and, for edits, of the input images) and
// the image's index in the answer; the size only changes the resolution.
// The same request always yields the same PNG bytes and, from one
// Generator, the same file URL. File names are a keyed hash (HMAC-SHA256)
// of the picture under a key each Generator draws at random, so a name
// cannot be derived from a prompt: only who was given a URL can fetch its
// file (Files asks for no token). Files answers at most one byte range.
//
// The stand-in is for demos and tests on a machine without an image API; it
// is not meant to face the internet.
package standin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New.
const (
	// DefaultMaxFiles is how many images /files/ serves when
	// Options.MaxFiles is zero.
	DefaultMaxFiles = 1024

	// maxJSONBytes caps a JSON request body, maxMultipartBytes a multipart
	// one; a larger body is refused with 413.
	maxJSONBytes      = 16 << 20
	maxMultipartBytes = 64 << 20

	// pngCacheBytes bounds the encoded PNGs kept in memory. A file that was
	// dropped from this cache but is still listed is drawn again on demand.
	pngCacheBytes = 64 << 20
)

// Options configure a Generator. The zero value is usable.
type Options struct {
	// Delay is how long each request takes before it is answered, to make
	// callback mode visible. A request whose context ends during the delay
	// is answered with an error (503, or 504 when its deadline passed).
	// Default 0.
	Delay time.Duration
	// BaseURL is the absolute URL prefix of url answers: with
	// "http://127.0.0.1:8080" an image's URL is
	// "http://127.0.0.1:8080/files/<name>.png". Files must be mounted at
	// "GET /files/" under it. Default: the scheme and Host of each request.
	BaseURL string
	// Now is the clock of the "created" fields. Default time.Now.
	Now func() time.Time
	// MaxFiles is how many images (the most recently requested or served)
	// Files keeps serving; older ones answer 404. Only what is needed to
	// draw an image again is kept per file, so this costs little memory.
	// Default DefaultMaxFiles.
	MaxFiles int
}

// Generator is the stand-in image generator. It is safe for concurrent use.
type Generator struct {
	delay   time.Duration
	baseURL string
	now     func() time.Time
	fileKey []byte // keys the file names (picture.name)

	generations, edits, chat, files http.Handler

	mu       sync.Mutex
	names    *lru[picture]          // file name → what to draw
	pngs     *lru[[]byte]           // file name → encoded PNG, bounded by bytes
	inflight map[string]*encodeCall // file name → encoding in progress
}

// New returns a Generator configured by o.
func New(o Options) *Generator {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	g := &Generator{
		delay:    o.Delay,
		baseURL:  strings.TrimRight(o.BaseURL, "/"),
		now:      o.Now,
		fileKey:  make([]byte, 32),
		names:    newLRU[picture](int64(o.MaxFiles), func(picture) int64 { return 1 }),
		pngs:     newLRU[[]byte](pngCacheBytes, func(b []byte) int64 { return int64(len(b)) }),
		inflight: make(map[string]*encodeCall),
	}
	rand.Read(g.fileKey) // never fails (crypto/rand panics rather than return short)
	g.generations = postOnly(http.HandlerFunc(g.serveGenerations))
	g.edits = postOnly(http.HandlerFunc(g.serveEdits))
	g.chat = postOnly(http.HandlerFunc(g.serveChat))
	g.files = http.HandlerFunc(g.serveFiles)
	return g
}

// Generations answers POST images/generations (a JSON body).
func (g *Generator) Generations() http.Handler { return g.generations }

// Edits answers POST images/edits (a multipart/form-data body with an image
// file part). Any other content type is refused with 400.
func (g *Generator) Edits() http.Handler { return g.edits }

// ChatCompletions answers POST chat/completions with a chat.completion whose
// message content links a generated PNG.
func (g *Generator) ChatCompletions() http.Handler { return g.chat }

// Files serves the PNGs of url answers: GET (or HEAD) /files/<name>.png.
// Mount it at "GET /files/". Unknown or evicted names answer 404. A Range
// header with one range is answered 206; one with several ranges is ignored
// (the whole file, 200).
func (g *Generator) Files() http.Handler { return g.files }

// imageItem is one element of an images answer's data.
type imageItem struct {
	URL           string `json:"url,omitempty"`
	B64JSON       string `json:"b64_json,omitempty"`
	RevisedPrompt string `json:"revised_prompt"`
}

type imagesAnswer struct {
	Created int64       `json:"created"`
	Data    []imageItem `json:"data"`
}

// answerImages waits out the delay and writes the images answer for p.
func (g *Generator) answerImages(w http.ResponseWriter, r *http.Request, p imageParams, seed [32]byte) {
	if !g.wait(w, r) {
		return
	}
	ans := imagesAnswer{Created: g.now().Unix(), Data: make([]imageItem, p.n)}
	for i := range p.n {
		pic := newPicture(seed, i, p.side)
		it := imageItem{RevisedPrompt: p.prompt}
		if p.format == formatB64 {
			it.B64JSON = encodeBase64(g.png(pic.name(g.fileKey), pic))
		} else {
			it.URL = g.fileURL(r, g.register(pic))
		}
		ans.Data[i] = it
	}
	writeJSON(w, http.StatusOK, ans)
}

// wait sleeps for the configured delay. When the request's context ends
// first it answers an error and reports false.
func (g *Generator) wait(w http.ResponseWriter, r *http.Request) bool {
	ctx := r.Context()
	if g.delay <= 0 {
		if ctx.Err() == nil {
			return true
		}
	} else {
		t := time.NewTimer(g.delay)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			t.Stop()
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		writeError(w, &apiError{status: http.StatusGatewayTimeout, typ: typeAPI, code: "timeout",
			message: "The request timed out before the image was generated."})
	} else {
		writeError(w, &apiError{status: http.StatusServiceUnavailable, typ: typeAPI, code: "canceled",
			message: "The request was canceled before the image was generated."})
	}
	return false
}

// fileURL is the absolute URL under which Files serves name.
func (g *Generator) fileURL(r *http.Request, name string) string {
	base := g.baseURL
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	return base + "/files/" + name
}

// postOnly refuses methods other than POST with 405 and an Allow header.
func postOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: typeInvalid,
				message: "Method " + r.Method + " is not allowed; use POST."})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// writeJSON answers status with v as JSON (HTML characters not escaped).
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only plain structs, strings and numbers are encoded here.
		panic("standin: encoding an answer: " + err.Error())
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
