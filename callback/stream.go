package callback

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"os"
	"strconv"
	"sync/atomic"
)

// Bodies larger than spillAt.
//
// Wrap must read a whole JSON or multipart body to tell whether it is a
// callback-mode request (callback_url may be its last member), but it holds
// in memory only the first spillAt bytes: the bytes read past them go to a
// temporary file while a streaming scan looks for the callback-mode fields
// at the top level. When the scan finds one (a candidate), the request is
// subject to the callback-mode limits (Options.MaxBodyBytes, then the exact
// inspection of body.go on the body read into memory); otherwise the
// wrapped handler gets the bytes read so far (memory, then the file) and
// then the rest of the request's body, unlimited, and the file is removed
// when it returns.
//
// The scan is a cheap over-approximation of inspectJSON and
// inspectMultipart: whenever those would call a body callback mode or
// refuse it, the scan calls it a candidate. A candidate is a top-level
// callback_url or trace_id that is not null, an async that is neither null
// nor false, or any of the three twice; for multipart, a part with one of
// those names, except a single async form field that reads as false. The
// scan stops early when the rest of the body cannot change the answer: a
// JSON body that does not start with '{', a top-level object that ended or
// is malformed, a multipart body that ended or is malformed (inspect* call
// all of those "not callback mode").

// spillAt is the number of body bytes Wrap holds in memory before it spills
// to a temporary file.
const spillAt = 1 << 20

// spills counts the temporary files created (read by tests).
var spills atomic.Int64

// errSpoolFull: a body spooled in memory (no temporary file could be
// created) went past its limit.
var errSpoolFull = errors.New("callback: request body too large to hold in memory")

// spool is the reader between a request body and the scan: every byte read
// from src is also written to a temporary file, created on the first read.
// When no file can be created (a read-only or missing temporary
// directory), the bytes are kept in memory instead, up to memMax, as Wrap
// did for every body before it streamed them: past it the read fails with
// errSpoolFull.
type spool struct {
	src    io.Reader
	memMax int64
	f      *os.File
	name   string // the file's name while it still has one
	w      *bufio.Writer
	mem    *bytes.Buffer // the bytes, when no file could be created
	cerr   error         // why no file could be created
	n      int64         // bytes written
	rerr   error         // src's first error other than io.EOF
	werr   error         // the file's first error, or errSpoolFull
}

func (s *spool) Read(p []byte) (int, error) {
	if s.werr != nil {
		return 0, s.werr
	}
	if s.mem != nil {
		n, err := s.src.Read(p)
		if n > 0 {
			if s.n+int64(n) > s.memMax {
				s.werr = errSpoolFull
				return n, s.werr
			}
			s.mem.Write(p[:n])
			s.n += int64(n)
		}
		if err != nil && err != io.EOF && s.rerr == nil {
			s.rerr = err
		}
		return n, err
	}
	if s.f == nil {
		f, err := os.CreateTemp("", "tasks-body-*")
		if err != nil {
			s.cerr, s.mem = err, new(bytes.Buffer)
			return s.Read(p)
		}
		spills.Add(1)
		s.f, s.name = f, f.Name()
		// Unlinked at once where the system allows it (the open file stays
		// readable), so that nothing is left behind even by a crash.
		if os.Remove(s.name) == nil {
			s.name = ""
		}
		s.w = bufio.NewWriterSize(f, 64<<10)
	}
	n, err := s.src.Read(p)
	if n > 0 {
		if _, werr := s.w.Write(p[:n]); werr != nil {
			s.werr = werr
			return n, werr
		}
		s.n += int64(n)
	}
	if err != nil && err != io.EOF && s.rerr == nil {
		s.rerr = err
	}
	return n, err
}

// replay returns a reader of the bytes spooled so far.
func (s *spool) replay() (io.Reader, error) {
	if s.mem != nil {
		return bytes.NewReader(s.mem.Bytes()), nil
	}
	if s.f == nil {
		return bytes.NewReader(nil), nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, err
	}
	return io.NewSectionReader(s.f, 0, s.n), nil
}

// close closes and removes the file.
func (s *spool) close() {
	if s.f == nil {
		return
	}
	s.f.Close()
	if s.name != "" {
		os.Remove(s.name)
	}
	s.f, s.name = nil, ""
}

// fieldIndex returns the index of a callback-mode field name, or -1.
func fieldIndex(name string) int {
	switch name {
	case fieldCallbackURL:
		return 0
	case fieldTraceID:
		return 1
	case fieldAsync:
		return 2
	}
	return -1
}

// scanMultipart reports whether a multipart body is a callback-mode
// candidate (see above), reading no further than it must.
func scanMultipart(r io.Reader, boundary string) bool {
	mr := multipart.NewReader(r, boundary)
	var seen [3]int
	for {
		p, err := mr.NextRawPart()
		if err != nil {
			return false // the end, or malformed: not callback mode
		}
		i := fieldIndex(p.FormName())
		if i < 0 {
			if _, err := io.Copy(io.Discard, p); err != nil {
				return false
			}
			continue
		}
		seen[i]++
		if seen[i] > 1 || i != 2 || p.FileName() != "" {
			return true
		}
		v, err := io.ReadAll(io.LimitReader(p, 16))
		if err != nil {
			return false
		}
		if len(v) == 16 {
			return true // longer than any boolean
		}
		if b, err := strconv.ParseBool(string(v)); err != nil || b {
			return true
		}
	}
}

// scanJSON reports whether a JSON body is a callback-mode candidate (see
// above), reading no further than it must.
func scanJSON(r io.Reader) bool {
	s := jsonScanner{r: bufio.NewReaderSize(r, 32<<10)}
	return s.object()
}

type jsonScanner struct {
	r    *bufio.Reader
	seen [3]int
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// next returns the next byte that is not white space; false at the end of
// the input or on an error.
func (s *jsonScanner) next() (byte, bool) {
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return 0, false
		}
		if !isSpace(c) {
			return c, true
		}
	}
}

// object scans the top-level object. Any surprise means the body is not
// valid JSON, which inspectJSON passes through: not a candidate.
func (s *jsonScanner) object() bool {
	if c, ok := s.next(); !ok || c != '{' {
		return false
	}
	c, ok := s.next()
	if !ok || c == '}' {
		return false
	}
	for {
		if c != '"' {
			return false
		}
		key, ok := s.key()
		if !ok {
			return false
		}
		if c, ok := s.next(); !ok || c != ':' {
			return false
		}
		c, ok := s.next()
		if !ok {
			return false
		}
		if i := fieldIndex(key); i >= 0 {
			s.seen[i]++
			if s.seen[i] > 1 {
				return true
			}
			switch {
			case c == 'n' && s.literal("ull"):
			case c == 'f' && i == 2 && s.literal("alse"):
			case c == 'n' || c == 'f' && i == 2:
				return false // a malformed literal
			default:
				return true
			}
		} else if !s.value(c) {
			return false
		}
		if c, ok = s.next(); !ok || c != ',' {
			return false // '}': the object ended; anything else is malformed
		}
		if c, ok = s.next(); !ok {
			return false
		}
	}
}

// literal reads the rest of a literal.
func (s *jsonScanner) literal(rest string) bool {
	for i := 0; i < len(rest); i++ {
		if c, err := s.r.ReadByte(); err != nil || c != rest[i] {
			return false
		}
	}
	return true
}

// key reads a string whose opening quote was read and returns it decoded
// when it is short enough to be a callback-mode field name ("" otherwise).
func (s *jsonScanner) key() (string, bool) {
	var buf [16]byte
	n := 0
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return "", false
		}
		switch {
		case c == '"':
			return string(buf[:n]), true
		case c == '\\':
			e, err := s.r.ReadByte()
			if err != nil {
				return "", false
			}
			switch e {
			case 'u':
				var h [4]byte
				if _, err := io.ReadFull(s.r, h[:]); err != nil {
					return "", false
				}
				v, err := strconv.ParseUint(string(h[:]), 16, 16)
				if err != nil {
					return "", false
				}
				if v < 0x80 {
					c = byte(v)
				} else {
					c = 0 // no field name has it
				}
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			default: // '"', '\\', '/', or malformed (which json.Compact refuses)
				c = e
			}
		}
		if n == len(buf) {
			return "", s.skipString() // too long for a field name
		}
		buf[n] = c
		n++
	}
}

// skipString skips the rest of a string, at a character boundary.
func (s *jsonScanner) skipString() bool {
	odd := false // the bytes just before are an odd run of backslashes
	for {
		chunk, err := s.r.ReadSlice('"')
		switch {
		case err == nil:
			k := trailingBackslashes(chunk[:len(chunk)-1])
			if k == len(chunk)-1 && odd {
				k++
			}
			if k%2 == 0 {
				return true
			}
			odd = false
		case errors.Is(err, bufio.ErrBufferFull):
			k := trailingBackslashes(chunk)
			if k == len(chunk) {
				odd = odd != (k%2 == 1)
			} else {
				odd = k%2 == 1
			}
		default:
			return false
		}
	}
}

func trailingBackslashes(b []byte) int {
	k := 0
	for k < len(b) && b[len(b)-1-k] == '\\' {
		k++
	}
	return k
}

// value skips a value whose first byte c was read.
func (s *jsonScanner) value(c byte) bool {
	switch c {
	case '"':
		return s.skipString()
	case '{', '[':
		depth := 1
		for depth > 0 {
			c, err := s.r.ReadByte()
			if err != nil {
				return false
			}
			switch c {
			case '"':
				if !s.skipString() {
					return false
				}
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		return true
	}
	// A number or a literal: up to the next delimiter.
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			return false
		}
		if c == ',' || c == '}' || c == ']' || isSpace(c) {
			s.r.UnreadByte()
			return true
		}
	}
}
