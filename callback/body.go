package callback

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/internal/webhook"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Limits on the callback-mode fields.
const (
	// MaxCallbackURLLength is the longest callback_url accepted, in bytes.
	MaxCallbackURLLength = 2048
	// MaxTraceIDLength is the longest trace_id accepted, in characters.
	MaxTraceIDLength = taskstore.MaxIDLength
)

// The fields that make a request a callback-mode one. They are removed from
// the body the upstream handler sees.
const (
	fieldCallbackURL = "callback_url"
	fieldTraceID     = "trace_id"
	fieldAsync       = "async"
)

// Messages of the 400 answers to a malformed callback-mode request.
const (
	msgBadCallbackURL = "callback_url must be an absolute http or https URL"
	// msgPrivateCallbackURL is followed by the guard's reason, e.g.
	// "address 10.0.0.1 is not allowed (private network)".
	msgPrivateCallbackURL = "callback_url must not point to a loopback, private or special-purpose address"
	msgBadTraceID         = "trace_id must be a string of at most 128 characters"
	msgBadAsyncJSON       = "async must be a boolean"
	msgBadAsyncForm       = "async must be true or false"
	msgBadUTF8            = "the request body must be valid UTF-8"
)

// tooLargeToStore is the 400 message of a callback-mode request whose stored
// form would be larger than max bytes.
func tooLargeToStore(multipart bool, max int64) *badRequest {
	n := strconv.FormatInt(max, 10)
	if multipart {
		return &badRequest{"in callback mode a form must be at most " + n +
			" bytes as stored: its fields as JSON strings, each file as its name, type, size and hash"}
	}
	return &badRequest{"in callback mode the request body must be at most " + n + " bytes of compacted JSON"}
}

// badRequest is a malformed callback-mode field; its message is shown to the
// client.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

// inspection is what Wrap learned from a request body.
type inspection struct {
	// callback is true for a callback-mode (or async) request; everything
	// below is set only then.
	callback    bool
	callbackURL string
	traceID     string
	// stored is the task's Request: the compacted JSON body, or the JSON
	// object describing a multipart form.
	stored []byte
	// upstream is the body for the wrapped handler, without the
	// callback-mode fields; contentType, when non-empty, replaces the
	// request's Content-Type (a multipart body with a new boundary).
	upstream    []byte
	contentType string
}

// mentionsFields reports whether body may hold one of the callback-mode
// fields; a body that does not is passed through without parsing. A JSON key
// can spell a field with escapes, so any backslash counts.
func mentionsFields(body []byte, escapes bool) bool {
	return bytes.Contains(body, []byte("callback_url")) || bytes.Contains(body, []byte("async")) ||
		escapes && bytes.IndexByte(body, '\\') >= 0
}

// fields collects the callback-mode fields of a body.
type fields struct {
	callbackURL, traceID string // callbackURL is "" unless the body had one (setURL refuses "")
	async                bool
	seen                 [3]bool
	allowPrivate         bool // Options.AllowPrivateNetworks: see checkCallbackURL
}

func (f *fields) once(i int, name string) error {
	if f.seen[i] {
		return &badRequest{name + " must not appear more than once"}
	}
	f.seen[i] = true
	return nil
}

func (f *fields) setURL(s string) error {
	if err := checkCallbackURL(s, f.allowPrivate); err != nil {
		if errors.Is(err, errPrivateCallbackURL) {
			return &badRequest{msgPrivateCallbackURL + ": " + err.(*privateURLError).reason}
		}
		return &badRequest{msgBadCallbackURL}
	}
	f.callbackURL = s
	return nil
}

func (f *fields) setTraceID(s string) error {
	if storekit.TooLong(s) || !utf8.ValidString(s) {
		return &badRequest{msgBadTraceID}
	}
	f.traceID = s
	return nil
}

// inspectJSON inspects a JSON request body. A body that is not a JSON object,
// or that has neither callback_url nor "async": true, is not callback mode.
// null counts as an absent field. A callback-mode body whose compacted form
// (the stored request) is longer than maxStored bytes is refused; so is a
// callback_url the guard would refuse, unless allowPrivate (see
// checkCallbackURL).
func inspectJSON(body []byte, maxStored int64, allowPrivate bool) (inspection, error) {
	if !mentionsFields(body, true) {
		return inspection{}, nil
	}
	obj, ok := compactObject(body)
	if !ok {
		return inspection{}, nil // not an object: the upstream decides
	}
	f := fields{allowPrivate: allowPrivate}
	var err error
	forEachMember(obj, func(k, _, val []byte) {
		if err != nil {
			return
		}
		null := string(val) == "null"
		switch key := string(k); key {
		case fieldCallbackURL:
			if err = f.once(0, key); err != nil || null {
				return
			}
			if val[0] != '"' {
				err = &badRequest{msgBadCallbackURL}
				return
			}
			err = f.setURL(jsonString(val))
		case fieldTraceID:
			if err = f.once(1, key); err != nil || null {
				return
			}
			if val[0] != '"' {
				err = &badRequest{msgBadTraceID}
				return
			}
			err = f.setTraceID(jsonString(val))
		case fieldAsync:
			if err = f.once(2, key); err != nil || null {
				return
			}
			switch string(val) {
			case "true":
				f.async = true
			case "false":
			default:
				err = &badRequest{msgBadAsyncJSON}
			}
		}
	})
	if err != nil {
		return inspection{}, err
	}
	if f.callbackURL == "" && !f.async {
		return inspection{}, nil
	}
	if !utf8.Valid(body) {
		// A stored request must be valid JSON text, and a trace_id must come
		// back as the client sent it: refuse rather than store replacement
		// characters.
		return inspection{}, &badRequest{msgBadUTF8}
	}
	if int64(len(obj)) > maxStored {
		return inspection{}, tooLargeToStore(false, maxStored)
	}
	return inspection{
		callback:    true,
		callbackURL: f.callbackURL,
		traceID:     f.traceID,
		stored:      obj,
		upstream:    stripJSON(obj),
	}, nil
}

// stripJSON returns the compacted JSON object obj without its callback-mode
// members, the others kept in their order.
func stripJSON(obj []byte) []byte {
	out := make([]byte, 0, len(obj))
	out = append(out, '{')
	forEachMember(obj, func(key, rawKey, val []byte) {
		if k := string(key); k == fieldCallbackURL || k == fieldTraceID || k == fieldAsync {
			return
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, rawKey...)
		out = append(out, ':')
		out = append(out, val...)
	})
	return append(out, '}')
}

// formPart is one part of a multipart body.
type formPart struct {
	header   textproto.MIMEHeader
	name     string
	filename string // base name; "" for a form field, set for a file part
	data     []byte
}

// inspectMultipart inspects a multipart/form-data body. The callback-mode
// fields are form fields (a file part with one of their names is refused).
// A body that cannot be parsed is not callback mode (the upstream decides).
//
// The stored request is a JSON object with one member per field name, in the
// order names first appear: a form field's value is its string; a file part
// is {"filename","content_type","size","sha256"} (content_type defaults to
// application/octet-stream; size and sha256 describe the part's bytes as
// sent); a name that appears more than once has an array of its values.
//
// The upstream body keeps every other part byte for byte with the same part
// headers (re-serialised) and, when the multipart writer accepts it, the same
// boundary; otherwise a new boundary and Content-Type.
//
// A form whose stored request would be longer than maxStored bytes is
// refused, its size reckoned before anything is encoded (a 31 MiB field of
// control bytes would take 6 bytes each as a JSON string).
func inspectMultipart(body []byte, boundary string, maxStored int64, allowPrivate bool) (inspection, error) {
	if !mentionsFields(body, false) {
		return inspection{}, nil
	}
	var parts []formPart
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	for {
		p, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return inspection{}, nil
		}
		data, err := io.ReadAll(p)
		if err != nil {
			return inspection{}, nil
		}
		fn := p.FileName()
		parts = append(parts, formPart{header: p.Header, name: p.FormName(), filename: fn, data: data})
	}
	f := fields{allowPrivate: allowPrivate}
	for _, p := range parts {
		var err error
		switch p.name {
		case fieldCallbackURL:
			if err = f.once(0, p.name); err == nil {
				if p.filename != "" {
					err = &badRequest{msgBadCallbackURL}
				} else {
					err = f.setURL(string(p.data))
				}
			}
		case fieldTraceID:
			if err = f.once(1, p.name); err == nil {
				if p.filename != "" {
					err = &badRequest{msgBadTraceID}
				} else {
					err = f.setTraceID(string(p.data))
				}
			}
		case fieldAsync:
			if err = f.once(2, p.name); err == nil {
				b, perr := strconv.ParseBool(string(p.data))
				if p.filename != "" || perr != nil {
					err = &badRequest{msgBadAsyncForm}
				}
				f.async = b
			}
		}
		if err != nil {
			return inspection{}, err
		}
	}
	if f.callbackURL == "" && !f.async {
		return inspection{}, nil
	}
	if formSize(parts) > maxStored {
		return inspection{}, tooLargeToStore(true, maxStored)
	}
	in := inspection{
		callback:    true,
		callbackURL: f.callbackURL,
		traceID:     f.traceID,
		stored:      describeForm(parts),
	}
	var buf bytes.Buffer
	buf.Grow(len(body))
	mw := multipart.NewWriter(&buf)
	if mw.SetBoundary(boundary) != nil {
		in.contentType = mw.FormDataContentType()
	}
	for _, p := range parts {
		if p.name == fieldCallbackURL || p.name == fieldTraceID || p.name == fieldAsync {
			continue
		}
		w, err := mw.CreatePart(p.header)
		if err != nil {
			return inspection{}, fmt.Errorf("callback: re-encoding multipart body: %w", err)
		}
		w.Write(p.data) // a bytes.Buffer does not fail
	}
	if err := mw.Close(); err != nil {
		return inspection{}, fmt.Errorf("callback: re-encoding multipart body: %w", err)
	}
	in.upstream = buf.Bytes()
	return in, nil
}

// describeForm builds the stored JSON object of a multipart form; formSize
// says its length beforehand.
func describeForm(parts []formPart) []byte {
	order, values := groupForm(parts)
	out := make([]byte, 0, formSize(parts))
	out = append(out, '{')
	for i, name := range order {
		if i > 0 {
			out = append(out, ',')
		}
		out = jsonw.AppendString(out, name)
		out = append(out, ':')
		vs := values[name]
		if len(vs) > 1 {
			out = append(out, '[')
		}
		for j, p := range vs {
			if j > 0 {
				out = append(out, ',')
			}
			out = appendPart(out, p)
		}
		if len(vs) > 1 {
			out = append(out, ']')
		}
	}
	return append(out, '}')
}

// formSize returns the length of describeForm(parts) without building it.
func formSize(parts []formPart) int64 {
	order, values := groupForm(parts)
	n := int64(2) // {}
	for i, name := range order {
		if i > 0 {
			n++ // ,
		}
		n += stringSize([]byte(name)) + 1 // "name":
		vs := values[name]
		if len(vs) > 1 {
			n += 2 + int64(len(vs)-1) // [ , … ]
		}
		for _, p := range vs {
			n += partSize(p)
		}
	}
	return n
}

// groupForm lists the form-data parts by name, names in the order they
// first appear; parts without a name are left out.
func groupForm(parts []formPart) (order []string, values map[string][]*formPart) {
	values = make(map[string][]*formPart)
	for i := range parts {
		p := &parts[i]
		if p.name == "" {
			continue // not a form-data part
		}
		if _, ok := values[p.name]; !ok {
			order = append(order, p.name)
		}
		values[p.name] = append(values[p.name], p)
	}
	return order, values
}

// fileContentType is the content_type stored for a file part.
func (p *formPart) fileContentType() string {
	if ct := p.header.Get("Content-Type"); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

// appendPart appends the stored value of one part: a form field's string, or
// a file's {"filename","content_type","size","sha256"}.
func appendPart(v []byte, p *formPart) []byte {
	if p.filename == "" {
		return jsonw.AppendString(v, string(p.data))
	}
	sum := sha256.Sum256(p.data)
	v = append(v, `{"filename":`...)
	v = jsonw.AppendString(v, p.filename)
	v = append(v, `,"content_type":`...)
	v = jsonw.AppendString(v, p.fileContentType())
	v = append(v, `,"size":`...)
	v = strconv.AppendInt(v, int64(len(p.data)), 10)
	v = append(v, `,"sha256":"`...)
	v = hex.AppendEncode(v, sum[:])
	return append(v, `"}`...)
}

// partSize is the length of appendPart's value.
func partSize(p *formPart) int64 {
	if p.filename == "" {
		return stringSize(p.data)
	}
	return int64(len(`{"filename":,"content_type":,"size":,"sha256":""}`)+2*sha256.Size) +
		stringSize([]byte(p.filename)) + stringSize([]byte(p.fileContentType())) +
		int64(len(strconv.AppendInt(nil, int64(len(p.data)), 10)))
}

// stringSize returns len(jsonw.AppendString(nil, string(b))): the
// quotes, and each byte as AppendString escapes it (2 bytes for \\, ", \b,
// \f, \n, \r and \t; 6 for the other control characters, for <, > and &,
// for each byte of invalid UTF-8 and for U+2028 and U+2029).
func stringSize(b []byte) int64 {
	n := int64(2)
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&':
				n++
			case c == '\\' || c == '"' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			n += 6
		} else {
			n += int64(size)
		}
		i += size
	}
	return n
}

// checkCallbackURL validates a callback URL with the sender's own check
// (webhook.CheckURL: http or https, a host, a valid port, no odd numeric
// host forms), so that a URL the sender would never try is refused before a
// task is stored. The error says why the URL is refused and wraps
// ErrBadCallbackURL.
//
// Unless allowPrivate (Options.AllowPrivateNetworks), a host that the
// connect-time guard would refuse without resolving anything is refused
// here too, with an error that also wraps errPrivateCallbackURL: an IP
// literal in a refused range (loopback, private, link-local, unspecified,
// IPv4-mapped or -translated forms of those, and the other special-purpose
// ranges of internal/webhook), and the names "localhost" and
// "*.localhost" (RFC 6761: they mean loopback, and the guard refuses them
// by name). Other names pass: they are resolved and checked when the
// Sender connects, so DNS cannot be used to get around the guard.
func checkCallbackURL(s string, allowPrivate bool) error {
	if len(s) > MaxCallbackURLLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrBadCallbackURL, MaxCallbackURLLength)
	}
	if err := webhook.CheckURL(s, allowPrivate); err != nil {
		if errors.Is(err, webhook.ErrNotAllowed) {
			return &privateURLError{reason: err.Error()}
		}
		return fmt.Errorf("%w: %s", ErrBadCallbackURL, strings.TrimPrefix(err.Error(), "invalid URL: "))
	}
	return nil
}

// errPrivateCallbackURL marks a callback URL refused at submit because its
// host is an address (or a localhost name) the guard refuses.
var errPrivateCallbackURL = errors.New("callback: callback_url points to a refused address")

// privateURLError is checkCallbackURL's error for such a URL. It wraps
// both ErrBadCallbackURL and errPrivateCallbackURL.
type privateURLError struct{ reason string }

func (e *privateURLError) Error() string {
	return "callback: " + msgPrivateCallbackURL + ": " + e.reason

}
func (e *privateURLError) Unwrap() []error { return []error{ErrBadCallbackURL, errPrivateCallbackURL} }
