package query

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// fuzzFields is a fixed item used to exercise Match on fuzzed queries; it
// includes invalid JSON on purpose.
var fuzzFields = map[string]json.RawMessage{
	"size":    json.RawMessage(`1024`),
	"cluster": json.RawMessage(`"cluster a"`),
	"created": json.RawMessage(`"2023-06-01T12:00:00Z"`),
	"esc":     json.RawMessage(`"a\"b\u00e9\ud83d"`),
	"flag":    json.RawMessage(`true`),
	"obj":     json.RawMessage(`{ "a": [1, 2] }`),
	"bad":     json.RawMessage(`"\x`),
	"badnum":  json.RawMessage(`-`),
	"nil":     nil,
	"id":      json.RawMessage(`"shadowed"`),
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"",
		"size>=1024 cluster=a",
		`cluster="cluster a" "foo bar"`,
		"created>=2023-01-01T00:00:00Z id~snap",
		`note=a=b x!=y a>"=b" obj={"a":1}`,
		`a="x\"y\\z" id=snap1 flag=true`,
		"size<1e3 size<=-0.5 n>9007199254740993",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): error %T is not *SyntaxError", s, err)
			}
			if se.Pos < 0 || se.Pos > len(s) {
				t.Fatalf("Parse(%q): Pos %d out of range", s, se.Pos)
			}
			if q != nil {
				t.Fatalf("Parse(%q): non-nil query with error", s)
			}
			return
		}
		canon := q.String()
		q2, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) ok, but Parse(String() = %q): %v", s, canon, err)
		}
		if got := q2.String(); got != canon {
			t.Fatalf("String not stable: %q -> %q -> %q", s, canon, got)
		}
		if len(q2.terms) != len(q.terms) {
			t.Fatalf("%q: term count %d after round trip, want %d", s, len(q2.terms), len(q.terms))
		}
		for i := range q.terms {
			a, b := &q.terms[i], &q2.terms[i]
			if a.op != b.op || a.field != b.field || a.value != b.value {
				t.Fatalf("%q: term %d changed in round trip: %q%s%q vs %q%s%q",
					s, i, a.field, opText[a.op], a.value, b.field, opText[b.op], b.value)
			}
		}
		for _, id := range []string{"snap1", "", s} {
			m1 := q.Match(id, fuzzFields)
			if m2 := q2.Match(id, fuzzFields); m1 != m2 {
				t.Fatalf("%q: Match(%q) = %v but canonical %q gives %v", s, id, m1, canon, m2)
			}
			if p, exact := q.IDPrefix(); m1 && (exact && id != p || len(id) < len(p) || id[:len(p)] != p) {
				t.Fatalf("%q: id %q matches but IDPrefix is %q, %v", s, id, p, exact)
			}
		}
		q.Match("x", nil)
	})
}

// FuzzJSONValue checks the allocation-free JSON helpers against
// encoding/json and that classify never panics.
func FuzzJSONValue(f *testing.F) {
	for _, s := range []string{`"abc"`, `"\ud83d\ude00"`, `"\ud83d"`, "\"\xff\"", `1.5e3`, `-0`, `{"a": 1}`, `"\u00`, `01`, `2023-06-01T12:00:00Z`, `2023-06-01T12:00:00.123+02:00`, `2023-06-01t12:00:00z`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v := classify(b, nil)
		if len(b) > 0 && b[0] == '"' {
			checkDecodeString(t, b)
		}
		isNum := len(b) > 0 && (b[0] == '-' || isDigit(b[0])) && len(trimJSONSpace(b)) == len(b) && json.Valid(b)
		if d, ok := parseNumber(b); ok != isNum {
			t.Fatalf("parseNumber(%q) ok = %v disagrees with json.Valid", b, ok)
		} else if ok && compareDecimal(&d, &d) != 0 {
			t.Fatalf("%q not equal to itself", b)
		}
		if _, err := time.Parse(time.RFC3339Nano, string(b)); err == nil && !maybeTime(b) {
			t.Fatalf("maybeTime(%q) = false but time.Parse accepts it", b)
		}
		if v.kind == kComposite && json.Valid(b) && !json.Valid(v.text) {
			t.Fatalf("compact text of %q is invalid: %q", b, v.text)
		}
	})
}
