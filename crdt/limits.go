package crdt

import (
	"fmt"
	"unicode/utf8"
)

// Hard limits. Decoders and mutators reject anything larger with ErrTooLarge
// before doing work proportional to it.
const (
	// MaxIDLen is the longest item id, in bytes.
	MaxIDLen = 256
	// MaxCollectionLen is the longest collection name, in bytes.
	MaxCollectionLen = 64
	// MaxFieldNameLen is the longest metadata field name, in bytes.
	MaxFieldNameLen = 256
	// MaxFields is the most fields one metadata document may have.
	MaxFields = 1024
	// MaxDocumentBytes bounds the JSON size of one metadata document.
	MaxDocumentBytes = 1 << 20
	// MaxDeltaBytes bounds one encoded delta.
	MaxDeltaBytes = 2 << 20
	// MaxItemBytes bounds one encoded item record. An item may hold
	// concurrent writes of several replicas, so this is larger than a
	// delta.
	MaxItemBytes = 16 << 20
	// MaxContextBytes bounds one encoded causal context (EncodeContext's
	// form, which full-state transfers carry whole). It is no resource
	// limit: a decoder allocates in proportion to the bytes it is given,
	// and callers bound those (node.Config.MaxReplicas, MaxStateBytes).
	MaxContextBytes = 1 << 30
	// MaxContextReplicas is the most replicas one encoded context is sure
	// to hold within MaxContextBytes, each with the longest replica ID:
	// over 14 million. Stores keep contexts one entry per replica
	// (Context.AppendEntry) and have no limit of their own.
	MaxContextReplicas = MaxContextBytes / maxContextEntryBytes
	// MaxDeltaDots bounds the dots one delta may name (its context plus its
	// entries).
	MaxDeltaDots = 1 << 16
)

// maxContextEntryBytes is the most one replica's vector entry takes in
// EncodeContext's form: the text head and bytes of its ID, the counter.
const maxContextEntryBytes = 2 + MaxReplicaIDLen + 9

// ValidateID reports whether id is a valid item id: 1–256 bytes of
// [A-Za-z0-9._:-].
func ValidateID(id string) error {
	if len(id) == 0 || len(id) > MaxIDLen {
		return fmt.Errorf("%w: id must be 1-%d bytes, got %d", ErrInvalid, MaxIDLen, len(id))
	}
	if i := badIDByte(id); i >= 0 {
		return fmt.Errorf("%w: id %q: byte %d is not one of [A-Za-z0-9._:-]", ErrInvalid, id, i)
	}
	return nil
}

// ValidateCollection reports whether name is a valid collection name: 1–64
// bytes of [A-Za-z0-9._:-].
func ValidateCollection(name string) error {
	if len(name) == 0 || len(name) > MaxCollectionLen {
		return fmt.Errorf("%w: collection name must be 1-%d bytes, got %d", ErrInvalid, MaxCollectionLen, len(name))
	}
	if i := badIDByte(name); i >= 0 {
		return fmt.Errorf("%w: collection %q: byte %d is not one of [A-Za-z0-9._:-]", ErrInvalid, name, i)
	}
	return nil
}

// ValidateFieldName reports whether f is a valid metadata field name: 1–256
// bytes of UTF-8 without control characters.
func ValidateFieldName(f string) error {
	if printableASCII(f) && len(f) > 0 && len(f) <= MaxFieldNameLen {
		return nil // the common case, without decoding runes
	}
	if len(f) == 0 || len(f) > MaxFieldNameLen {
		return fmt.Errorf("%w: field name must be 1-%d bytes, got %d", ErrInvalid, MaxFieldNameLen, len(f))
	}
	if !utf8.ValidString(f) {
		return fmt.Errorf("%w: field name %q is not UTF-8", ErrInvalid, f)
	}
	for _, r := range f {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: field name %q contains a control character", ErrInvalid, f)
		}
	}
	return nil
}

// printableASCII reports whether every byte of f is in 0x20–0x7e.
func printableASCII[T string | []byte](f T) bool {
	for i := 0; i < len(f); i++ {
		if c := f[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
