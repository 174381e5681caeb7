package standin

import (
	"bytes"
	"net/http"
	"strings"
	"time"
)

// encodeCall is an encoding in progress, shared by the requests that need
// the same file at once.
type encodeCall struct {
	done chan struct{}
	png  []byte
}

// register lists the picture under its file name so that Files serves it,
// and returns the name.
func (g *Generator) register(p picture) string {
	name := p.name(g.fileKey)
	g.mu.Lock()
	g.names.put(name, p)
	g.mu.Unlock()
	return name
}

// png returns the encoded picture named name, from the cache or freshly
// encoded (once, however many requests ask at the same time).
func (g *Generator) png(name string, p picture) []byte {
	g.mu.Lock()
	if b, ok := g.pngs.get(name); ok {
		g.mu.Unlock()
		return b
	}
	if c, ok := g.inflight[name]; ok {
		g.mu.Unlock()
		<-c.done
		return c.png
	}
	c := &encodeCall{done: make(chan struct{})}
	g.inflight[name] = c
	g.mu.Unlock()

	c.png = p.encode()

	g.mu.Lock()
	g.pngs.put(name, c.png)
	delete(g.inflight, name)
	g.mu.Unlock()
	close(c.done)
	return c.png
}

// serveFiles answers GET and HEAD /files/<name>.png. Only the last path
// segment counts, so the handler also works behind http.StripPrefix.
//
// A Range header asking for one range is honoured (206); one asking for
// several is ignored and the whole file is sent (200), as RFC 9110 lets a
// server do: a multipart/byteranges answer would let a small header ask for
// many times the file's size.
func (g *Generator) serveFiles(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: typeInvalid,
			message: "Method " + r.Method + " is not allowed; use GET."})
		return
	}
	name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	g.mu.Lock()
	p, ok := g.names.get(name)
	g.mu.Unlock()
	if !ok {
		writeError(w, &apiError{status: http.StatusNotFound, typ: typeInvalid, message: "File not found."})
		return
	}
	b := g.png(name, p)
	h := w.Header()
	h.Set("Content-Type", "image/png")
	h.Set("Cache-Control", "public, max-age=86400, immutable")
	h.Set("ETag", `"`+strings.TrimSuffix(name, ".png")+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	if rs := r.Header.Values("Range"); len(rs) > 1 || len(rs) == 1 && strings.Contains(rs[0], ",") {
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}
