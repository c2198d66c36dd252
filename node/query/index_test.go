package query

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// within reports whether enc lies in one of spans.
func within(enc []byte, spans []Span) bool {
	for _, s := range spans {
		if bytes.Compare(s.From, enc) <= 0 && (s.To == nil || bytes.Compare(enc, s.To) < 0) {
			return true
		}
	}
	return false
}

// quote writes v as a query value that parses back to v.
func quote(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// checkIndexTerms fails unless, whenever the query "f OP v" (and the
// range "f>=lo f<=hi") matches a field value raw, raw's index encoding
// lies within the spans of every index term of the query: an index read
// of the spans finds every match.
func checkIndexTerms(t *testing.T, raw []byte, v, hi string) {
	enc := AppendIndexValue(nil, raw)
	fields := map[string]json.RawMessage{"f": raw}
	queries := []string{"f>=" + quote(v) + " f<=" + quote(hi), "f>" + quote(v) + " f<" + quote(hi)}
	for _, op := range []string{"=", "<", "<=", ">", ">="} {
		queries = append(queries, "f"+op+quote(v))
	}
	for _, s := range queries {
		q, err := Parse(s)
		if err != nil || !q.Match("x", fields) {
			continue
		}
		terms := q.IndexTerms()
		if len(terms) == 0 {
			t.Fatalf("%s: no index term", s)
		}
		for _, it := range terms {
			if it.Field != "f" || !within(enc, it.Spans) {
				t.Fatalf("%s matches %s (encoded %x) but its index term %+v does not hold it", s, raw, enc, it)
			}
		}
	}
}

func TestIndexTerms_HoldEveryMatch(t *testing.T) {
	raws := []string{`0`, `-0`, `1`, `1.0`, `1e0`, `-1.5`, `100`, `1e2`, `0.001`, `-1e-3`, `1e40`, `-1e40`,
		`123456789012345678901234567890`, strings.Repeat("7", 150), "-" + strings.Repeat("7", 150),
		`"2023-12-07T10:30:45Z"`, `"2023-12-07T11:30:45+01:00"`, `"2023-12-07T10:30:45.5Z"`, `"1999-01-01T00:00:00Z"`,
		`"cluster-a"`, `"1"`, `"100"`, `""`, `"a\u0000b"`, `"true"`, `"2023-12-07"`, `"` + strings.Repeat("x", 140) + `"`,
		`true`, `null`, `{"a":1}`, `[1, 2]`, `"\x`, `-`}
	vals := []string{"0", "1", "1.0", "-1.5", "1e2", "100", "1e40", strings.Repeat("7", 150),
		"2023-12-07T10:30:45Z", "2023-12-07T11:30:45+01:00", "2000-01-01T00:00:00Z", "cluster-a", "cluster", "",
		"true", "null", `{"a":1}`, "a\x00b", strings.Repeat("x", 129), strings.Repeat("x", 140), "\xff"}
	for _, raw := range raws {
		for _, v := range vals {
			for _, hi := range vals {
				checkIndexTerms(t, []byte(raw), v, hi)
			}
		}
	}
}

// Numbers encode in numeric order, times in chronological order, strings
// in byte order; equal numbers and one instant's string encode alike.
func TestAppendIndexValue_Order(t *testing.T) {
	ordered := [][]string{
		{`-1e40`, `-100`, `-1.5`, `-1`, `-0.001`, `0`, `0.001`, `1`, `1.5`, `2`, `10`, `1e2`, `123456789012345678901234567890`, `1e40`},
		{`"1999-01-01T00:00:00Z"`, `"2023-12-07T10:30:45Z"`, `"2023-12-07T10:30:45.5Z"`, `"2023-12-07T12:30:45+01:00"`, `"2024-01-01T00:00:00Z"`},
		{`""`, `"\u0000"`, `"a"`, `"a\u0000"`, `"a\u0000b"`, `"ab"`, `"b"`},
	}
	for _, vs := range ordered {
		for i := 1; i < len(vs); i++ {
			a, b := AppendIndexValue(nil, []byte(vs[i-1])), AppendIndexValue(nil, []byte(vs[i]))
			if bytes.Compare(a, b) >= 0 {
				t.Errorf("%s encodes to %x, not before %s's %x", vs[i-1], a, vs[i], b)
			}
		}
	}
	for _, same := range [][2]string{{`1`, `1.0`}, {`1e2`, `100`}, {`0`, `-0`}, {`-1.50`, `-15e-1`}} {
		if a, b := AppendIndexValue(nil, []byte(same[0])), AppendIndexValue(nil, []byte(same[1])); !bytes.Equal(a, b) {
			t.Errorf("%s and %s encode differently: %x, %x", same[0], same[1], a, b)
		}
	}
}

// FuzzIndexValue: the encoding never panics, and an index read of a
// query's index terms finds every value the query matches.
func FuzzIndexValue(f *testing.F) {
	for _, s := range [][3]string{
		{`1024`, "1000", "2000"},
		{`"2023-12-07T10:30:45Z"`, "2023-01-01T00:00:00Z", "2024-01-01T00:00:00+01:00"},
		{`"cluster-a"`, "cluster", "cluster-b"},
		{`-1.5e3`, "-2000", "0"},
		{`true`, "true", "z"},
		{`"` + strings.Repeat("x", 130) + `"`, strings.Repeat("x", 129), strings.Repeat("x", 131)},
	} {
		f.Add([]byte(s[0]), s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, raw []byte, v, hi string) {
		if len(raw) > 4096 || len(v) > 1024 || len(hi) > 1024 {
			return
		}
		checkIndexTerms(t, raw, v, hi)
	})
}
