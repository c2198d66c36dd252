package query

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// maxQueryLen is the maximum length of a query string in bytes.
	maxQueryLen = 4096
	// maxTerms is the maximum number of terms in a query.
	maxTerms = 64
)

// op is a term operator.
type op uint8

const (
	opBare op = iota // bare word, no operator
	opEq             // =
	opNe             // !=
	opGt             // >
	opGe             // >=
	opLt             // <
	opLe             // <=
	opSub            // ~
)

var opText = [...]string{
	opBare: "",
	opEq:   "=",
	opNe:   "!=",
	opGt:   ">",
	opGe:   ">=",
	opLt:   "<",
	opLe:   "<=",
	opSub:  "~",
}

func (o op) ordering() bool { return o >= opGt && o <= opLe }

// term is one parsed term with its value pre-parsed for fast matching.
type term struct {
	op    op
	field string // empty for bare words
	isID  bool   // field == "id"
	value string
	vb    []byte // value as bytes, for allocation-free byte comparisons

	isNum bool
	num   decimal // valid when isNum

	isTime bool
	tm     time.Time // valid when isTime
}

// Query is a parsed query. The zero value, a nil *Query and the result of
// Parse("") all match everything. A Query is immutable and safe for
// concurrent use after Parse.
type Query struct {
	terms    []term
	idPrefix string
	idExact  bool
}

// SyntaxError is the error returned by Parse for a malformed query,
// including a query that exceeds the length or term-count limits.
type SyntaxError struct {
	// Pos is the 0-based byte offset in the query string where the problem
	// was found.
	Pos int
	// Msg describes the problem.
	Msg string
}

// Error implements the error interface, e.g.
// `query: position 7: empty field name before "="`.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("query: position %d: %s", e.Pos, e.Msg)
}

func errAt(pos int, format string, args ...any) *SyntaxError {
	return &SyntaxError{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// isSep reports whether c separates terms (ASCII whitespace).
func isSep(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isOpChar(c byte) bool {
	return c == '!' || c == '=' || c == '<' || c == '>' || c == '~'
}

func isFieldChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// Parse parses a query string. Errors are always of type *SyntaxError.
func Parse(s string) (*Query, error) {
	if len(s) > maxQueryLen {
		return nil, errAt(maxQueryLen, "query is longer than %d bytes", maxQueryLen)
	}
	q := &Query{}
	i := 0
	for {
		for i < len(s) && isSep(s[i]) {
			i++
		}
		if i >= len(s) {
			break
		}
		if len(q.terms) == maxTerms {
			return nil, errAt(i, "too many terms (at most %d)", maxTerms)
		}
		t, next, err := parseTerm(s, i)
		if err != nil {
			return nil, err
		}
		q.terms = append(q.terms, t)
		i = next
	}
	q.idPrefix, q.idExact = computeIDPrefix(q.terms)
	return q, nil
}

// parseTerm parses the term starting at s[i] (a non-separator) and returns
// it together with the offset just past it.
func parseTerm(s string, i int) (term, int, error) {
	if s[i] == '"' {
		v, end, err := parseQuoted(s, i)
		if err != nil {
			return term{}, 0, err
		}
		return newTerm(opBare, "", v), end, nil
	}
	j := i
	for j < len(s) && !isSep(s[j]) && !isOpChar(s[j]) {
		j++
	}
	if j == len(s) || isSep(s[j]) {
		return newTerm(opBare, "", s[i:j]), j, nil
	}

	var o op
	olen := 1
	next := byte(0)
	if j+1 < len(s) {
		next = s[j+1]
	}
	switch s[j] {
	case '!':
		if next != '=' {
			return term{}, 0, errAt(j, "%q must be followed by %q", "!", "=")
		}
		o, olen = opNe, 2
	case '=':
		o = opEq
	case '>':
		o = opGt
		if next == '=' {
			o, olen = opGe, 2
		}
	case '<':
		o = opLt
		if next == '=' {
			o, olen = opLe, 2
		}
	case '~':
		o = opSub
	}

	field := s[i:j]
	if field == "" {
		return term{}, 0, errAt(j, "empty field name before %q", opText[o])
	}
	for k := i; k < j; k++ {
		if !isFieldChar(s[k]) {
			_, size := utf8.DecodeRuneInString(s[k:j])
			return term{}, 0, errAt(k, "invalid character %q in field name", s[k:k+size])
		}
	}

	k := j + olen
	var v string
	var end int
	if k < len(s) && s[k] == '"' {
		var err error
		v, end, err = parseQuoted(s, k)
		if err != nil {
			return term{}, 0, err
		}
	} else {
		end = k
		for end < len(s) && !isSep(s[end]) {
			end++
		}
		v = s[k:end]
	}
	if v == "" && o != opEq && o != opNe {
		return term{}, 0, errAt(k, "empty value after %q", opText[o])
	}
	return newTerm(o, field, v), end, nil
}

// parseQuoted parses the double-quoted string starting at s[i] == '"'. It
// returns the unescaped contents and the offset just past the closing
// quote, which must be followed by a separator or the end of the query.
func parseQuoted(s string, i int) (string, int, error) {
	j := i + 1
	// Fast path: no escapes.
	for j < len(s) && s[j] != '"' && s[j] != '\\' {
		j++
	}
	if j >= len(s) {
		return "", 0, errAt(i, "unterminated quoted string")
	}
	var v string
	if s[j] == '"' {
		v = s[i+1 : j]
	} else {
		var b strings.Builder
		b.WriteString(s[i+1 : j])
		for {
			if j >= len(s) {
				return "", 0, errAt(i, "unterminated quoted string")
			}
			c := s[j]
			if c == '"' {
				break
			}
			if c == '\\' {
				if j+1 >= len(s) {
					return "", 0, errAt(i, "unterminated quoted string")
				}
				e := s[j+1]
				if e != '"' && e != '\\' {
					_, size := utf8.DecodeRuneInString(s[j+1:])
					return "", 0, errAt(j, "invalid escape %q in quoted string (only \\\" and \\\\ are allowed)", s[j:j+1+size])
				}
				b.WriteByte(e)
				j += 2
				continue
			}
			b.WriteByte(c)
			j++
		}
		v = b.String()
	}
	end := j + 1
	if end < len(s) && !isSep(s[end]) {
		_, size := utf8.DecodeRuneInString(s[end:])
		return "", 0, errAt(end, "unexpected %q after closing quote", s[end:end+size])
	}
	return v, end, nil
}

func newTerm(o op, field, value string) term {
	t := term{op: o, field: field, isID: field == "id", value: value, vb: []byte(value)}
	if t.isID || o == opBare || o == opSub {
		return t
	}
	t.num, t.isNum = parseNumber(t.vb)
	if o.ordering() && !t.isNum {
		if tm, err := time.Parse(time.RFC3339Nano, value); err == nil {
			t.tm, t.isTime = tm, true
		}
	}
	return t
}

// computeIDPrefix derives the IDPrefix result from the id terms.
func computeIDPrefix(terms []term) (string, bool) {
	var lower, upper string
	haveLower, haveUpper := false, false
	for i := range terms {
		t := &terms[i]
		if !t.isID {
			continue
		}
		switch t.op {
		case opEq:
			return t.value, true
		case opGt, opGe:
			if !haveLower || t.value > lower {
				lower, haveLower = t.value, true
			}
		case opLt, opLe:
			if !haveUpper || t.value < upper {
				upper, haveUpper = t.value, true
			}
		}
	}
	if !haveLower || !haveUpper {
		return "", false
	}
	// Every id x with lower <= x <= upper starts with the common prefix of
	// lower and upper (byte-wise ordering).
	n := 0
	for n < len(lower) && n < len(upper) && lower[n] == upper[n] {
		n++
	}
	return lower[:n], false
}

// IDPrefix returns a prefix that the id of every matching item must start
// with, for narrowing scans. With exact true the id must equal the prefix
// (the query has an id=value term). A non-exact prefix is derived from a
// lower bound (id>v or id>=v) together with an upper bound (id<v or id<=v)
// as their longest common prefix. It returns "", false when the query does
// not constrain the id this way. The result is a necessary condition only:
// an item whose id has the prefix must still be checked with Match.
func (q *Query) IDPrefix() (prefix string, exact bool) {
	if q == nil {
		return "", false
	}
	return q.idPrefix, q.idExact
}

// String returns the canonical form of the query: terms joined by single
// spaces, with values quoted only when needed, such that Parse(q.String())
// yields an equivalent query with the same String.
func (q *Query) String() string {
	if q == nil {
		return ""
	}
	var b strings.Builder
	for i := range q.terms {
		t := &q.terms[i]
		if i > 0 {
			b.WriteByte(' ')
		}
		if t.op != opBare {
			b.WriteString(t.field)
			b.WriteString(opText[t.op])
		}
		if needsQuote(t.op, t.value) {
			writeQuoted(&b, t.value)
		} else {
			b.WriteString(t.value)
		}
	}
	return b.String()
}

// needsQuote reports whether value must be quoted to be reparsed as the
// value of a term with operator o.
func needsQuote(o op, v string) bool {
	if v == "" {
		return true
	}
	if (o == opGt || o == opLt) && v[0] == '=' {
		return true // "a>" + "=b" would reparse as "a>=" + "b"
	}
	if v[0] == '"' {
		return true
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if isSep(c) || o == opBare && isOpChar(c) {
			return true
		}
	}
	return false
}

func writeQuoted(b *strings.Builder, v string) {
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
}
