package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/httpapi"
	"github.com/crdt-catalog/crdt-catalog/p2p"
)

// itemJSON is an item as the API shows it, its metadata kept as sent.
type itemJSON struct {
	ID         string          `json:"id"`
	Collection string          `json:"collection"`
	Metadata   json.RawMessage `json:"metadata"`
	Conflicts  json.RawMessage `json:"conflicts,omitempty"`
}

// runWrite serves add, set and patch: the metadata comes from the third
// argument, -f FILE, or stdin ("-").
func runWrite(ctx context.Context, c *client, o *clientOpts, args []string, cmd string) error {
	route, method, ctype := "add/", http.MethodPost, "application/json"
	switch cmd {
	case "set":
		route, method = "metadata/", http.MethodPut
	case "patch":
		route, method, ctype = "metadata/", http.MethodPatch, "application/merge-patch+json"
	}
	path, err := itemPath(args[0], args[1], route)
	if err != nil {
		return err
	}
	doc, err := c.metadata(o, args[2:], cmd != "add")
	if err != nil {
		return err
	}
	h := http.Header{"Content-Type": {ctype}}
	if o.create {
		h.Set("If-None-Match", "*")
	}
	b, hdr, err := c.getJSON(ctx, request{method: method, path: path, header: h, body: bytes.NewReader(doc), size: int64(len(doc))})
	if err != nil {
		return err
	}
	return c.printWritten(b, hdr, func() error {
		var it itemJSON
		if err := json.Unmarshal(b, &it); err != nil {
			return fmt.Errorf("the node's answer is not an item: %w", err)
		}
		return c.printTable([]itemJSON{it})
	})
}

// metadata returns the metadata document of a write, checked as the node
// checks it: from the argument (args[0]), the file of -f, or stdin when
// either is "-". Without any, an add sends {} and set and patch fail.
func (c *client) metadata(o *clientOpts, args []string, required bool) ([]byte, error) {
	var src string
	switch {
	case len(args) > 0 && o.file != "":
		return nil, usageErr("metadata given twice: as an argument and with -f")
	case o.file != "":
		src = o.file
	case len(args) > 0 && args[0] == "-":
		src = "-"
	case len(args) > 0:
		return checkDocument([]byte(args[0]), "the argument")
	case required:
		return nil, usageErr("no metadata: give a JSON object as an argument, -f FILE, or - for stdin")
	default:
		return []byte("{}"), nil
	}
	r, name := c.stdin, "stdin"
	if src != "-" {
		f, err := os.Open(src)
		if err != nil {
			return nil, usageErr("-f: %w", err)
		}
		defer f.Close()
		r, name = f, src
	}
	b, err := io.ReadAll(io.LimitReader(r, crdt.MaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return checkDocument(b, name)
}

// checkDocument checks that b is a metadata document the node takes
// (a JSON object within the limits) and returns it trimmed.
func checkDocument(b []byte, from string) ([]byte, error) {
	if _, err := crdt.ParseDocument(b); err != nil {
		return nil, usageErr("metadata from %s: %w", from, err)
	}
	return bytes.TrimSpace(b), nil
}

// printWritten prints a write's answer b: in table mode what table
// prints, with the causal token on stderr; otherwise the API's JSON,
// which holds the token.
func (c *client) printWritten(b []byte, hdr http.Header, table func() error) error {
	if c.output != "table" {
		return c.printJSON(b)
	}
	if err := table(); err != nil {
		return err
	}
	tok := hdr.Get(httpapi.HeaderCausalToken)
	if tok == "" {
		var body struct {
			Token string `json:"causal_token"`
		}
		_ = json.Unmarshal(b, &body)
		tok = body.Token
	}
	_, err := fmt.Fprintf(c.stderr, "causal token: %s\n", tok)
	return err
}

// printJSON prints one JSON answer: as the node sent it (-o json), or
// compacted onto one line (-o ndjson).
func (c *client) printJSON(b []byte) error {
	if c.output == "ndjson" {
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return fmt.Errorf("the node's answer is not JSON: %w", err)
		}
		b = buf.Bytes()
	}
	b = bytes.TrimRight(b, "\n")
	_, err := fmt.Fprintf(c.stdout, "%s\n", b)
	return err
}

// printTable prints items as a table: id, collection, metadata (compact
// JSON) and, when any item has them, conflicts.
func (c *client) printTable(items []itemJSON) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	conflicts := false
	for _, it := range items {
		conflicts = conflicts || len(it.Conflicts) > 0
	}
	head := "ID\tCOLLECTION\tMETADATA"
	if conflicts {
		head += "\tCONFLICTS"
	}
	fmt.Fprintln(tw, head)
	for _, it := range items {
		row := it.ID + "\t" + it.Collection + "\t" + compact(it.Metadata)
		if conflicts {
			row += "\t" + compact(it.Conflicts)
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

// compact returns JSON on one line; "" for none.
func compact(b json.RawMessage) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}

// runGet prints one item.
func runGet(ctx context.Context, c *client, o *clientOpts, args []string) error {
	path, err := itemPath(args[0], args[1], "")
	if err != nil {
		return err
	}
	q, err := readQuery(o)
	if err != nil {
		return err
	}
	b, _, err := c.getJSON(ctx, request{method: http.MethodGet, path: path, query: q})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	var it itemJSON
	if err := json.Unmarshal(b, &it); err != nil {
		return fmt.Errorf("the node's answer is not an item: %w", err)
	}
	return c.printTable([]itemJSON{it})
}

// runRemove removes an item.
func runRemove(ctx context.Context, c *client, _ *clientOpts, args []string) error {
	path, err := itemPath(args[0], args[1], "remove/")
	if err != nil {
		return err
	}
	b, hdr, err := c.getJSON(ctx, request{method: http.MethodDelete, path: path})
	if err != nil {
		return err
	}
	return c.printWritten(b, hdr, func() error {
		_, err := fmt.Fprintf(c.stdout, "removed %s/%s\n", args[0], args[1])
		return err
	})
}

// runQuery prints the items of a query: one page, or with --all every
// page, following next_cursor. With --all, -o json prints one object
// {"items": [...]} holding every page's items, written as they come.
// runCount prints the number of matches of the query q (GET
// /catalog/query with count=true): the number alone, or the node's JSON
// answer with -o json or ndjson.
func runCount(ctx context.Context, c *client, o *clientOpts, q url.Values) error {
	if o.limit != 0 || o.all || o.cursor != "" || o.conflict {
		return usageErr("--count counts every match: it takes no --limit, --all, --cursor or --conflicts")
	}
	q.Set("count", "true")
	b, _, err := c.getJSON(ctx, request{method: http.MethodGet, path: "/catalog/query", query: q})
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	var r struct {
		Count *int `json:"count"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Count == nil {
		return fmt.Errorf("the node's answer is not a count: %.200s", b)
	}
	_, err = fmt.Fprintln(c.stdout, *r.Count)
	return err
}

func runQuery(ctx context.Context, c *client, o *clientOpts, args []string) error {
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
	if o.count {
		return runCount(ctx, c, o, q)
	}
	if o.limit != 0 {
		if o.limit < 1 || o.limit > 1000 {
			return usageErr("--limit must be from 1 to 1000, got %d", o.limit)
		}
		q.Set("limit", strconv.Itoa(o.limit))
	}
	var (
		table  []itemJSON
		cursor = o.cursor
		next   string
		n      int
	)
	for page := 0; ; page++ {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		b, _, err := c.getJSON(ctx, request{method: http.MethodGet, path: "/catalog/query", query: q})
		if err != nil {
			return err
		}
		var p struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			return fmt.Errorf("the node's answer is not a query page: %w", err)
		}
		next = p.NextCursor
		switch {
		case c.output == "json" && !o.all:
			if err := c.printJSON(b); err != nil {
				return err
			}
		case c.output == "table":
			for _, raw := range p.Items {
				var it itemJSON
				if err := json.Unmarshal(raw, &it); err != nil {
					return fmt.Errorf("the node's answer holds something that is not an item: %w", err)
				}
				table = append(table, it)
			}
		default: // ndjson, or json with --all
			if c.output == "json" && page == 0 {
				fmt.Fprint(c.stdout, `{"items":[`)
			}
			for _, raw := range p.Items {
				var err error
				if c.output == "json" {
					if n > 0 {
						fmt.Fprint(c.stdout, ",")
					}
					_, err = fmt.Fprint(c.stdout, compact(raw))
				} else {
					_, err = fmt.Fprintln(c.stdout, compact(raw))
				}
				if err != nil {
					return err
				}
				n++
			}
		}
		if !o.all || next == "" {
			break
		}
		if next == cursor {
			return fmt.Errorf("the node answered the same next_cursor %q twice", next)
		}
		// Later pages need not wait: the first one did.
		cursor = next
		q.Del("after")
		q.Del("timeout")
	}
	switch {
	case o.all && c.output == "json":
		fmt.Fprintln(c.stdout, "]}")
	case c.output == "table":
		if err := c.printTable(table); err != nil {
			return err
		}
	}
	if next != "" && !o.all && c.output != "json" {
		fmt.Fprintf(c.stderr, "more items: --cursor %s (or --all)\n", next)
	}
	return nil
}

// getStatus returns GET /status, whole and by field.
func (c *client) getStatus(ctx context.Context) ([]byte, map[string]json.RawMessage, error) {
	b, _, err := c.getJSON(ctx, request{method: http.MethodGet, path: "/status"})
	if err != nil {
		return nil, nil, err
	}
	var st map[string]json.RawMessage
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, nil, fmt.Errorf("the node's status is not a JSON object: %w", err)
	}
	return b, st, nil
}

// statusFields are the fields status prints in table mode, in order.
var statusFields = []string{"replica", "peer_id", "build", "writable", "write_error", "fork_suspected",
	"items", "counter", "pending", "delta_log", "waiting", "peers", "writers"}

// runStatus prints GET /status: its main fields as a table, or all of it
// as JSON.
func runStatus(ctx context.Context, c *client, _ *clientOpts, _ []string) error {
	b, st, err := c.getStatus(ctx)
	if err != nil {
		return err
	}
	if c.output != "table" {
		return c.printJSON(b)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, f := range statusFields {
		raw, ok := st[f]
		if !ok {
			continue
		}
		v := compact(raw)
		switch f {
		case "build":
			var build struct{ Version, Revision string }
			if json.Unmarshal(raw, &build) == nil {
				f, v = "version", strings.TrimSpace(build.Version+" "+build.Revision)
			}
		case "peers":
			var peers []json.RawMessage
			if json.Unmarshal(raw, &peers) == nil {
				v = strconv.Itoa(len(peers)) + " connected"
			}
		default:
			var s string
			if json.Unmarshal(raw, &s) == nil {
				v = s
			}
		}
		fmt.Fprintf(tw, "%s\t%s\n", f, v)
	}
	return tw.Flush()
}

// runPeers prints the connected peers of /status's p2p object.
func runPeers(ctx context.Context, c *client, _ *clientOpts, _ []string) error {
	_, st, err := c.getStatus(ctx)
	if err != nil {
		return err
	}
	var status struct {
		Peers []json.RawMessage `json:"peers"`
	}
	if raw, ok := st["p2p"]; !ok || json.Unmarshal(raw, &status) != nil || status.Peers == nil {
		return fmt.Errorf("the node's status has no p2p.peers list (is %s a crdt-catalog node?)", c.base.Redacted())
	}
	switch c.output {
	case "json":
		b, err := json.Marshal(status.Peers)
		if err != nil {
			return err
		}
		return c.printJSON(b)
	case "ndjson":
		for _, p := range status.Peers {
			if _, err := fmt.Fprintln(c.stdout, compact(p)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(status.Peers) == 0 {
		_, err := fmt.Fprintln(c.stderr, "no connected peers")
		return err
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCONNECTION\tADDR\tRTT\tAHEAD\tBEHIND")
	for _, raw := range status.Peers {
		var p p2p.PeerStatus
		if err := json.Unmarshal(raw, &p); err != nil {
			return fmt.Errorf("the node's p2p.peers holds something that is not a peer: %w", err)
		}
		ahead, behind := "?", "?"
		if p.Known {
			ahead, behind = strconv.FormatUint(p.Ahead, 10), strconv.FormatUint(p.Behind, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fms\t%s\t%s\n", p.ID, p.Connection, p.Addr, p.RTTMillis, ahead, behind)
	}
	return tw.Flush()
}
