package crdt

import (
	"bytes"
	"unicode/utf8"
)

// A linear check for canonical JSON, so that the common case — a value that
// is already canonical, as every value a replica stores or sends is — costs
// one pass over its bytes instead of a decode and a re-encode through
// encoding/json. It mirrors what canonicalJSON produces: compact, object
// keys strictly increasing bytewise (a duplicate key is not canonical: the
// decoder keeps only the last), numbers as written, strings with exactly
// the escapes encoding/json writes without HTML escaping (\" \\ \b \f \n \r
// \t, \u00xx in lower-case hex for the other control characters, \u2028
// and \u2029) and every other character as valid UTF-8. It may answer
// "unsure" where it would need to decode (an object key with an escape,
// nesting deeper than maxCanonicalDepth); callers then take the slow path.
// FuzzCanonicalJSON checks it against canonicalJSON.

// maxCanonicalDepth is the nesting depth beyond which scanCanonical gives
// up; encoding/json's own limit is far higher.
const maxCanonicalDepth = 256

// scanCanonical reports whether v is certainly one JSON value in canonical
// form. False means "not canonical, or not sure".
func scanCanonical(v []byte) bool {
	s := canonScanner{b: v}
	return s.value() && s.i == len(v)
}

// plainStringByte marks the bytes that stand for themselves in a
// canonical string: printable ASCII other than '"' and '\\'.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

type canonScanner struct {
	b     []byte
	i     int
	depth int
}

func (s *canonScanner) value() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	}
	return false
}

func (s *canonScanner) literal(lit string) bool {
	if !bytes.HasPrefix(s.b[s.i:], []byte(lit)) {
		return false
	}
	s.i += len(lit)
	return true
}

func (s *canonScanner) object() bool {
	if s.depth++; s.depth > maxCanonicalDepth {
		return false
	}
	s.i++ // '{'
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	var prev []byte
	for n := 0; ; n++ {
		start := s.i + 1
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return false
		}
		escaped, ok := s.str()
		if !ok || escaped {
			return false // an escaped key would have to be decoded to be ordered
		}
		key := s.b[start : s.i-1]
		if n > 0 && bytes.Compare(prev, key) >= 0 {
			return false
		}
		prev = key
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return false
		}
		s.i++
		if !s.value() {
			return false
		}
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

func (s *canonScanner) array() bool {
	if s.depth++; s.depth > maxCanonicalDepth {
		return false
	}
	s.i++ // '['
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		if !s.value() || s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// str scans a string at s.i (which holds '"') and reports whether it holds
// an escape and whether it is canonical.
func (s *canonScanner) str() (escaped, ok bool) {
	b := s.b
	i := s.i + 1
	for i < len(b) {
		for i < len(b) && plainStringByte[b[i]] {
			i++
		}
		if i == len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return escaped, true
		case c == '\\':
			escaped = true
			if i+1 >= len(b) {
				return escaped, false
			}
			switch b[i+1] {
			case '"', '\\', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if !canonicalUEscape(b[i+2:]) {
					return escaped, false
				}
				i += 6
			default:
				return escaped, false
			}
		case c < 0x20:
			return escaped, false
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
				return escaped, false
			}
			i += size
		}
	}
	return escaped, false
}

// canonicalUEscape reports whether the four bytes after a `\u` are an
// escape that encoding/json writes: a control character other than \b \f
// \n \r \t in lower-case hex, or U+2028 or U+2029.
func canonicalUEscape(h []byte) bool {
	if len(h) < 4 {
		return false
	}
	if h[0] == '2' && h[1] == '0' && h[2] == '2' && (h[3] == '8' || h[3] == '9') {
		return true
	}
	if h[0] != '0' || h[1] != '0' || (h[2] != '0' && h[2] != '1') {
		return false
	}
	var lo byte
	switch c := h[3]; {
	case '0' <= c && c <= '9':
		lo = c - '0'
	case 'a' <= c && c <= 'f':
		lo = c - 'a' + 10
	default:
		return false
	}
	switch ch := (h[2]-'0')<<4 | lo; ch {
	case '\b', '\f', '\n', '\r', '\t':
		return false
	}
	return true
}

// number scans a number by the JSON grammar.
func (s *canonScanner) number() bool {
	b, i := s.b, s.i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return false
		}
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
	}
	s.i = i
	return true
}
