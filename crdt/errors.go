package crdt

import "errors"

// Sentinel errors. Every error this package returns wraps one of them, so
// callers branch with errors.Is.
var (
	// ErrInvalid marks malformed input: a bad id, field, value or encoding.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge marks input over one of the hard size limits.
	ErrTooLarge = errors.New("too large")
	// ErrNotFound marks an operation on an item that is not present.
	ErrNotFound = errors.New("not found")
	// ErrVersion marks an encoding of an unknown format version.
	ErrVersion = errors.New("unsupported format version")
)
