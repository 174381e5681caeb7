package standin

import "net/http"

// serveGenerations answers POST images/generations.
func (g *Generator) serveGenerations(w http.ResponseWriter, r *http.Request) {
	m, e := readJSON(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	p, e := imageParamsOf(jsonFields(m), generationParams)
	if e != nil {
		writeError(w, e)
		return
	}
	g.answerImages(w, r, p, promptSeed(p.prompt, nil))
}

// serveEdits answers POST images/edits.
func (g *Generator) serveEdits(w http.ResponseWriter, r *http.Request) {
	b, e := readMultipart(w, r)
	if e != nil {
		writeError(w, e)
		return
	}
	p, e := imageParamsOf(b.fields, editParams)
	if e != nil {
		writeError(w, e)
		return
	}
	if len(b.images) == 0 {
		writeError(w, invalid("image", "Missing required parameter: 'image'."))
		return
	}
	g.answerImages(w, r, p, promptSeed(p.prompt, b.images))
}
