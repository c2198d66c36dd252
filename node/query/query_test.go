package query

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// testFields is the metadata used by most match tests.
var testFields = map[string]json.RawMessage{
	"size":    json.RawMessage(`1024`),
	"sizef":   json.RawMessage(`1.024e3`),
	"neg":     json.RawMessage(`-2.5`),
	"big":     json.RawMessage(`9007199254740993`),
	"huge":    json.RawMessage(`123456789012345678901234567890`),
	"zero":    json.RawMessage(`0`),
	"cluster": json.RawMessage(`"cluster a"`),
	"name":    json.RawMessage(`"snapshot"`),
	"num_str": json.RawMessage(`"100"`),
	"esc":     json.RawMessage(`"a\"b\\c\u00e9\ud83d\ude00"`),
	"uni":     json.RawMessage(`"héllo"`),
	"empty":   json.RawMessage(`""`),
	"created": json.RawMessage(`"2023-06-01T12:00:00Z"`),
	"tz":      json.RawMessage(`"2023-06-01T14:00:00+02:00"`),
	"flag":    json.RawMessage(`true`),
	"off":     json.RawMessage(`false`),
	"nothing": json.RawMessage(`null`),
	"nilraw":  nil,
	"obj":     json.RawMessage(`{"a":1,"b":[1,2]}`),
	"spaced":  json.RawMessage(` { "a" : 1 } `),
	"arr":     json.RawMessage(`[1,"x"]`),
	"bad":     json.RawMessage(`{not json`),
	"badstr":  json.RawMessage(`"unterminated`),
	"note":    json.RawMessage(`"a=b"`),
	"k.a:b-c": json.RawMessage(`"dotted"`),
}

const testID = "snap1"

func TestMatch(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  bool
	}{
		// Empty query.
		{"empty", "", true},
		{"whitespace only", " \t\n ", true},

		// = on strings, numbers, literals, composites.
		{"eq string", "name=snapshot", true},
		{"eq string mismatch", "name=snap", false},
		{"eq quoted string with space", `cluster="cluster a"`, true},
		{"eq value with operator chars", "note=a=b", true},
		{"eq escaped json string", `esc="a\"b\\cé😀"`, true},
		{"eq unicode", "uni=héllo", true},
		{"eq empty string unquoted", "empty=", true},
		{"eq empty string quoted", `empty=""`, true},
		{"eq empty vs nonempty", "name=", false},
		{"eq number", "size=1024", true},
		{"eq number exponent field", "sizef=1024", true},
		{"eq number exponent query", "size=1.024e3", true},
		{"eq number trailing zeros", "size=1024.000", true},
		{"eq number mismatch", "size=1025", false},
		{"eq number vs non-number text", "size=abc", false},
		{"eq big integer exact", "big=9007199254740993", true},
		{"eq big integer off by one", "big=9007199254740992", false},
		{"eq huge integer", "huge=1.2345678901234567890123456789e29", true},
		{"eq negative zero", "zero=-0", true},
		{"eq zero with exponent", "zero=0e10", true},
		{"eq numeric string is string", "num_str=100", true},
		{"eq numeric string not numeric", "num_str=1e2", false},
		{"eq true", "flag=true", true},
		{"eq false", "off=false", true},
		{"eq null", "nothing=null", true},
		{"eq nil raw is null", "nilraw=null", true},
		{"eq bool vs string", "flag=yes", false},
		{"eq object compact", `obj={"a":1,"b":[1,2]}`, true},
		{"eq object with whitespace compacted", `spaced={"a":1}`, true},
		{"eq array", `arr=[1,"x"]`, true},
		{"eq invalid json raw text", `bad={not`, false},
		{"eq invalid json raw text quoted", `bad="{not json"`, true},
		{"eq invalid json string is text", `badstr="\"unterminated"`, true},
		{"eq missing", "nope=x", false},
		{"eq missing empty", "nope=", false},
		{"eq dotted field name", "k.a:b-c=dotted", true},

		// !=.
		{"ne string", "name!=snap", true},
		{"ne string equal", "name!=snapshot", false},
		{"ne number numeric", "size!=1.024e3", false},
		{"ne number", "size!=1", true},
		{"ne missing", "nope!=x", true},
		{"ne bool", "flag!=false", true},

		// Ordering on numbers.
		{"gt number", "size>1000", true},
		{"gt number equal", "size>1024", false},
		{"ge number equal", "size>=1024", true},
		{"ge number exponent", "sizef>=1024", true},
		{"lt number", "size<2000", true},
		{"lt number false", "size<1024", false},
		{"le number equal", "size<=1024", true},
		{"le number fractional", "size<=1023.999", false},
		{"gt negative", "neg>-3", true},
		{"lt negative", "neg<-2.4", true},
		{"gt negative false", "neg>-2.5", false},
		{"lt zero", "neg<0", true},
		{"gt zero", "size>0", true},
		{"zero ge zero", "zero>=0", true},
		{"big integer ordering", "big>9007199254740992", true},
		{"big integer ordering false", "big>9007199254740993", false},
		{"huge ordering", "huge>1e29", true},
		{"huge ordering false", "huge>1e30", false},
		{"small exponent", "size>1e-300", true},
		{"number field non-number query", "size>abc", false},
		{"number field time query", "size>2023-01-01T00:00:00Z", false},

		// Ordering on strings.
		{"gt string lexicographic", "name>r", true},
		{"lt string lexicographic", "name<t", true},
		{"ge string equal", "name>=snapshot", true},
		{"gt string equal", "name>snapshot", false},
		{"numeric string is lexicographic", "num_str<50", true},
		{"numeric string lexicographic gt", "num_str>50", false},
		{"empty string lt", "empty<a", true},

		// Ordering on RFC 3339 times.
		{"time gt", "created>2023-01-01T00:00:00Z", true},
		{"time ge equal", "created>=2023-06-01T12:00:00Z", true},
		{"time lt", "created<2024-01-01T00:00:00Z", true},
		{"time lt false", "created<2023-06-01T12:00:00Z", false},
		{"time nano", "created>2023-06-01T11:59:59.999999999Z", true},
		{"time zone chronological equal", "tz>=2023-06-01T12:00:00Z", true},
		{"time zone chronological not greater", "tz>2023-06-01T12:00:00Z", false},
		{"time zone query offset", "created<=2023-06-01T13:00:00+01:00", true},
		{"time zone query offset gt", "created>2023-06-01T13:00:00+01:00", false},
		// Lexicographically "2023-06-01T14..." > "2023-06-01T12:30...", but
		// chronologically 12:00Z < 12:30Z.
		{"time beats lexicographic", "tz<2023-06-01T12:30:00Z", true},
		{"time query non-time field", "name>2023-01-01T00:00:00Z", true},
		{"date-only query is string", "created>2023-06-01", true},
		{"date-only query lt", "created<2023-06-02", true},

		// Ordering never matches these.
		{"ordering missing", "nope>1", false},
		{"ordering missing le", "nope<=zzz", false},
		{"ordering bool", "flag>a", false},
		{"ordering null", "nothing<z", false},
		{"ordering object", "obj>0", false},
		{"ordering array", "arr<z", false},
		{"ordering invalid json", "bad>0", false},

		// ~.
		{"sub string", "name~shot", true},
		{"sub string case sensitive", "name~SHOT", false},
		{"sub string full", "name~snapshot", true},
		{"sub number text", "size~02", true},
		{"sub number exponent text", "sizef~e3", true},
		{"sub bool", "flag~ru", true},
		{"sub object quoted", `obj~"\"b\":["`, true},
		{"sub object inner quote", `obj~b":[`, true},
		{"sub object compacted", `spaced~{"a":1}`, true},
		{"sub quoted with space", `cluster~"r a"`, true},
		{"sub missing", "nope~x", false},
		{"sub invalid json", "bad~not", true},
		{"sub escaped string", `esc~"b\\c"`, true},

		// id.
		{"id eq", "id=snap1", true},
		{"id eq false", "id=snap", false},
		{"id ne", "id!=x", true},
		{"id ne false", "id!=snap1", false},
		{"id sub", "id~snap", true},
		{"id gt string", "id>snap0", true},
		{"id lt string", "id<snap10", true}, // "snap1" < "snap10"
		{"id numeric-looking compared as string", "id>=snap1", true},
		{"id ignores field named id", "id=other", false},

		// Bare words.
		{"bare id", "snap1", true},
		{"bare string value", "snapshot", true},
		{"bare quoted value", `"cluster a"`, true},
		{"bare number text", "1024", true},
		{"bare number not numeric", "1.024e3", true}, // sizef's text is 1.024e3
		{"bare number other spelling", "1024.0", false},
		{"bare bool", "true", true},
		{"bare null", "null", true},
		{"bare substring no", "snap", false},
		{"bare no match", "zzz", false},
		{"bare decoded escape", `"a\"b\\cé😀"`, true},
		{"bare empty quoted", `""`, true}, // matches the empty string field
		{"bare invalid json text", "{not", false},
		{"bare compact object", `"{\"a\":1}"`, true},

		// AND.
		{"and all true", "size>=1024 cluster=\"cluster a\" snap1", true},
		{"and one false", "size>=1024 cluster=b", false},
		{"and tabs and runs", "size>=1024\t\t  name=snapshot", true},
		{"and ne missing", "nope!=1 size=1024", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.query, err)
			}
			if got := q.Match(testID, testFields); got != tc.want {
				t.Errorf("Parse(%q).Match = %v, want %v", tc.query, got, tc.want)
			}
			// The canonical form must behave identically.
			q2, err := Parse(q.String())
			if err != nil {
				t.Fatalf("Parse(String() = %q): %v", q.String(), err)
			}
			if got := q2.Match(testID, testFields); got != tc.want {
				t.Errorf("Parse(%q).Match = %v, want %v", q.String(), got, tc.want)
			}
		})
	}
}

func TestMatchNilAndZero(t *testing.T) {
	tests := []struct {
		name string
		q    *Query
	}{
		{"nil", nil},
		{"zero", &Query{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.q.Match("x", nil) {
				t.Error("Match = false, want true")
			}
			if s := tc.q.String(); s != "" {
				t.Errorf("String = %q, want empty", s)
			}
			if p, exact := tc.q.IDPrefix(); p != "" || exact {
				t.Errorf("IDPrefix = %q, %v", p, exact)
			}
		})
	}
}

func TestMatchNilFields(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  bool
	}{
		{"eq", "a=1", false},
		{"ne", "a!=1", true},
		{"bare id", "x", true},
		{"bare other", "y", false},
		{"id", "id=x", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			if got := q.Match("x", nil); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		query   string
		pos     int
		msgPart string
	}{
		{"empty field before eq", "size>1 =x", 7, `empty field name before "="`},
		{"empty field before ne", "!=x", 0, `empty field name before "!="`},
		{"empty field before ge", ">=1", 0, `empty field name before ">="`},
		{"empty field before tilde", "a=1  ~x", 5, `empty field name before "~"`},
		{"bang without eq", "a!b", 1, `"!" must be followed by "="`},
		{"bang at end", "a!", 1, `"!" must be followed by "="`},
		{"bang alone", "!", 0, `"!" must be followed by "="`},
		{"bang first then empty field", "!x", 0, `"!" must be followed by "="`},
		{"invalid field char", "a/b=1", 1, `invalid character "/" in field name`},
		{"invalid field char unicode", "x hé=1", 3, `invalid character "é" in field name`},
		{"invalid field char bad utf8", "a\xffb=1", 1, `invalid character "\xff" in field name`},
		{"empty value gt", "a>", 2, `empty value after ">"`},
		{"empty value ge", "a>= b=1", 3, `empty value after ">="`},
		{"empty value lt", "a< ", 2, `empty value after "<"`},
		{"empty value le", "a<=", 3, `empty value after "<="`},
		{"empty value tilde", "a~", 2, `empty value after "~"`},
		{"empty quoted value tilde", `a~""`, 2, `empty value after "~"`},
		{"empty quoted value gt", `x=1 a>""`, 6, `empty value after ">"`},
		{"unterminated quote value", `a="abc`, 2, "unterminated quoted string"},
		{"unterminated quote bare", `x "abc def`, 2, "unterminated quoted string"},
		{"unterminated after escape", `"abc\"`, 0, "unterminated quoted string"},
		{"unterminated trailing backslash", `"abc\`, 0, "unterminated quoted string"},
		{"invalid escape", `a="x\ny"`, 4, `invalid escape "\\n"`},
		{"invalid escape unicode", `"\é"`, 1, `invalid escape "\\é"`},
		{"char after closing quote value", `a="x"y`, 5, `unexpected "y" after closing quote`},
		{"char after closing quote bare", `"x"=1`, 3, `unexpected "=" after closing quote`},
		{"leading quote then more", `obj~"b":[`, 7, `unexpected ":" after closing quote`},
		{"too long", strings.Repeat("a", maxQueryLen+1), maxQueryLen, "longer than 4096 bytes"},
		{"too many terms", strings.Repeat("a ", maxTerms) + "b", 2 * maxTerms, "too many terms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error", tc.query, q.String())
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error %T %v, want *SyntaxError", tc.query, err, err)
			}
			if se.Pos != tc.pos {
				t.Errorf("Pos = %d, want %d (%v)", se.Pos, tc.pos, err)
			}
			if !strings.Contains(se.Msg, tc.msgPart) {
				t.Errorf("Msg = %q, want it to contain %q", se.Msg, tc.msgPart)
			}
			want := fmt.Sprintf("query: position %d: %s", se.Pos, se.Msg)
			if err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

func TestParseLimitsOK(t *testing.T) {
	tests := []struct {
		name  string
		query string
	}{
		{"exactly max length", strings.Repeat("a", maxQueryLen)},
		{"exactly max terms", strings.TrimSpace(strings.Repeat("a ", maxTerms))},
		{"max terms with trailing space", strings.Repeat("a ", maxTerms) + "  "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse(tc.query); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestSyntaxErrorExample(t *testing.T) {
	_, err := Parse("a=1 b=2 =x")
	want := `query: position 8: empty field name before "="`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		name  string
		query string
		want  string
	}{
		{"empty", "", ""},
		{"whitespace", "  \t ", ""},
		{"single", "size>=1024", "size>=1024"},
		{"normalizes spaces", "  a=1 \t\n b~x  ", "a=1 b~x"},
		{"all operators", "a=1 b!=2 c>3 d>=4 e<5 f<=6 g~7 h", "a=1 b!=2 c>3 d>=4 e<5 f<=6 g~7 h"},
		{"unquotes when not needed", `a="b" "word"`, "a=b word"},
		{"keeps quotes for space", `cluster="cluster a"`, `cluster="cluster a"`},
		{"quotes bare word with space", `"foo bar"`, `"foo bar"`},
		{"unneeded escapes unquoted", `a="x\"y\\z"`, `a=x"y\z`},
		{"escapes quote and backslash", `a="\"x y\\z"`, `a="\"x y\\z"`},
		{"backslash unquoted stays", `a=x\y`, `a=x\y`},
		{"empty eq value quoted", "a= b!=", `a="" b!=""`},
		{"empty bare word", `""`, `""`},
		{"value with operators unquoted", "note=a=b x>=<~!", "note=a=b x>=<~!"},
		{"gt value starting with eq", `a>"=b"`, `a>"=b"`},
		{"lt value starting with eq", `a<"=b"`, `a<"=b"`},
		{"ge value starting with eq", `a>==b`, `a>==b`},
		{"eq value starting with eq", `a==b`, `a==b`},
		{"bare word with operator", `"a=b"`, `"a=b"`},
		{"bare word with bang", `"a!"`, `"a!"`},
		{"inner quotes literal", `a=b"c" x"y obj={"a":1}`, `a=b"c" x"y obj={"a":1}`},
		{"leading quote value escaped", `a="\"b"`, `a="\"b"`},
		{"leading quote bare escaped", `"\"b"`, `"\"b"`},
		{"value with tab", "a=\"x\ty\"", "a=\"x\ty\""},
		{"time", "created>=2023-01-01T00:00:00Z", "created>=2023-01-01T00:00:00Z"},
		{"unicode", "héllo a=wörld", "héllo a=wörld"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got := q.String()
			if got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			q2, err := Parse(got)
			if err != nil {
				t.Fatalf("Parse(%q): %v", got, err)
			}
			if got2 := q2.String(); got2 != got {
				t.Errorf("round trip: %q -> %q", got, got2)
			}
			if len(q2.terms) != len(q.terms) {
				t.Fatalf("round trip term count %d, want %d", len(q2.terms), len(q.terms))
			}
			for i := range q.terms {
				a, b := q.terms[i], q2.terms[i]
				if a.op != b.op || a.field != b.field || a.value != b.value {
					t.Errorf("term %d: %+v != %+v", i, b, a)
				}
			}
		})
	}
}

func TestIDPrefix(t *testing.T) {
	tests := []struct {
		name      string
		query     string
		wantPref  string
		wantExact bool
	}{
		{"none", "size>1", "", false},
		{"empty", "", "", false},
		{"eq", "id=abc", "abc", true},
		{"eq with others", "size>1 id=abc name~x", "abc", true},
		{"eq empty", "id=", "", true},
		{"ne", "id!=abc", "", false},
		{"sub", "id~abc", "", false},
		{"bare", "abc", "", false},
		{"lower only", "id>=abc", "", false},
		{"upper only", "id<abd", "", false},
		{"range", "id>=snap-2023 id<snap-2024", "snap-202", false},
		{"range tightest", "id>a id>=snap1 id<=snap2 id<z", "snap", false},
		{"range disjoint prefix", "id>=a id<b", "", false},
		{"eq wins over range", "id>=a id=abc id<b", "abc", true},
		{"field named like id", "ids=abc", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			p, exact := q.IDPrefix()
			if p != tc.wantPref || exact != tc.wantExact {
				t.Errorf("IDPrefix() = %q, %v, want %q, %v", p, exact, tc.wantPref, tc.wantExact)
			}
		})
	}
}

// TestIDPrefixSound checks that every id matching a range query has the
// derived prefix.
func TestIDPrefixSound(t *testing.T) {
	q, err := Parse("id>=snap-2023 id<=snap-2024z")
	if err != nil {
		t.Fatal(err)
	}
	p, _ := q.IDPrefix()
	ids := []string{"snap-2023", "snap-2023-01", "snap-2024", "snap-2024z", "snap-2024zz", "snap-2025", "snap-202", "snap-", "t", ""}
	for _, id := range ids {
		if q.Match(id, nil) && !strings.HasPrefix(id, p) {
			t.Errorf("id %q matches but lacks prefix %q", id, p)
		}
	}
}

func TestDecodeString(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"plain", `"abc"`},
		{"empty", `""`},
		{"escapes", `"\"\\\/\b\f\n\r\t"`},
		{"unicode escape", `"\u00e9\u20AC"`},
		{"surrogate pair", `"\ud83d\ude00"`},
		{"lone high surrogate", `"\ud83dx"`},
		{"lone low surrogate", `"\ude00"`},
		{"high then non-surrogate escape", `"\ud83d\u0041"`},
		{"two highs", `"\ud83d\ud83d\ude00"`},
		{"raw utf8", `"héllo €"`},
		{"invalid utf8", "\"a\xffb\xc3\""},
		{"control char", "\"a\x01b\""},
		{"trailing data", `"a"b`},
		{"two strings", `"a""b"`},
		{"unterminated", `"abc`},
		{"unterminated escape", `"abc\`},
		{"bad escape", `"\x"`},
		{"bad unicode", `"\u12G4"`},
		{"short unicode", `"\u12"`},
		{"only quote", `"`},
		{"escaped then invalid tail", `"\n"x`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkDecodeString(t, []byte(tc.in))
		})
	}
}

// checkDecodeString compares decodeString with encoding/json.
func checkDecodeString(t *testing.T, in []byte) {
	t.Helper()
	var want string
	wantErr := json.Unmarshal(in, &want)
	wantOK := wantErr == nil && len(in) > 0 && in[0] == '"' && in[len(in)-1] == '"'
	var buf [8]byte
	got, ok := decodeString(in, buf[:0])
	if len(in) == 0 || in[0] != '"' {
		return // decodeString is only called on input starting with '"'
	}
	if ok != wantOK {
		t.Fatalf("decodeString(%q) ok = %v, want %v (json: %v)", in, ok, wantOK, wantErr)
	}
	if ok && string(got) != want {
		t.Fatalf("decodeString(%q) = %q, want %q", in, got, want)
	}
}

func TestParseNumber(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"zero", "0", true},
		{"negative zero", "-0", true},
		{"int", "1024", true},
		{"frac", "3.25", true},
		{"exp", "1e10", true},
		{"exp sign", "1.5E-3", true},
		{"exp plus", "2e+3", true},
		{"leading zero", "01", false},
		{"plus", "+1", false},
		{"leading dot", ".5", false},
		{"trailing dot", "1.", false},
		{"empty exp", "1e", false},
		{"exp sign only", "1e+", false},
		{"minus only", "-", false},
		{"empty", "", false},
		{"hex", "0x10", false},
		{"inf", "Inf", false},
		{"space", " 1", false},
		{"huge exp", "1e999999999999999999999", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ok := parseNumber([]byte(tc.in))
			if ok != tc.ok {
				t.Errorf("parseNumber(%q) ok = %v, want %v", tc.in, ok, tc.ok)
			}
			if ok != json.Valid([]byte(tc.in)) && strings.TrimSpace(tc.in) == tc.in {
				t.Errorf("parseNumber(%q) disagrees with json.Valid", tc.in)
			}
		})
	}
}

func TestCompareDecimal(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want int
	}{
		{"equal", "1", "1", 0},
		{"equal spelled", "1024", "1.024e3", 0},
		{"equal trailing zeros", "10", "10.000", 0},
		{"equal exp", "100", "1e2", 0},
		{"equal small", "0.001", "1e-3", 0},
		{"zeros", "0", "-0.0e5", 0},
		{"less", "1", "2", -1},
		{"greater", "10", "9", 1},
		{"prefix smaller", "1.2", "1.25", -1},
		{"negative", "-1", "1", -1},
		{"negative magnitude", "-10", "-9", -1},
		{"negative vs zero", "-0.5", "0", -1},
		{"zero vs positive", "0", "0.5", -1},
		{"fraction vs int", "0.999", "1", -1},
		{"big ints", "9007199254740993", "9007199254740992", 1},
		{"very big", "123456789012345678901234567890", "123456789012345678901234567891", -1},
		{"exp vs digits", "1e30", "999999999999999999999999999999", 1},
		{"negative exps", "1e-10", "1e-9", -1},
		{"mixed", "12.5e1", "125", 0},
		{"leading frac zeros", "0.05", "0.5", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, ok1 := parseNumber([]byte(tc.a))
			b, ok2 := parseNumber([]byte(tc.b))
			if !ok1 || !ok2 {
				t.Fatal("parse failed")
			}
			if got := compareDecimal(&a, &b); got != tc.want {
				t.Errorf("compare(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
			if got := compareDecimal(&b, &a); got != -tc.want {
				t.Errorf("compare(%s, %s) = %d, want %d", tc.b, tc.a, got, -tc.want)
			}
		})
	}
}

func TestConcurrentMatch(t *testing.T) {
	q, err := Parse(`size>=1000 cluster~"a" created<2024-01-01T00:00:00Z`)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	for g := 0; g < 4; g++ {
		go func() {
			ok := true
			for i := 0; i < 200; i++ {
				ok = ok && q.Match(testID, testFields)
				_ = q.String()
			}
			done <- ok
		}()
	}
	for g := 0; g < 4; g++ {
		if !<-done {
			t.Error("concurrent Match returned false")
		}
	}
}

// benchFields is a ~150-byte metadata document.
func benchFields() map[string]json.RawMessage {
	doc := []byte(`{"size":1048576,"cluster":"cluster a","created":"2023-06-01T12:00:00Z","owner":"alice","tier":"gold","labels":["x","y"],"note":"nightly"}`)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil {
		panic(err)
	}
	return m
}

func BenchmarkMatch(b *testing.B) {
	fields := benchFields()
	q, err := Parse(`size>=1024 cluster="cluster a" created>=2023-01-01T00:00:00Z`)
	if err != nil {
		b.Fatal(err)
	}
	if !q.Match("snap1", fields) {
		b.Fatal("no match")
	}
	b.ReportAllocs()
	for b.Loop() {
		q.Match("snap1", fields)
	}
}
