package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestDocument_ParseCompactsValues(t *testing.T) {
	d, err := ParseDocument([]byte(" \n{ \"size\" : 1024 ,\n \"tags\": { \"a\" : [ 1, 2 ] }, \"s\": \"a b\" }\t"))
	if err != nil {
		t.Fatal(err)
	}
	want := Document{"size": json.RawMessage(`1024`), "tags": json.RawMessage(`{"a":[1,2]}`), "s": json.RawMessage(`"a b"`)}
	if len(d) != len(want) {
		t.Fatalf("got %d fields, want %d", len(d), len(want))
	}
	for f, v := range want {
		if string(d[f]) != string(v) {
			t.Fatalf("field %q = %s, want %s", f, d[f], v)
		}
	}
	if err := d.Validate(); err != nil {
		t.Fatalf("a parsed document does not validate: %v", err)
	}
	empty, err := ParseDocument([]byte(`{}`))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty object: %v, %v", empty, err)
	}
}

func TestDocument_ParseErrors(t *testing.T) {
	many := func(n int) string {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"f%d":%d`, i, i)
		}
		b.WriteString("}")
		return b.String()
	}
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"empty", ``, ErrInvalid},
		{"blank", " \n\t", ErrInvalid},
		{"null", `null`, ErrInvalid},
		{"array", `[{"a":1}]`, ErrInvalid},
		{"string", `"{}"`, ErrInvalid},
		{"number", `1024`, ErrInvalid},
		{"unterminated", `{"size":1024`, ErrInvalid},
		{"missing-value", `{"size":}`, ErrInvalid},
		{"trailing-comma", `{"size":1,}`, ErrInvalid},
		{"single-quotes", `{'size':1}`, ErrInvalid},
		{"trailing-data", `{"size":1} {"b":2}`, ErrInvalid},
		{"trailing-garbage", `{"size":1}x`, ErrInvalid},
		{"empty-field-name", `{"":1}`, ErrInvalid},
		{"control-in-field-name", `{"a\u0001b":1}`, ErrInvalid},
		{"newline-in-field-name", `{"a\nb":1}`, ErrInvalid},
		{"delete-in-field-name", `{"a\u007fb":1}`, ErrInvalid},
		{"long-field-name", `{"` + strings.Repeat("f", MaxFieldNameLen+1) + `":1}`, ErrInvalid},
		{"too-many-fields", many(MaxFields + 1), ErrTooLarge},
		{"too-large", `{"big":"` + strings.Repeat("x", MaxDocumentBytes) + `"}`, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDocument([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("ParseDocument = %v, %v; want %v", d, err, tc.want)
			}
			if d != nil {
				t.Fatalf("failed parse returned a document %v", d)
			}
		})
	}
	// The limits themselves are allowed.
	for name, in := range map[string]string{
		"max-fields":          many(MaxFields),
		"max-field-name":      `{"` + strings.Repeat("f", MaxFieldNameLen) + `":1}`,
		"unicode-field-name":  `{"größe":1,"サイズ":2}`,
		"punctuated-name":     `{"a.b/c d-e:f":1}`,
		"large-but-in-limits": `{"big":"` + strings.Repeat("x", MaxDocumentBytes-16) + `"}`,
	} {
		if _, err := ParseDocument([]byte(in)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

func TestDocument_ValidateRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    Document
		want error
	}{
		{"empty-value", Document{"a": nil}, ErrInvalid},
		{"invalid-json", Document{"a": json.RawMessage(`{`)}, ErrInvalid},
		{"two-values", Document{"a": json.RawMessage(`1 2`)}, ErrInvalid},
		{"bad-name", Document{"a\x00": json.RawMessage(`1`)}, ErrInvalid},
		{"bad-utf8-name", Document{"a\xff": json.RawMessage(`1`)}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.d.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
	d := Document{"a": json.RawMessage(" [ 1 ] ")}
	if err := d.Validate(); err != nil {
		t.Fatalf("non-compact but valid value: %v", err)
	}
	if string(d["a"]) != " [ 1 ] " {
		t.Fatalf("Validate changed the document to %s", d["a"])
	}
}

// TestDocument_MergePatchRFC7396 runs the examples of RFC 7396, appendix A.
func TestDocument_MergePatchRFC7396(t *testing.T) {
	for _, tc := range []struct{ target, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`["a","b"]`, `["c","d"]`, `["c","d"]`},
		{`{"a":"b"}`, `["c"]`, `["c"]`},
		{`{"a":"foo"}`, `null`, `null`},
		{`{"a":"foo"}`, `"bar"`, `"bar"`},
		{`{"e":null}`, `{"a":1}`, `{"e":null,"a":1}`},
		{`[1,2]`, `{"a":"b","c":null}`, `{"a":"b"}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		// Beyond the appendix: an absent target, as for a new field.
		{``, `{"a":1,"b":null}`, `{"a":1}`},
		{``, `null`, `null`},
		{``, `3`, `3`},
	} {
		t.Run(tc.target+"+"+tc.patch, func(t *testing.T) {
			var target json.RawMessage
			if tc.target != "" {
				target = json.RawMessage(tc.target)
			}
			got, err := mergePatch(target, json.RawMessage(tc.patch))
			if err != nil {
				t.Fatal(err)
			}
			if got == nil { // mergePatch's "remove the value"
				got = json.RawMessage("null")
			}
			if !jsonEqual(t, got, []byte(tc.want)) {
				t.Fatalf("mergePatch(%s, %s) = %s, want %s", tc.target, tc.patch, got, tc.want)
			}
			var c bytes.Buffer
			if err := json.Compact(&c, got); err != nil || !bytes.Equal(c.Bytes(), got) {
				t.Fatalf("result %s is not compact JSON", got)
			}
		})
	}
}

// jsonEqual compares two JSON texts as values.
func jsonEqual(tb testing.TB, a, b []byte) bool {
	tb.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		tb.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		tb.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
