package httpapi

import (
	"context"
	"io/fs"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
	ds "github.com/ipfs/go-datastore"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// faultStore wraps a store; while a fault is set, every batch commit fails
// with it before writing anything.
type faultStore struct {
	ds.Batching
	fault atomic.Pointer[error]
}

func (s *faultStore) set(err error) {
	if err == nil {
		s.fault.Store(nil)
		return
	}
	s.fault.Store(&err)
}

func (s *faultStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return faultBatch{b, s}, nil
}

type faultBatch struct {
	ds.Batch
	s *faultStore
}

func (b faultBatch) Commit(ctx context.Context) error {
	if err := b.s.fault.Load(); err != nil {
		return *err
	}
	return b.Batch.Commit(ctx)
}

// TestAPI_StoreFailure checks the answers while the store refuses writes
// (507 for a full disk, 503 otherwise, /readyz 503 with the reason) and
// after it takes them again.
func TestAPI_StoreFailure(t *testing.T) {
	inner, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	fst := &faultStore{Batching: inner}
	cfg := node.DefaultConfig()
	cfg.Logger = discard()
	cfg.RetryInterval = 5 * time.Millisecond
	n, err := node.Open(context.Background(), fst, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	s := newServer(t, n, nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/kept", ctJSON, `{}`)

	for _, tc := range []struct {
		name  string
		fault error
		want  int
		msg   string
	}{
		{"full disk", &fs.PathError{Op: "write", Path: "000001.log", Err: syscall.ENOSPC}, 507, "no space left on device"},
		{"broken disk", &fs.PathError{Op: "write", Path: "000001.log", Err: syscall.EIO}, 503, "input/output error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fst.set(tc.fault)
			runCases(t, s, []apiCase{
				{name: "add", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, nil}, want: tc.want, substr: tc.msg},
				{name: "add again", req: request{"POST", "/snapshots/add/y", ctJSON, `{}`, nil}, want: tc.want, substr: tc.msg},
				{name: "delta", req: request{"POST", "/crdt/delta/clear", "", "", nil}, want: tc.want},
				{name: "readyz", req: request{"GET", "/readyz", "", "", nil}, want: 503, substr: tc.msg},
				{name: "healthz", req: request{"GET", "/healthz", "", "", nil}, want: 200},
				{name: "read", req: request{"GET", "/snapshots/kept", "", "", nil}, want: 200},
				{name: "lost write", req: request{"GET", "/snapshots/x", "", "", nil}, want: 404},
				{name: "status", req: request{"GET", "/status", "", "", nil}, want: 200, check: func(t *testing.T, res response) {
					m := res.obj(t)
					if m["writable"] != false || !strings.Contains(m["write_error"].(string), tc.msg) {
						t.Errorf("status while failing: writable %v, write_error %v", m["writable"], m["write_error"])
					}
				}},
			})
			res := mustDo(t, s, 200, "GET", "/metrics", "", "")
			if !strings.Contains(string(res.body), "catalog_store_writable 0") {
				t.Error("/metrics lacks catalog_store_writable 0")
			}
			fst.set(nil)
			eventually(t, "/readyz answers 200", func() bool { return do(t, s, "GET", "/readyz", "", "").code == 200 })
			mustDo(t, s, 201, "POST", "/snapshots/add/x", ctJSON, `{}`)
			mustDo(t, s, 200, "DELETE", "/snapshots/remove/x", "", "")
			res = mustDo(t, s, 200, "GET", "/metrics", "", "")
			if !strings.Contains(string(res.body), "catalog_store_writable 1") || strings.Contains(string(res.body), "catalog_commit_failures_total 0") {
				t.Errorf("/metrics after recovery:\n%s", res.body)
			}
		})
	}
	if err := n.Writable(); err != nil {
		t.Fatal(err)
	}
}
