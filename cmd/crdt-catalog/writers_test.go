package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newID(t *testing.T) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestParseWritersFile(t *testing.T) {
	x, y := newID(t), newID(t)
	tests := []struct {
		name    string
		text    string
		want    []peer.ID
		wantErr string // a substring of the error; "" for none
	}{
		{name: "empty", text: ""},
		{name: "comments and blank lines", text: "# writers\n\n   \n# none yet\n"},
		{name: "ids", text: x.String() + "\n" + y.String(), want: []peer.ID{x, y}},
		{name: "spaces, trailing comments, CRLF", text: "  " + x.String() + "  # node a\r\n\t" + y.String() + "#b\r\n", want: []peer.ID{x, y}},
		{name: "bad id names its line", text: "# writers\n" + x.String() + "\n\nQmNotAPeer\n", wantErr: `writers.txt:4: "QmNotAPeer" is not a peer ID`},
		{name: "two ids on a line", text: x.String() + " " + y.String() + "\n", wantErr: "writers.txt:1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWritersFile(strings.NewReader(tt.text), "writers.txt")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseWriterList(t *testing.T) {
	x := newID(t)
	if got, err := parseWriterList([]string{x.String()}); err != nil || !slices.Equal(got, []peer.ID{x}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := parseWriterList([]string{x.String(), "nope"}); err == nil || !strings.Contains(err.Error(), `-writers: "nope"`) {
		t.Fatalf("err = %v", err)
	}
}

// TestParseFlags_WritersFromEnvironment: -writers and -writers-file follow
// the CRDT_CATALOG_<FLAG> pattern, and the command line replaces the
// environment's list.
func TestParseFlags_WritersFromEnvironment(t *testing.T) {
	x, y, z := newID(t), newID(t), newID(t)
	env := map[string]string{
		"CRDT_CATALOG_WRITERS":      x.String() + "," + y.String(),
		"CRDT_CATALOG_WRITERS_FILE": "/etc/writers",
	}
	o, err := parseFlags(nil, io.Discard, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.writers.vals, []string{x.String(), y.String()}) || o.writersFile != "/etc/writers" {
		t.Fatalf("from the environment: %v, %q", o.writers.vals, o.writersFile)
	}
	o, err = parseFlags([]string{"-writers", z.String()}, io.Discard, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.writers.vals, []string{z.String()}) {
		t.Fatalf("the command line did not replace the environment's list: %v", o.writers.vals)
	}
}

// TestServe_BadWriterFailsAtStart: a bad peer ID in -writers-file stops
// the node before it opens anything, with an error naming the line.
func TestServe_BadWriterFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "writers")
	if err := os.WriteFile(file, []byte(newID(t).String()+"\nbad-id\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-data", filepath.Join(dir, "data"), "-http", "127.0.0.1:0", "-listen", "/ip4/127.0.0.1/tcp/0", "-dht=false", "-writers-file", file}
	err := serve(context.Background(), args, io.Discard, io.Discard, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), file+`:2: "bad-id" is not a peer ID`) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Fatal("the data directory was created")
	}
}

// recorder stands in for Peer.SetWriters.
type recorder struct {
	mu   sync.Mutex
	sets [][]peer.ID
}

func (r *recorder) set(ids []peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets = append(r.sets, ids)
}

func (r *recorder) last() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.sets) == 0 {
		return nil
	}
	return r.sets[len(r.sets)-1]
}

func (r *recorder) count() int { // the number of lists set
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sets)
}

// waitUntil polls cond until it holds, failing t after 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWritersList_Reload: the list is the union of -writers and the file;
// it is reloaded on SIGHUP and when the file changes; a reload that fails
// (a bad line, an emptied file) keeps the list in force.
func TestWritersList_Reload(t *testing.T) {
	x, y, z := newID(t), newID(t), newID(t)
	file := filepath.Join(t.TempDir(), "writers")
	write := func(text string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		// Distinct modification times, whatever the file system's
		// resolution.
		if err := os.Chtimes(file, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Add(-time.Hour)
	write(y.String()+"\n"+x.String()+"\n", base)
	rec := &recorder{}
	w := &writersList{fixed: []peer.ID{x}, file: file, set: rec.set, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := w.load(); err != nil {
		t.Fatal(err)
	}
	want := []peer.ID{x, y}
	slices.Sort(want)
	if !slices.Equal(rec.last(), want) {
		t.Fatalf("union = %v, want %v", rec.last(), want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() { defer close(done); w.watch(ctx, hup, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	// A changed file is picked up by the poll.
	write(z.String()+"\n", base.Add(time.Second))
	want = []peer.ID{x, z}
	slices.Sort(want)
	waitUntil(t, "the changed file loaded", func() bool { return slices.Equal(rec.last(), want) })

	// A bad line or an emptied file keeps the list.
	n := rec.count()
	write(z.String()+"\nnot-an-id\n", base.Add(2*time.Second))
	hup <- syscall.SIGHUP
	write("# nobody\n", base.Add(3*time.Second))
	hup <- syscall.SIGHUP
	os.Remove(file)
	hup <- syscall.SIGHUP
	// SIGHUP after the file is back: loaded.
	write(y.String()+"\n", base.Add(4*time.Second))
	hup <- syscall.SIGHUP
	want = []peer.ID{x, y}
	slices.Sort(want)
	waitUntil(t, "the restored file loaded", func() bool { return slices.Equal(rec.last(), want) })
	// The poll may load the restored file too, but no failed reload set
	// a list.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ids := range rec.sets[n:] {
		if !slices.Equal(ids, want) {
			t.Fatalf("a failed reload set %v", ids)
		}
	}
}
