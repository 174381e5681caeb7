package standin

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the images parameters.
const (
	maxPrompt     = 32000   // characters, as OpenAI's gpt-image-1
	maxN          = 4       //
	maxImages     = 16      // image parts of an edit
	maxFieldBytes = 1 << 18 // one multipart text field
)

// Values of response_format.
const (
	formatURL = "url"
	formatB64 = "b64_json"
)

// imageParams are the validated parameters of an images request.
type imageParams struct {
	prompt string
	n      int
	side   int    // width and height in pixels
	format string // formatURL or formatB64
}

// Parameters OpenAI defines for each endpoint, sorted (they are looked up
// with a binary search). Those not read by imageParamsOf are accepted and
// ignored; any other is refused.
var (
	generationParams = []string{
		"background", "model", "moderation", "n", "output_compression", "output_format",
		"partial_images", "prompt", "quality", "response_format", "size", "stream", "style", "user",
	}
	editParams = []string{
		"background", "input_fidelity", "model", "n", "output_compression", "output_format",
		"partial_images", "prompt", "quality", "response_format", "size", "stream", "user",
	}
)

// field is one request parameter, from a JSON body or a multipart form.
type field struct {
	kind string // "string", "integer", "number", "boolean", "array", "object", "null"
	str  string // the decoded string, or the literal of a number or boolean
	form bool   // from a multipart form, where every value is a string
}

// jsonField classifies a JSON value.
func jsonField(raw json.RawMessage) field {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return field{kind: "null"}
	}
	switch raw[0] {
	case '"':
		var s string
		json.Unmarshal(raw, &s) // valid: the whole body was checked
		return field{kind: "string", str: s}
	case '{':
		return field{kind: "object"}
	case '[':
		return field{kind: "array"}
	case 't', 'f':
		return field{kind: "boolean", str: string(raw)}
	case 'n':
		return field{kind: "null"}
	}
	if bytes.ContainsAny(raw, ".eE") {
		return field{kind: "number", str: string(raw)}
	}
	return field{kind: "integer", str: string(raw)}
}

// article names a kind the way OpenAI's messages do.
func article(kind string) string {
	switch kind {
	case "integer", "array", "object":
		return "an " + kind
	case "number":
		return "a decimal number"
	case "null":
		return "null"
	}
	return "a " + kind
}

func typeError(param, want string, f field) *apiError {
	return invalid(param, "Invalid type for '%s': expected %s, but got %s instead.", param, article(want), article(f.kind))
}

// readJSON reads a request body that must hold one JSON object, sent as
// application/json (a missing Content-Type is tolerated).
func readJSON(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, *apiError) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, invalid("", "Invalid Content-Type header (%s), expected application/json.", ct)
		}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBytes))
	if err != nil {
		return nil, bodyError(err)
	}
	if !json.Valid(data) {
		return nil, invalid("", "We could not parse the JSON body of your request. The API expects a JSON object.")
	}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return nil, invalid("", "The request body must be a JSON object.")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, invalid("", "We could not parse the JSON body of your request. The API expects a JSON object.")
	}
	return m, nil
}

func jsonFields(m map[string]json.RawMessage) map[string]field {
	fs := make(map[string]field, len(m))
	for k, v := range m {
		fs[k] = jsonField(v)
	}
	return fs
}

// multipartBody is a parsed images/edits body.
type multipartBody struct {
	fields map[string]field
	images [][]byte // SHA-256 of each image part, in order
}

// readMultipart reads a multipart/form-data body, hashing its file parts as
// they stream by.
func readMultipart(w http.ResponseWriter, r *http.Request) (*multipartBody, *apiError) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" {
		if ct == "" {
			ct = "none"
		}
		return nil, invalid("", "Invalid Content-Type header (%s), expected multipart/form-data.", ct)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxMultipartBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, invalid("", "The multipart/form-data body has no boundary.")
	}
	b := &multipartBody{fields: make(map[string]field)}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, malformed(err)
		}
		name := part.FormName()
		switch name {
		case "":
			return nil, invalid("", "A part of the multipart/form-data body has no form name.")
		case "image", "image[]":
			if len(b.images) == maxImages {
				return nil, invalid("image", "Invalid 'image': at most %d images are accepted.", maxImages)
			}
			sum, n, err := hashReader(part)
			if err != nil {
				return nil, malformed(err)
			}
			if n == 0 {
				return nil, invalid("image", "Invalid 'image': the file is empty.")
			}
			b.images = append(b.images, sum)
		case "mask": // accepted, not used
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, malformed(err)
			}
		default:
			data, err := io.ReadAll(io.LimitReader(part, maxFieldBytes+1))
			if err != nil {
				return nil, malformed(err)
			}
			if len(data) > maxFieldBytes {
				return nil, invalid(name, "Invalid '%s': the value is longer than %d bytes.", name, maxFieldBytes)
			}
			b.fields[name] = field{kind: "string", str: string(data), form: true}
		}
	}
	return b, nil
}

func malformed(err error) *apiError {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return bodyError(err)
	}
	return invalid("", "The multipart/form-data body is malformed.")
}

// imageParamsOf validates the parameters of an images request against the
// parameters its endpoint defines (known, sorted).
func imageParamsOf(fs map[string]field, known []string) (imageParams, *apiError) {
	var p imageParams
	if e := unknownParam(fs, known); e != nil {
		return p, e
	}
	var e *apiError
	if p.prompt, e = promptOf(fs); e != nil {
		return p, e
	}
	if p.n, e = nOf(fs); e != nil {
		return p, e
	}
	if p.side, e = sizeOf(fs); e != nil {
		return p, e
	}
	if p.format, e = formatOf(fs); e != nil {
		return p, e
	}
	if e = optionalString(fs, "model"); e != nil {
		return p, e
	}
	if e = noStream(fs); e != nil {
		return p, e
	}
	if e = pngOnly(fs); e != nil {
		return p, e
	}
	return p, nil
}

// callbackFields are the callback-mode fields of the tasks module. The
// recorder removes them from callback-mode requests; a synchronous request
// passes through untouched and may still carry them (a trace_id, "async":
// false), so the stand-in ignores them rather than refusing them as unknown.
var callbackFields = []string{"async", "callback_url", "trace_id"}

// unknownParam refuses the first (in sorted order) parameter not in known
// (callbackFields are ignored).
func unknownParam(fs map[string]field, known []string) *apiError {
	var unknown []string
	for k := range fs {
		if slices.Contains(callbackFields, k) {
			continue
		}
		if _, ok := slices.BinarySearch(known, k); !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	return invalid(unknown[0], "Unrecognized request argument supplied: %s", unknown[0])
}

func promptOf(fs map[string]field) (string, *apiError) {
	f, ok := fs["prompt"]
	if !ok || f.kind == "null" {
		return "", invalid("prompt", "Missing required parameter: 'prompt'.")
	}
	if f.kind != "string" {
		return "", typeError("prompt", "string", f)
	}
	return checkPrompt("prompt", f.str)
}

// checkPrompt refuses an empty, blank, too long or non-UTF-8 prompt.
func checkPrompt(param, s string) (string, *apiError) {
	if strings.TrimSpace(s) == "" {
		return "", invalid(param, "Invalid '%s': empty string. Expected a string with minimum length 1, but got an empty string instead.", param)
	}
	if !utf8.ValidString(s) {
		return "", invalid(param, "Invalid '%s': the string is not valid UTF-8.", param)
	}
	if n := utf8.RuneCountInString(s); n > maxPrompt {
		return "", invalid(param, "Invalid '%s': string too long. Expected a string with maximum length %d, but got a string with length %d instead.", param, maxPrompt, n)
	}
	return s, nil
}

func nOf(fs map[string]field) (int, *apiError) {
	f, ok := fs["n"]
	if !ok || f.kind == "null" {
		return 1, nil
	}
	lit := f.str
	if f.form {
		lit = strings.TrimSpace(lit)
	} else if f.kind != "integer" {
		return 0, typeError("n", "integer", f)
	}
	n, err := strconv.Atoi(lit)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			n = maxN + 1
			if strings.HasPrefix(lit, "-") {
				n = 0
			}
		} else {
			return 0, invalid("n", "Invalid type for 'n': expected an integer, but got '%s' instead.", lit)
		}
	}
	if n < 1 {
		return 0, invalid("n", "Invalid 'n': integer below minimum value. Expected a value >= 1, but got %s instead.", lit)
	}
	if n > maxN {
		return 0, invalid("n", "Invalid 'n': integer above maximum value. Expected a value <= %d, but got %s instead.", maxN, lit)
	}
	return n, nil
}

func sizeOf(fs map[string]field) (int, *apiError) {
	f, ok := fs["size"]
	if !ok || f.kind == "null" {
		return 1024, nil
	}
	if f.kind != "string" {
		return 0, typeError("size", "string", f)
	}
	switch f.str {
	case "256x256":
		return 256, nil
	case "512x512":
		return 512, nil
	case "1024x1024", "auto":
		return 1024, nil
	}
	return 0, invalid("size", "Invalid value: '%s'. Supported values are: '256x256', '512x512', '1024x1024', and 'auto'.", f.str)
}

func formatOf(fs map[string]field) (string, *apiError) {
	f, ok := fs["response_format"]
	if !ok || f.kind == "null" {
		return formatURL, nil
	}
	if f.kind != "string" {
		return "", typeError("response_format", "string", f)
	}
	if f.str != formatURL && f.str != formatB64 {
		return "", invalid("response_format", "Invalid value: '%s'. Supported values are: 'url' and 'b64_json'.", f.str)
	}
	return f.str, nil
}

// optionalString refuses a parameter that is present, not null and not a
// string.
func optionalString(fs map[string]field, param string) *apiError {
	if f, ok := fs[param]; ok && f.kind != "null" && f.kind != "string" {
		return typeError(param, "string", f)
	}
	return nil
}

// noStream refuses "stream": true, which the stand-in does not support.
func noStream(fs map[string]field) *apiError {
	f, ok := fs["stream"]
	if !ok || f.kind == "null" {
		return nil
	}
	if f.kind != "boolean" && !f.form {
		return typeError("stream", "boolean", f)
	}
	switch strings.TrimSpace(f.str) {
	case "false":
		return nil
	case "true":
		return invalid("stream", "The stand-in generator does not stream; omit 'stream' or set it to false.")
	}
	return invalid("stream", "Invalid type for 'stream': expected a boolean, but got '%s' instead.", f.str)
}

// pngOnly refuses an output_format other than png.
func pngOnly(fs map[string]field) *apiError {
	f, ok := fs["output_format"]
	if !ok || f.kind == "null" {
		return nil
	}
	if f.kind != "string" {
		return typeError("output_format", "string", f)
	}
	if f.str != "png" {
		return invalid("output_format", "Invalid value: '%s'. The stand-in generator produces only 'png'.", f.str)
	}
	return nil
}
