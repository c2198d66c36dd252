package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// The client's exit statuses (README, "Command-line client").
const (
	exitOK          = 0
	exitError       = 1 // anything else: a 500, a 401, a local I/O error
	exitUsage       = 2 // bad usage or bad input (400, 413, 415)
	exitNotFound    = 3 // 404
	exitConflict    = 4 // 409 (fork suspected), 412 (create-only add of a present item)
	exitUnreachable = 5 // connection refused, timed out, or 503
	exitNotApplied  = 6 // 504: a read's causal token was not applied in time
	exitResync      = 7 // 410 on watch: the changes to resume from are gone
)

// statusError is an error with the exit status it calls for.
type statusError struct {
	code int
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }
func (e *statusError) Unwrap() error { return e.err }

// usageErr is a bad-usage error (exit 2).
func usageErr(format string, args ...any) error {
	return &statusError{exitUsage, fmt.Errorf(format, args...)}
}

// exitCode returns the exit status for what run returned: 0 for nil and
// for -help, the code a statusError carries, else 1.
func exitCode(err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if se := (*statusError)(nil); errors.As(err, &se) {
		return se.code
	}
	return exitError
}

// clientCommand is one subcommand of the command-line client.
type clientCommand struct {
	name    string
	args    string // positional arguments, for the usage line
	summary string
	// minArgs and maxArgs bound the positional arguments.
	minArgs, maxArgs int
	// flags adds the command's own flags to those every command has.
	flags func(fs *flag.FlagSet, o *clientOpts)
	run   func(ctx context.Context, c *client, o *clientOpts, args []string) error
}

// clientCommands is the client's command table: dispatch, usage and the
// completion scripts all come from it.
var clientCommands = []clientCommand{
	{name: "add", args: "COLLECTION ID [METADATA|-]", summary: "add an item (an upsert; --create: only if absent on the node)",
		minArgs: 2, maxArgs: 3, flags: addFlags, run: writeCmd("add")},
	{name: "get", args: "COLLECTION ID", summary: "print one item",
		minArgs: 2, maxArgs: 2, flags: readFlags, run: runGet},
	{name: "rm", args: "COLLECTION ID", summary: "remove an item",
		minArgs: 2, maxArgs: 2, run: runRemove},
	{name: "set", args: "COLLECTION ID METADATA|-", summary: "replace an item's metadata (fields not given are removed)",
		minArgs: 2, maxArgs: 3, flags: fileFlag, run: writeCmd("set")},
	{name: "patch", args: "COLLECTION ID PATCH|-", summary: "merge a JSON merge patch into an item's metadata (null removes a field)",
		minArgs: 2, maxArgs: 3, flags: fileFlag, run: writeCmd("patch")},
	{name: "query", args: "COLLECTION [QUERY]", summary: "list the items that match a query, sorted by id",
		minArgs: 1, maxArgs: 2, flags: queryFlags, run: runQuery},
	{name: "indexes", summary: "list the node's secondary indexes and their build progress",
		run: runIndexes},
	{name: "index-add", args: "COLLECTION FIELD", summary: "add an index on a metadata field, built in the background",
		minArgs: 2, maxArgs: 2, run: runIndexAdd},
	{name: "index-drop", args: "COLLECTION FIELD", summary: "drop an index added with index-add",
		minArgs: 2, maxArgs: 2, run: runIndexDrop},
	{name: "watch", args: "COLLECTION [QUERY]", summary: "print the changes of the items that match a query as they happen; reconnects by itself from the last change seen",
		minArgs: 1, maxArgs: 2, flags: watchFlags, run: runWatch},
	{name: "status", summary: "print the node's main status fields",
		run: runStatus},
	{name: "peers", summary: "print the node's connected peers",
		run: runPeers},
	{name: "backup", args: "FILE|-", summary: "save the node's full state to FILE (written whole, synced, then renamed into place)",
		minArgs: 1, maxArgs: 1, run: runBackup},
	{name: "restore", args: "FILE|-", summary: "check a backup and join it into the node's state",
		minArgs: 1, maxArgs: 1, run: runRestore},
}

// writeCmd returns the run function of the write command name.
func writeCmd(name string) func(context.Context, *client, *clientOpts, []string) error {
	return func(ctx context.Context, c *client, o *clientOpts, args []string) error {
		return runWrite(ctx, c, o, args, name)
	}
}

// clientOpts are the client's flags; each command defines those it uses.
type clientOpts struct {
	endpoint   string
	tokenFile  string
	output     string
	reqTimeout time.Duration

	after    string        // read: causal token to wait for
	wait     time.Duration // read: how long the node may wait for it
	file     string        // write: metadata file
	create   bool          // add: If-None-Match: *
	limit    int           // query: page size
	all      bool          // query: follow next_cursor
	cursor   string        // query: start here
	count    bool          // query: the number of matches, not the items
	conflict bool          // read: include the losing concurrent values
	initial  bool          // watch: the matching items first
	since    seqFlag       // watch: resume after this change
	resync   bool          // watch: on 410, start again with initial
	changes  int           // watch: exit after this many changes
	retryFor time.Duration // watch: how long to try reconnecting
	idle     time.Duration // watch: reconnect after this much silence
}

func addFlags(fs *flag.FlagSet, o *clientOpts) {
	fileFlag(fs, o)
	fs.BoolVar(&o.create, "create", false, "add only if the item is not present on this node (If-None-Match: *); exit 4 if it is")
}

func fileFlag(fs *flag.FlagSet, o *clientOpts) {
	fs.StringVar(&o.file, "f", "", "read the metadata from this file (- for stdin) instead of an argument")
}

func readFlags(fs *flag.FlagSet, o *clientOpts) {
	fs.StringVar(&o.after, "after", "", "causal token of writes the answer must include (a write's token; tokens joined by commas merge)")
	fs.DurationVar(&o.wait, "timeout", 0, "how long the node may wait for the --after writes (default the node's, 5s; at most 1m); then exit 6")
	fs.BoolVar(&o.conflict, "conflicts", false, "include the losing concurrent values of each field (JSON output)")
}

func queryFlags(fs *flag.FlagSet, o *clientOpts) {
	readFlags(fs, o)
	fs.IntVar(&o.limit, "limit", 0, "items per page, 1-1000 (default the node's, 100)")
	fs.BoolVar(&o.all, "all", false, "follow next_cursor to the last page")
	fs.StringVar(&o.cursor, "cursor", "", "start at this next_cursor of an earlier page")
	fs.BoolVar(&o.count, "count", false, "print the number of matches instead of the items")
}

// commonFlags are every client command's flags.
func commonFlags(fs *flag.FlagSet, o *clientOpts, getenv func(string) string) {
	ep := getenv("CRDT_CATALOG_ENDPOINT")
	if ep == "" {
		ep = "http://127.0.0.1:8080"
	}
	fs.StringVar(&o.endpoint, "endpoint", ep, "the node's HTTP API (env CRDT_CATALOG_ENDPOINT)")
	fs.StringVar(&o.tokenFile, "token-file", getenv("CRDT_CATALOG_TOKEN_FILE"), "file holding the API's bearer token (env CRDT_CATALOG_TOKEN_FILE)")
	fs.StringVar(&o.output, "o", "table", "output: table (for people), json (the API's JSON) or ndjson (one item per line)")
	fs.DurationVar(&o.reqTimeout, "request-timeout", 0, "give up (exit 5) when the node has not answered this long after the request was sent; 0: 1m, and no limit for restore (the node checks and joins the whole state before it answers)")
}

// newFlagSet returns cmd's flag set over o.
func (cmd *clientCommand) newFlagSet(o *clientOpts, stderr io.Writer, getenv func(string) string) *flag.FlagSet {
	fs := flag.NewFlagSet("crdt-catalog "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	commonFlags(fs, o, getenv)
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s.\n\nFlags (-flag and --flag are the same):\n", cmd.usage(), cmd.summary)
		fs.PrintDefaults()
	}
	return fs
}

// usage returns cmd's usage line.
func (cmd *clientCommand) usage() string {
	return strings.TrimSpace("crdt-catalog " + cmd.name + " [flags] " + cmd.args)
}

// findClientCommand returns the client command named name, or nil.
func findClientCommand(name string) *clientCommand {
	for i := range clientCommands {
		if clientCommands[i].name == name {
			return &clientCommands[i]
		}
	}
	return nil
}

// parseInterleaved parses flags anywhere among the positional arguments
// (the flag package stops at the first positional one), so that
// "get snapshots s1 -o json" works; after "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// runClient runs the client command cmd with its arguments.
func runClient(ctx context.Context, cmd *clientCommand, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) error {
	o := &clientOpts{}
	fs := cmd.newFlagSet(o, stderr, getenv)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &statusError{exitUsage, err}
	}
	if len(pos) < cmd.minArgs || len(pos) > cmd.maxArgs {
		return usageErr("usage: %s (got %d arguments; -help lists the flags)", cmd.usage(), len(pos))
	}
	c, err := newClient(o, stdin, stdout, stderr)
	if err != nil {
		return err
	}
	if o.reqTimeout == 0 && cmd.name != "restore" {
		o.reqTimeout = time.Minute
	}
	// A read's wait for its token comes on top of the node's usual answer.
	c.http.Transport.(*http.Transport).ResponseHeaderTimeout = o.reqTimeout + o.wait
	if err := cmd.run(ctx, c, o, pos); err != nil {
		return fmt.Errorf("%s: %w", cmd.name, err)
	}
	return nil
}

// client talks to one node's HTTP API.
type client struct {
	base   *url.URL
	token  string
	output string
	http   *http.Client
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func newClient(o *clientOpts, stdin io.Reader, stdout, stderr io.Writer) (*client, error) {
	switch o.output {
	case "table", "json", "ndjson":
	default:
		return nil, usageErr("-o must be table, json or ndjson, got %q", o.output)
	}
	base, err := parseEndpoint(o.endpoint)
	if err != nil {
		return nil, err
	}
	token, err := readClientToken(o.tokenFile)
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	return &client{base: base, token: token, output: o.output, http: &http.Client{Transport: tr},
		stdin: stdin, stdout: stdout, stderr: stderr}, nil
}

// parseEndpoint parses --endpoint: an http or https URL, or host:port
// (taken as http).
func parseEndpoint(s string) (*url.URL, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, usageErr("--endpoint %q: want the node's API as http://HOST:PORT (or https://)", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// maxTokenFile bounds a token file.
const maxTokenFile = 4096

// readClientToken reads --token-file: its content, white space trimmed.
func readClientToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", usageErr("--token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("--token-file: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(b) > maxTokenFile {
		return "", usageErr("--token-file %s: larger than %d bytes, want one line holding the token", path, maxTokenFile)
	}
	if t == "" || strings.ContainsAny(t, "\r\n") {
		return "", usageErr("--token-file %s: want one line holding the token", path)
	}
	return t, nil
}

// apiError is an answer of the node other than 2xx.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d %s)", e.msg, e.status, http.StatusText(e.status))
}

// exitFor maps an HTTP status to the client's exit status.
func exitFor(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return exitUsage
	case http.StatusNotFound:
		return exitNotFound
	case http.StatusConflict, http.StatusPreconditionFailed:
		return exitConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return exitUnreachable
	case http.StatusGatewayTimeout:
		return exitNotApplied
	}
	return exitError
}

// request is one call to the API.
type request struct {
	method, path string
	query        url.Values
	header       http.Header
	body         io.Reader
	size         int64 // of body, in bytes
}

// do sends req and returns the response of a 2xx answer, whose body the
// caller closes. Any other answer becomes an apiError with the node's
// message and the matching exit status; a node that cannot be reached or
// does not answer in time, a statusError with exit 5.
func (c *client) do(ctx context.Context, req request) (*http.Response, error) {
	u := *c.base
	u.Path += req.path
	u.RawQuery = req.query.Encode()
	r, err := http.NewRequestWithContext(ctx, req.method, u.String(), req.body)
	if err != nil {
		return nil, err
	}
	if req.body != nil {
		r.ContentLength = req.size
	}
	for k, vs := range req.header {
		r.Header[k] = vs
	}
	if c.token != "" {
		r.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(r)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &statusError{exitUnreachable, fmt.Errorf("node %s unreachable: %w", c.base.Redacted(), err)}
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		msg = body.Error
	}
	if msg == "" {
		msg = "no message"
	}
	if resp.StatusCode == http.StatusUnauthorized {
		msg += "; give the node's API token with --token-file (or CRDT_CATALOG_TOKEN_FILE)"
	}
	return nil, &statusError{exitFor(resp.StatusCode), &apiError{resp.StatusCode, msg}}
}

// getJSON sends req and returns the whole body of its 2xx answer, at
// most maxAnswer bytes.
func (c *client) getJSON(ctx context.Context, req request) ([]byte, http.Header, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(b) > maxAnswer {
		return nil, nil, fmt.Errorf("the node's answer is larger than %d bytes", maxAnswer)
	}
	return b, resp.Header, nil
}

// maxAnswer bounds a JSON answer: a query page of 1,000 items of up to
// 64 KiB of metadata each is 64 MiB.
const maxAnswer = 256 << 20

// readQuery returns the query parameters of a read: after and timeout.
func readQuery(o *clientOpts) (url.Values, error) {
	q := url.Values{}
	if o.after != "" {
		if _, err := crdt.ParseToken(o.after); err != nil {
			return nil, usageErr("--after: %w", err)
		}
		q.Set("after", o.after)
	}
	if o.wait < 0 {
		return nil, usageErr("--timeout must be positive, got %s", o.wait)
	}
	if o.wait > 0 {
		q.Set("timeout", o.wait.String())
	}
	if o.conflict {
		q.Set("conflicts", "true")
	}
	return q, nil
}

// itemPath returns the path of route ("", "add/", "metadata/", "remove/")
// for an item, checking the collection and id first.
func itemPath(coll, id, route string) (string, error) {
	if err := crdt.ValidateCollection(coll); err != nil {
		return "", usageErr("collection: %w", err)
	}
	if err := crdt.ValidateID(id); err != nil {
		return "", usageErr("id: %w", err)
	}
	return "/" + coll + "/" + route + id, nil
}
