package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasksapi/tasks/internal/jsonscan"
	"github.com/tasksapi/tasks/taskstore"
)

// Limits of a request. MaxBodyBytes, DefaultLimit, MaxLimit and
// MaxListLength are the wire contract's (see the README's "Limits"); MaxOffset and
// MaxSeconds are this package's own bounds.
const (
	// MaxBodyBytes is the largest request body accepted (1 MiB).
	MaxBodyBytes = 1 << 20
	// DefaultLimit is the page size of retrieve_batch when limit is absent.
	DefaultLimit = 12
	// MaxLimit is the largest page size of retrieve_batch.
	MaxLimit = 100
	// MaxListLength is the most entries ids and trace_ids may hold.
	MaxListLength = 100
	// MaxOffset is the largest offset of retrieve_batch.
	MaxOffset = 1_000_000_000
	// MaxSeconds is the largest created_at_min / created_at_max accepted
	// (Unix seconds, in the year 2286).
	MaxSeconds = 10_000_000_000
)

type action uint8

const (
	actRetrieve action = iota
	actRetrieveBatch
	actDelete
	actRedeliver
)

// request is a parsed Tasks API request body.
type request struct {
	action action

	id, traceID string // "" is absent

	// retrieve_batch filters
	ids, traceIDs          []string
	applicationID, userID  string
	typ                    string
	createdMin, createdMax time.Time // zero is unbounded
	status                 taskstore.Status
	callbackStatus         taskstore.CallbackStatus
	offset, limit          int
}

// rawRequest holds the raw JSON values of the known top-level fields; nil
// is absent, and a JSON null is made nil too.
type rawRequest struct {
	action, id, traceID, ids, traceIDs, applicationID, userID, typ,
	createdMin, createdMax, status, callbackStatus, offset, limit []byte
}

func (raw *rawRequest) field(key []byte) *[]byte {
	switch string(key) { // does not allocate
	case "action":
		return &raw.action
	case "id":
		return &raw.id
	case "trace_id":
		return &raw.traceID
	case "ids":
		return &raw.ids
	case "trace_ids":
		return &raw.traceIDs
	case "application_id":
		return &raw.applicationID
	case "user_id":
		return &raw.userID
	case "type":
		return &raw.typ
	case "created_at_min":
		return &raw.createdMin
	case "created_at_max":
		return &raw.createdMax
	case "status":
		return &raw.status
	case "callback_status":
		return &raw.callbackStatus
	case "offset":
		return &raw.offset
	case "limit":
		return &raw.limit
	}
	return nil
}

// badRequest is a client error; its text is the message the client gets.
type badRequest string

func (e badRequest) Error() string { return string(e) }

func badf(format string, args ...any) error { return badRequest(fmt.Sprintf(format, args...)) }

// jsonContentType reports whether a Content-Type header value is acceptable:
// absent, or application/json with any parameters.
func jsonContentType(ct string) bool {
	if ct == "" || ct == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// errTooLarge answers a body over MaxBodyBytes.
var errTooLarge = badRequest("the request body must be at most " + strconv.Itoa(MaxBodyBytes) + " bytes")

// readBody reads the request body into buf (reusing its capacity) and
// returns it, or a badRequest when it is larger than MaxBodyBytes.
//
// A body that fits buf costs no allocation. A larger one grows the buffer
// as its bytes arrive, doubling, with the declared Content-Length capping
// the growth (an honest body ends in a buffer of its size plus one byte):
// a declared length is never allocated before the bytes come.
func readBody(body io.Reader, contentLength int64, buf []byte) ([]byte, error) {
	if contentLength > MaxBodyBytes {
		return buf, errTooLarge
	}
	buf = buf[:0]
	if body == nil {
		return buf, nil
	}
	const hard = MaxBodyBytes + 1 // one byte past the limit tells a body that is too large
	soft := int64(hard)
	if contentLength >= 0 {
		soft = contentLength + 1 // +1 to see EOF without growing
	}
	for {
		if len(buf) == cap(buf) {
			c := int64(cap(buf))
			next := max(2*c, 512)
			if soft > c {
				next = min(next, soft)
			}
			grown := make([]byte, len(buf), min(next, hard))
			copy(grown, buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > MaxBodyBytes {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// parseRequest parses a request body. Errors are badRequest values naming
// the offending field.
//
// Beyond the contract: the body must be valid UTF-8 and one JSON object with
// no duplicate top-level keys and nothing after it. Field names are matched
// exactly (case-sensitive, after unescaping); unknown fields, and known
// fields the action does not use, are ignored. A JSON null is the same as
// an absent field, and so is an empty string (except for action) or list.
func parseRequest(body []byte, req *request) error {
	var raw rawRequest
	if err := scanObject(body, &raw); err != nil {
		return err
	}
	switch {
	case raw.action == nil || bytes.Equal(raw.action, []byte(`"retrieve"`)):
		req.action = actRetrieve
	case bytes.Equal(raw.action, []byte(`"retrieve_batch"`)):
		req.action = actRetrieveBatch
	case bytes.Equal(raw.action, []byte(`"delete"`)):
		req.action = actDelete
	case bytes.Equal(raw.action, []byte(`"redeliver"`)):
		req.action = actRedeliver
	default:
		s, err := parseString("action", raw.action)
		if err != nil {
			return err
		}
		switch s { // escaped spellings of a known action
		case "retrieve":
			req.action = actRetrieve
		case "retrieve_batch":
			req.action = actRetrieveBatch
		case "delete":
			req.action = actDelete
		case "redeliver":
			req.action = actRedeliver
		default:
			return badf("unknown action %s", quoteShort(s))
		}
	}

	var err error
	switch req.action {
	case actRetrieve:
		if req.id, err = parseString("id", raw.id); err != nil {
			return err
		}
		if req.traceID, err = parseString("trace_id", raw.traceID); err != nil {
			return err
		}
		if req.id == "" && req.traceID == "" {
			return badRequest("id or trace_id is required")
		}
	case actDelete:
		if req.id, err = parseString("id", raw.id); err != nil {
			return err
		}
		if req.id == "" {
			return badRequest("id is required")
		}
	case actRedeliver:
		if req.id, err = parseString("id", raw.id); err != nil {
			return err
		}
		if req.ids, err = parseList("ids", raw.ids); err != nil {
			return err
		}
		if req.id == "" && len(req.ids) == 0 {
			return badRequest("id or ids is required")
		}
	case actRetrieveBatch:
		return parseBatch(&raw, req)
	}
	return nil
}

func parseBatch(raw *rawRequest, req *request) error {
	var err error
	if req.ids, err = parseList("ids", raw.ids); err != nil {
		return err
	}
	if req.traceIDs, err = parseList("trace_ids", raw.traceIDs); err != nil {
		return err
	}
	if req.applicationID, err = parseString("application_id", raw.applicationID); err != nil {
		return err
	}
	if req.userID, err = parseString("user_id", raw.userID); err != nil {
		return err
	}
	if req.typ, err = parseString("type", raw.typ); err != nil {
		return err
	}
	if raw.createdMin != nil {
		sec, nsec, beyond, err := parseSeconds("created_at_min", raw.createdMin)
		if err != nil {
			return err
		}
		if beyond { // a finer fraction than nanoseconds: the next nanosecond is the first instant inside
			nsec++
		}
		req.createdMin = time.Unix(sec, nsec).UTC()
	}
	if raw.createdMax != nil {
		sec, nsec, _, err := parseSeconds("created_at_max", raw.createdMax)
		if err != nil {
			return err
		}
		req.createdMax = time.Unix(sec, nsec).UTC()
	}
	st, err := parseString("status", raw.status)
	if req.status = taskstore.Status(st); err != nil || (st != "" && !req.status.Valid()) {
		return badRequest(`status must be one of "pending", "running", "succeeded", "failed"`)
	}
	cs, err := parseString("callback_status", raw.callbackStatus)
	if req.callbackStatus = taskstore.CallbackStatus(cs); err != nil || (cs != "" && !req.callbackStatus.Valid()) {
		return badRequest(`callback_status must be one of "waiting", "pending", "delivered", "failed"`)
	}
	req.offset, req.limit = 0, DefaultLimit
	if raw.offset != nil {
		n, ok := parseInt(raw.offset)
		switch {
		case !ok || n < 0:
			return badRequest("offset must be a non-negative integer")
		case n > MaxOffset:
			return badf("offset must be at most %d", MaxOffset)
		}
		req.offset = int(n)
	}
	if raw.limit != nil {
		n, ok := parseInt(raw.limit)
		switch {
		case !ok:
			return badRequest("limit must be an integer")
		case n < 1 || n > MaxLimit:
			return badf("limit must be between 1 and %d", MaxLimit)
		}
		req.limit = int(n)
	}
	return nil
}

// quoteShort quotes s for an error message, cut to 64 bytes.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return strconv.Quote(s)
}

// parseString decodes a JSON string value; nil (absent or null) is "".
func parseString(name string, v []byte) (string, error) {
	if v == nil {
		return "", nil
	}
	if len(v) < 2 || v[0] != '"' {
		return "", badf("%s must be a string", name)
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", badf("%s must be a string", name)
	}
	return s, nil
}

// parseList decodes a JSON array of at most MaxListLength strings; nil
// (absent or null) and [] are nil.
func parseList(name string, v []byte) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	bad := func() error { return badf("%s must be an array of at most %d strings", name, MaxListLength) }
	if v[0] != '[' {
		return nil, bad()
	}
	var list []string
	i := skipSpace(v, 1)
	if v[i] == ']' {
		return nil, nil
	}
	for {
		end := jsonscan.SkipValue(v, i)
		s, err := parseString(name, v[i:end])
		if err != nil || len(list) == MaxListLength {
			return nil, bad()
		}
		if list == nil {
			list = make([]string, 0, 4)
		}
		list = append(list, s)
		i = skipSpace(v, end)
		if v[i] == ']' {
			return list, nil
		}
		i = skipSpace(v, i+1) // ','
	}
}

// parseInt parses a JSON integer literal (digits with an optional minus
// sign; no fraction, no exponent), saturating at the int64 range.
func parseInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 1<<63 {
			n = n*10 + uint64(c-'0')
		}
	}
	switch {
	case neg && n >= 1<<63:
		return -1 << 63, true
	case neg:
		return -int64(n), true
	case n >= 1<<63:
		return 1<<63 - 1, true
	}
	return int64(n), true
}

// parseSeconds parses a JSON number of Unix seconds exactly (in decimal, not
// through float64, so that 1763142607.967 means that millisecond): whole
// seconds, nanoseconds, and whether digits finer than a nanosecond were
// non-zero. The value must lie in [0, MaxSeconds].
func parseSeconds(name string, v []byte) (sec, nsec int64, beyond bool, err error) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, 0, false, badf("%s must be a number", name)
	}
	outOfRange := func() error {
		return badf("%s must be a number of Unix seconds between 0 and %d", name, int64(MaxSeconds))
	}
	neg := v[0] == '-'
	if neg {
		v = v[1:]
	}
	// The value is 0.d[0]d[1]d[2]… × 10^point, with d the significant
	// digits (leading zeros dropped). Digits past len(d) only matter as
	// "non-zero or not", since they lie far below a nanosecond.
	var d [32]byte
	nd, point, dropped, inFrac := 0, 0, false, false
	i := 0
	for ; i < len(v); i++ {
		c := v[i]
		if c == '.' {
			inFrac = true
			continue
		}
		if c < '0' || c > '9' {
			break
		}
		if nd == 0 && c == '0' { // a leading zero
			if inFrac {
				point--
			}
			continue
		}
		if !inFrac {
			point++
		}
		if nd < len(d) {
			d[nd] = c - '0'
			nd++
		} else if c != '0' {
			dropped = true
		}
	}
	if i < len(v) { // exponent: v[i] is 'e' or 'E'
		e, ok := parseInt(bytes.TrimPrefix(v[i+1:], []byte("+")))
		if !ok {
			return 0, 0, false, badf("%s must be a number", name)
		}
		const capExp = 1 << 20 // far beyond any meaningful value, and no overflow
		point += int(max(-capExp, min(capExp, e)))
	}
	if nd == 0 {
		return 0, 0, false, nil // zero, -0 included
	}
	if neg || point > 11 { // negative, or at least 10^11
		return 0, 0, false, outOfRange()
	}
	digit := func(k int) int64 {
		if k < 0 || k >= nd {
			return 0
		}
		return int64(d[k])
	}
	for k := 0; k < point; k++ {
		sec = sec*10 + digit(k)
	}
	for k := point; k < point+9; k++ {
		nsec = nsec*10 + digit(k)
	}
	beyond = dropped
	for k := max(point+9, 0); k < nd; k++ {
		beyond = beyond || d[k] != 0
	}
	if sec > MaxSeconds || (sec == MaxSeconds && (nsec > 0 || beyond)) {
		return 0, 0, false, outOfRange()
	}
	return sec, nsec, beyond, nil
}

// scanObject walks the top level of a JSON object, storing the values of
// the known fields in raw. It reports invalid UTF-8, anything but one JSON
// object, and duplicate keys.
func scanObject(body []byte, raw *rawRequest) error {
	if !utf8.Valid(body) {
		return badRequest("the request body must be valid UTF-8")
	}
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return badRequest("the request body must be a JSON object")
	}
	if !json.Valid(body) {
		return invalidJSON(body)
	}
	// The body is one valid JSON object from here on.
	var seen [16][]byte // keys seen so far (unescaped)
	var seenMap map[string]struct{}
	nseen := 0
	i = skipSpace(body, i+1)
	for body[i] != '}' {
		kend := jsonscan.SkipString(body, i)
		key := jsonscan.Unquote(body[i:kend])
		// duplicates
		dup := false
		if seenMap == nil {
			for _, k := range seen[:nseen] {
				if bytes.Equal(k, key) {
					dup = true
					break
				}
			}
			if !dup {
				if nseen < len(seen) {
					seen[nseen] = key
					nseen++
				} else {
					seenMap = make(map[string]struct{}, 64)
					for _, k := range seen {
						seenMap[string(k)] = struct{}{}
					}
				}
			}
		}
		if seenMap != nil {
			if _, dup = seenMap[string(key)]; !dup {
				seenMap[string(key)] = struct{}{}
			}
		}
		if dup {
			return badf("duplicate key %s in the request body", quoteShort(string(key)))
		}
		i = skipSpace(body, kend)
		i = skipSpace(body, i+1) // ':'
		vend := jsonscan.SkipValue(body, i)
		if f := raw.field(key); f != nil {
			if v := body[i:vend]; !bytes.Equal(v, []byte("null")) {
				*f = v
			}
		}
		i = skipSpace(body, vend)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	return nil
}

// invalidJSON describes why a body starting with '{' is not one valid JSON
// object.
func invalidJSON(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return badf("the request body is not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
		}
		return badRequest("the request body is not valid JSON: it ends before the object does")
	}
	return badRequest("the request body must be a single JSON object with nothing after it")
}

// The scanners below assume valid JSON (checked by json.Valid first).

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
