package query

import (
	"bytes"
	"encoding/json"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// kind classifies a metadata field's JSON value.
type kind uint8

const (
	kInvalid   kind = iota // not valid JSON: treated as non-string text
	kString                // JSON string; text is the decoded string
	kNumber                // JSON number; num is its value
	kLiteral               // true, false or null
	kComposite             // object or array; text is the compact JSON
)

// value is a classified field value. text is the decoded string for
// kString and the JSON text otherwise.
type value struct {
	kind kind
	text []byte
	num  decimal
}

var nullText = []byte("null")

func isJSONSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

func trimJSONSpace(b []byte) []byte {
	for len(b) > 0 && isJSONSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isJSONSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// classify inspects a raw JSON value. buf is scratch space that may be used
// to hold a decoded string; the returned text may alias raw or buf.
func classify(raw, buf []byte) value {
	b := trimJSONSpace(raw)
	if len(b) == 0 {
		return value{kind: kLiteral, text: nullText}
	}
	switch c := b[0]; {
	case c == '"':
		if s, ok := decodeString(b, buf); ok {
			return value{kind: kString, text: s}
		}
	case c == '-' || '0' <= c && c <= '9':
		if d, ok := parseNumber(b); ok {
			return value{kind: kNumber, text: b, num: d}
		}
	case c == '{' || c == '[':
		return value{kind: kComposite, text: compactText(b)}
	default:
		if s := string(b); s == "true" || s == "false" || s == "null" {
			return value{kind: kLiteral, text: b}
		}
	}
	return value{kind: kInvalid, text: b}
}

// compactText returns the compact JSON text of an object or array. It only
// allocates when b contains insignificant whitespace; if b is not valid
// JSON it is returned unchanged.
func compactText(b []byte) []byte {
	inString, escaped, hasSpace := false, false, false
	for _, c := range b {
		switch {
		case inString:
			if escaped {
				escaped = false
			} else if c == '\\' {
				escaped = true
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case isJSONSpace(c):
			hasSpace = true
		}
		if hasSpace {
			break
		}
	}
	if !hasSpace {
		return b
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

// decodeString decodes the JSON string b (which starts with '"') with the
// same semantics as encoding/json: invalid UTF-8 and unpaired surrogates
// become U+FFFD. It reports false if b is not exactly one valid JSON
// string. Strings without escapes or non-ASCII bytes are returned as a
// sub-slice of b without copying; otherwise the result is appended to
// buf[:0].
func decodeString(b, buf []byte) ([]byte, bool) {
	i := 1
	for i < len(b) {
		c := b[i]
		if c == '"' {
			if i == len(b)-1 {
				return b[1:i], true
			}
			return nil, false
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		i++
	}
	if i >= len(b) {
		return nil, false
	}
	out := append(buf[:0], b[1:i]...)
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			if i == len(b)-1 {
				return out, true
			}
			return nil, false
		case c < 0x20:
			return nil, false
		case c == '\\':
			if i+1 >= len(b) {
				return nil, false
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := hex4(b[i+2:])
				if !ok {
					return nil, false
				}
				i += 6
				if utf16.IsSurrogate(r) {
					if len(b)-i >= 6 && b[i] == '\\' && b[i+1] == 'u' {
						if r2, ok := hex4(b[i+2:]); ok {
							if d := utf16.DecodeRune(r, r2); d != unicode.ReplacementChar {
								out = utf8.AppendRune(out, d)
								i += 6
								continue
							}
						}
					}
					r = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				return nil, false
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, unicode.ReplacementChar)
			} else {
				out = append(out, b[i:i+size]...)
			}
			i += size
		}
	}
	return nil, false
}

// hex4 decodes the 4 hex digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// expLimit saturates decimal exponents so that arithmetic cannot overflow.
const expLimit = 1 << 40

// decimal is an exact decimal number: sign × 0.D × 10^point, where the
// significant digits D are hi followed by lo, with no leading or trailing
// zeros. Zero has sign 0 and no digits. hi and lo alias the parsed text.
type decimal struct {
	sign  int8
	point int64
	hi    []byte
	lo    []byte
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// parseNumber parses b as a JSON number (exactly; no surrounding space).
func parseNumber(b []byte) (decimal, bool) {
	i := 0
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	if i >= len(b) {
		return decimal{}, false
	}
	intStart := i
	switch {
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		for i < len(b) && isDigit(b[i]) {
			i++
		}
	default:
		return decimal{}, false
	}
	intPart := b[intStart:i]
	var frac []byte
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if i == start {
			return decimal{}, false
		}
		frac = b[start:i]
	}
	var exp int64
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		expNeg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			expNeg = b[i] == '-'
			i++
		}
		start := i
		for i < len(b) && isDigit(b[i]) {
			if exp < expLimit {
				exp = exp*10 + int64(b[i]-'0')
			}
			i++
		}
		if i == start {
			return decimal{}, false
		}
		if exp > expLimit {
			exp = expLimit
		}
		if expNeg {
			exp = -exp
		}
	}
	if i != len(b) {
		return decimal{}, false
	}

	var d decimal
	if intPart[0] != '0' {
		d.hi, d.lo = intPart, frac
		d.point = int64(len(intPart)) + exp
	} else {
		z := 0
		for z < len(frac) && frac[z] == '0' {
			z++
		}
		d.hi = frac[z:]
		d.point = exp - int64(z)
	}
	for len(d.lo) > 0 && d.lo[len(d.lo)-1] == '0' {
		d.lo = d.lo[:len(d.lo)-1]
	}
	if len(d.lo) == 0 {
		d.lo = nil
		for len(d.hi) > 0 && d.hi[len(d.hi)-1] == '0' {
			d.hi = d.hi[:len(d.hi)-1]
		}
	}
	if len(d.hi) == 0 && len(d.lo) == 0 {
		return decimal{}, true // zero (including -0)
	}
	d.sign = 1
	if neg {
		d.sign = -1
	}
	return d, true
}

func (d *decimal) digit(i int) byte {
	if i < len(d.hi) {
		return d.hi[i]
	}
	return d.lo[i-len(d.hi)]
}

// compareDecimal returns -1, 0 or +1 as a is less than, equal to or greater
// than b.
func compareDecimal(a, b *decimal) int {
	if a.sign != b.sign {
		if a.sign < b.sign {
			return -1
		}
		return 1
	}
	if a.sign == 0 {
		return 0
	}
	c := 0
	if a.point != b.point {
		c = 1
		if a.point < b.point {
			c = -1
		}
	} else {
		na, nb := len(a.hi)+len(a.lo), len(b.hi)+len(b.lo)
		for i := 0; i < na && i < nb; i++ {
			x, y := a.digit(i), b.digit(i)
			if x != y {
				c = 1
				if x < y {
					c = -1
				}
				break
			}
		}
		if c == 0 {
			// Digits have no trailing zeros, so a proper prefix is smaller.
			switch {
			case na < nb:
				c = -1
			case na > nb:
				c = 1
			}
		}
	}
	return c * int(a.sign)
}
