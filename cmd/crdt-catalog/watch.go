package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

func watchFlags(fs *flag.FlagSet, o *clientOpts) {
	readFlags(fs, o)
	fs.BoolVar(&o.initial, "initial", false, "first print the items that match now, then the changes after them")
	fs.Var(&o.since, "since", "print the changes after this change sequence number (the seq of the last change seen); default: from now")
	fs.BoolVar(&o.resync, "resync", false, "when the node no longer holds the changes to resume from, start again with --initial instead of exiting 7")
	fs.IntVar(&o.changes, "n", 0, "exit after printing this many changes (0: run until interrupted)")
	fs.DurationVar(&o.retryFor, "retry-for", 5*time.Minute, "after a dropped connection, keep trying to reconnect this long (then exit 5)")
	fs.DurationVar(&o.idle, "idle-timeout", time.Minute, "reconnect when the stream is silent this long (the node sends heartbeats every 15s by default)")
}

// watchMsg is one message of GET /catalog/watch (NDJSON).
type watchMsg struct {
	Type   string    `json:"type"`
	Seq    uint64    `json:"seq"`
	Kind   string    `json:"kind"`
	ID     string    `json:"id"`
	Item   *itemJSON `json:"item"`
	Origin *struct {
		Via     string `json:"via"`
		Replica string `json:"replica"`
		Counter uint64 `json:"counter"`
	} `json:"origin"`
	Error  string `json:"error"`
	Resume string `json:"resume"`
}

// watchState is where a watch stands across reconnections.
type watchState struct {
	initial  bool   // the next connection asks for the snapshot
	since    uint64 // else it resumes after this change
	haveSeq  bool   // since is known (from --since or the stream)
	printed  int    // changes printed
	header   bool   // the table header is printed
	lastSeen time.Time
}

// runWatch serves watch: it streams GET /catalog/watch as NDJSON and
// prints it, and reconnects by itself after a dropped connection, from
// the last change seen.
func runWatch(ctx context.Context, c *client, o *clientOpts, args []string) error {
	q, err := readQuery(o)
	if err != nil {
		return err
	}
	if err := crdt.ValidateCollection(args[0]); err != nil {
		return usageErr("collection: %w", err)
	}
	q.Set("type", args[0])
	if len(args) > 1 {
		q.Set("q", args[1])
	}
	if o.initial && o.since.set {
		return usageErr("--initial and --since exclude each other: --initial starts from the items that match now, --since resumes")
	}
	if o.changes < 0 || o.retryFor < 0 || o.idle <= 0 {
		return usageErr("-n and --retry-for must not be negative, --idle-timeout must be positive")
	}
	st := &watchState{initial: o.initial, since: o.since.v, haveSeq: o.since.set}
	var down time.Time // when the connection was lost; zero while up
	backoff := 100 * time.Millisecond
	for {
		err := c.watchOnce(ctx, o, q, st)
		switch {
		case err == nil:
			return nil // -n reached
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errResync):
			if !o.resync {
				return &statusError{exitResync, fmt.Errorf("%w; start again with --initial (or pass --resync to do so by itself)", err)}
			}
			if !st.initial {
				fmt.Fprintf(c.stderr, "%v; starting again from the items that match now (--resync)\n", err)
				st.initial, st.haveSeq = true, false
				continue
			}
			// Told to start again while starting from the items: the
			// node failed its snapshot. Wait as after any failure, rather
			// than ask for the whole collection again at once.
		}
		if se := (*statusError)(nil); errors.As(err, &se) && se.code != exitUnreachable {
			return err // a refusal that a retry would not change
		}
		if !st.lastSeen.IsZero() {
			down, backoff, st.lastSeen = time.Now(), 100*time.Millisecond, time.Time{}
		} else if down.IsZero() {
			return err // never connected
		}
		if time.Since(down) > o.retryFor {
			return &statusError{exitUnreachable, fmt.Errorf("no connection for %s (--retry-for): %w", o.retryFor, err)}
		}
		from := "the items that match now"
		if !st.initial {
			from = "after change " + strconv.FormatUint(st.since, 10)
		}
		fmt.Fprintf(c.stderr, "%v; reconnecting in %s, from %s\n", err, backoff, from)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// seqFlag is a change sequence number flag that knows whether it was given.
type seqFlag struct {
	v   uint64
	set bool
}

func (f *seqFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.FormatUint(f.v, 10)
}

func (f *seqFlag) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a change sequence number")
	}
	f.v, f.set = v, true
	return nil
}

// errResync: the node answered that the changes to resume from are gone.
var errResync = errors.New("the node no longer holds the changes to resume from")

// watchOnce makes one connection and prints what it streams; nil once
// -n changes are printed.
func (c *client) watchOnce(ctx context.Context, o *clientOpts, q map[string][]string, st *watchState) error {
	params := make(map[string][]string, len(q)+2)
	for k, v := range q {
		params[k] = v
	}
	switch {
	case st.initial:
		params["initial"] = []string{"true"}
	case st.haveSeq:
		params["since"] = []string{strconv.FormatUint(st.since, 10)}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/catalog/watch", query: params,
		header: http.Header{"Accept": {"application/x-ndjson"}}})
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusGone {
			return fmt.Errorf("%w: %s", errResync, ae.msg)
		}
		return err
	}
	defer resp.Body.Close()
	st.lastSeen = time.Now()
	idle := time.AfterFunc(o.idle, func() { cancel(fmt.Errorf("stream silent for %s (--idle-timeout)", o.idle)) })
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(r, crdt.MaxItemBytes*4)
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
				err = cause
			}
			return &statusError{exitUnreachable, fmt.Errorf("stream cut: %w", err)}
		}
		idle.Reset(o.idle)
		st.lastSeen = time.Now()
		var m watchMsg
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("the node sent something that is not a watch message: %w", err)
		}
		if err := c.printWatch(o, st, line, &m); err != nil {
			return err
		}
		switch m.Type {
		case "initial_end":
			st.initial, st.since, st.haveSeq = false, m.Seq, true
		case "change", "heartbeat":
			st.since, st.haveSeq = m.Seq, true
		case "error":
			if m.Resume == "initial=true" {
				return fmt.Errorf("%w: %s", errResync, m.Error)
			}
			if s, ok := strings.CutPrefix(m.Resume, "since="); ok {
				if n, err := strconv.ParseUint(s, 10, 64); err == nil {
					st.since, st.haveSeq, st.initial = n, true, false
				}
			}
			return &statusError{exitUnreachable, fmt.Errorf("the node ended the stream: %s", m.Error)}
		}
		if m.Type == "change" {
			st.printed++
			if o.changes > 0 && st.printed >= o.changes {
				return nil
			}
		}
	}
}

// readLine reads one line of at most limit bytes, without its newline.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		part, err := r.ReadSlice('\n')
		line = append(line, part...)
		if len(line) > limit {
			return nil, fmt.Errorf("a message longer than %d bytes", limit)
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(line, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// printWatch prints one message: as JSON (json and ndjson: one message per
// line, as the node sent it), or as a table row; the end of the initial
// items goes to stderr, heartbeats nowhere.
func (c *client) printWatch(o *clientOpts, st *watchState, line []byte, m *watchMsg) error {
	if m.Type == "heartbeat" {
		return nil
	}
	if m.Type == "initial_end" {
		fmt.Fprintf(c.stderr, "initial items complete at change %d\n", m.Seq)
	}
	if c.output != "table" {
		if m.Type == "error" {
			return nil // reported on stderr by the caller
		}
		_, err := fmt.Fprintf(c.stdout, "%s\n", line)
		return err
	}
	var seq, kind, id, md, origin string
	switch m.Type {
	case "item":
		if m.Item == nil {
			return errors.New("the node sent an initial item without its item")
		}
		seq, kind, id, md, origin = "-", "initial", m.Item.ID, compact(m.Item.Metadata), "-"
	case "change":
		seq, kind, id, md = strconv.FormatUint(m.Seq, 10), m.Kind, m.ID, "-"
		if m.Item != nil {
			md = compact(m.Item.Metadata)
		}
		origin = "-"
		if m.Origin != nil {
			origin = m.Origin.Via
			if m.Origin.Replica != "" {
				origin += " " + m.Origin.Replica + ":" + strconv.FormatUint(m.Origin.Counter, 10)
			}
		}
	default:
		return nil
	}
	if !st.header {
		st.header = true
		fmt.Fprintf(c.stdout, "%-8s %-8s %-20s %-40s %s\n", "SEQ", "KIND", "ID", "METADATA", "ORIGIN")
	}
	_, err := fmt.Fprintf(c.stdout, "%-8s %-8s %-20s %-40s %s\n", seq, kind, id, md, origin)
	return err
}
