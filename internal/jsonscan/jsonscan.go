// Package jsonscan walks JSON text that is already known to be valid
// (checked with json.Valid, or compacted) without decoding it: the skips
// that the Tasks API's request parser and the recorder's response builder
// share. On text that is not valid JSON the results are unspecified, but
// every function stays within b.
package jsonscan

import (
	"bytes"
	"encoding/json"
)

// SkipString returns the index just past the JSON string that starts at
// b[i] (b[i] == '"'), or len(b) when it does not end.
func SkipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// SkipValue returns the index just past the JSON value that starts at b[i]:
// a string, an object or an array (nesting included), or a number, true,
// false or null, which ends at the next ',', '}', ']' or white space. It
// returns len(b) when i is past the end or the value does not end.
func SkipValue(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = SkipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	default: // number, true, false, null
		for ; i < len(b); i++ {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
		}
		return len(b)
	}
}

// Unquote returns the value of the JSON string raw (quotes included). It
// returns a subslice of raw, without copying, when raw has no escapes.
func Unquote(raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1]
	}
	var s string
	_ = json.Unmarshal(raw, &s) // valid JSON text: cannot fail
	return []byte(s)
}
