// Package query implements the catalog's query language: a small parser and
// an evaluator that decides whether a catalog item (an id plus a map of
// metadata fields whose values are JSON) matches a query.
//
// The package is pure (no I/O, no global state) and uses only the standard
// library. A parsed *Query is immutable and safe for concurrent use.
//
// # Syntax
//
// A query is a sequence of terms separated by runs of ASCII whitespace
// (space, tab, and also newline, carriage return, vertical tab and form
// feed). Every term must match (logical AND). The empty query, or one made
// only of whitespace, matches every item.
//
// A term is one of
//
//	field=value    equal
//	field!=value   not equal (also true when the field is missing)
//	field>value    greater than
//	field>=value   greater than or equal
//	field<value    less than
//	field<=value   less than or equal
//	field~value    contains the substring value
//	word           bare word: equals the id or the value of any field
//
// The operator is found by scanning the term for the first of the
// characters ! = < > ~; at that position the longest operator wins, so
// "a>=1" is a >= comparison with value "1" and "a==b" is an equality with
// value "=b". A "!" that is not followed by "=" is an error. The field name
// is everything before the operator; it must be non-empty and consist only
// of the characters A-Z a-z 0-9 . _ : -. The value is everything after the
// operator up to the next whitespace and may contain further operator
// characters ("created>=2023-01-01T00:00:00Z", "note=a=b"). An empty value
// is allowed only for = and != (it means the empty string).
//
// A value, or a whole bare word, may be written in double quotes so that it
// can contain whitespace or quotes: cluster="cluster a", "foo bar". Inside
// quotes the only escapes are \" and \\; any other backslash sequence is an
// error, as is an unterminated quote or anything other than whitespace
// directly after the closing quote. A double quote only starts a quoted
// string at the very beginning of a value or word; elsewhere it is an
// ordinary character, so obj={"a":1} compares with the JSON text {"a":1}.
//
// The special field name "id" refers to the item id rather than to a
// metadata field; id comparisons are always plain byte-wise string
// comparisons. (A metadata field literally named "id" can therefore only be
// matched by a bare word.)
//
// # Limits
//
// A query may be at most 4096 bytes long and contain at most 64 terms.
// Exceeding either limit is reported as a *SyntaxError: a query that is too
// long has Pos 4096, and a query with too many terms has Pos at the start
// of the 65th term.
//
// # Evaluation
//
// Field values are JSON values (json.RawMessage). Leading and trailing JSON
// whitespace is ignored, and an empty (nil) value is treated as JSON null.
// A value that is not valid JSON is treated as a non-string value whose
// JSON text is its raw bytes. The "JSON text" of an object or array is its
// compact form.
//
// Numbers are compared exactly as decimal values, without rounding through
// float64, so very large integers compare correctly and 1024, 1024.0 and
// 1.024e3 are all equal. A query value counts as a number only if it follows
// the JSON number grammar (so "+1", ".5" and "0x10" are not numbers).
// Exponents are saturated at ±2^40.
//
// = and != : a string field is compared with its decoded string; a number
// field is compared numerically when the query value is a number and
// otherwise by its JSON text; booleans, null, objects, arrays and invalid
// JSON are compared by their JSON text ("true", "null", `{"a":1}`). A
// missing field never matches = and always matches !=.
//
// <, <=, >, >= : if both the field and the query value are numbers they are
// compared numerically; otherwise, if the field is a string and both it and
// the query value parse as RFC 3339 times (time.RFC3339Nano), they are
// compared chronologically; otherwise, if the field is a string, it is
// compared byte-wise with the query value. A number field with a non-number
// query value, a boolean, null, object, array or invalid value, and a
// missing field never match an ordering comparison.
//
// ~ : case-sensitive substring match on the decoded string, or on the JSON
// text of any other value. A missing field never matches.
//
// A bare word matches when it equals the item id or equals the value of any
// field, where string values are compared by their decoded string and other
// values by their JSON text (so the bare word 1024 matches the number 1024
// but not 1.024e3).
package query
