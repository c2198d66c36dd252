package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// writersPoll is how often the writers file's modification time and size
// are checked.
const writersPoll = 10 * time.Second

// parseWriterList parses the peer IDs given by -writers.
func parseWriterList(vals []string) ([]peer.ID, error) {
	var ids []peer.ID
	for _, v := range vals {
		id, err := peer.Decode(v)
		if err != nil {
			return nil, fmt.Errorf("-writers: %q is not a peer ID: %w", v, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// parseWritersFile reads a writers file: one peer ID per line; '#' starts
// a comment, to the end of the line; blank lines are skipped. An error
// names the file and the line.
func parseWritersFile(r io.Reader, name string) ([]peer.ID, error) {
	var ids []peer.ID
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s, _, _ := strings.Cut(sc.Text(), "#")
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		id, err := peer.Decode(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q is not a peer ID: %w", name, line, s, err)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return ids, nil
}

// fileStamp is what the poll compares to see that a file changed.
type fileStamp struct {
	mtime, size int64
}

func stampOf(fi os.FileInfo) fileStamp { return fileStamp{fi.ModTime().UnixNano(), fi.Size()} }

// writersList is the writers list of -writers and -writers-file: their
// union, handed to set at start and whenever the file is reloaded.
type writersList struct {
	fixed []peer.ID // from -writers
	file  string    // -writers-file, or ""
	set   func([]peer.ID)
	log   *slog.Logger
	stamp fileStamp // of the file as last read, whether that worked or not
}

// errEmptyWritersFile keeps a file emptied by mistake (or caught half
// written) from opening the catalog to every peer.
var errEmptyWritersFile = errors.New("lists no peer ID: to let every peer write, drop -writers-file")

// read returns the union of the two lists, deduplicated and sorted.
func (w *writersList) read() ([]peer.ID, error) {
	ids := slices.Clone(w.fixed)
	if w.file != "" {
		f, err := os.Open(w.file)
		if err != nil {
			return nil, fmt.Errorf("-writers-file: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil {
			w.stamp = stampOf(fi)
		}
		fromFile, err := parseWritersFile(f, w.file)
		if err != nil {
			return nil, fmt.Errorf("-writers-file: %w", err)
		}
		if len(fromFile) == 0 {
			return nil, fmt.Errorf("-writers-file %s %w", w.file, errEmptyWritersFile)
		}
		ids = append(ids, fromFile...)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// load reads the lists and hands them to set; on error it changes
// nothing.
func (w *writersList) load() error {
	ids, err := w.read()
	if err != nil {
		return err
	}
	w.set(ids)
	w.logList(ids)
	return nil
}

// logList logs the size of the list in force.
func (w *writersList) logList(ids []peer.ID) {
	if len(ids) == 0 {
		w.log.Info("writers: no list, every peer that can connect may write")
	} else {
		w.log.Info("writers: only listed peers' deltas are accepted from the network", "writers", len(ids), "file", w.file)
	}
}

// reload loads the lists again; a failure keeps the current list and is
// logged.
func (w *writersList) reload(why string) {
	if err := w.load(); err != nil {
		w.log.Error("writers: reload failed; keeping the current list", "reason", why, "err", err)
	}
}

// watch reloads the file on each value from hup, and when its
// modification time or size changes (checked every poll), until ctx ends.
func (w *writersList) watch(ctx context.Context, hup <-chan os.Signal, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			w.reload("SIGHUP")
		case <-t.C:
			fi, err := os.Stat(w.file)
			if err == nil && stampOf(fi) != w.stamp {
				w.reload("file changed")
			} else if err != nil && w.stamp != (fileStamp{}) {
				w.stamp = fileStamp{} // log a vanished file once
				w.log.Error("writers: keeping the current list", "err", err)
			}
		}
	}
}
