package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// nodeProc is a crdt-catalog process started by httpload.
type nodeProc struct {
	cmd    *exec.Cmd
	bin    string
	data   string
	base   string // http://127.0.0.1:PORT
	args   []string
	logs   *logWriter
	exited chan struct{} // closed once Wait returned
}

// startNode builds the binary if needed and starts it on loopback with a
// free port. cleanup removes the temporary directories; call it after the
// node has exited.
func startNode(ctx context.Context, o *options) (nd *nodeProc, cleanup func(), err error) {
	var temps []string
	cleanup = func() {
		for _, d := range temps {
			_ = os.RemoveAll(d)
		}
	}
	bin := o.bin
	if bin == "" {
		dir, err := os.MkdirTemp("", "httpload-bin-")
		if err != nil {
			return nil, cleanup, err
		}
		temps = append(temps, dir)
		bin = filepath.Join(dir, "crdt-catalog")
		if err := buildNode(ctx, bin); err != nil {
			return nil, cleanup, err
		}
	}
	data := o.data
	if data == "" {
		dir, err := os.MkdirTemp("", "httpload-data-")
		if err != nil {
			return nil, cleanup, err
		}
		temps = append(temps, dir)
		data = dir
	}
	extra, err := loopbackArgs(ctx, bin)
	if err != nil {
		return nil, cleanup, err
	}
	nd = &nodeProc{bin: bin, data: data, logs: newLogWriter(), exited: make(chan struct{})}
	nd.args = append([]string{"-data", data, "-http", "127.0.0.1:0", "-sync=" + strconv.FormatBool(o.sync)}, extra...)
	if o.watchers > 0 {
		nd.args = append(nd.args, "-max-watchers", strconv.Itoa(o.watchers), "-max-conns", strconv.Itoa(o.watchers+o.clients+128))
	}
	nd.cmd = exec.Command(bin, nd.args...)
	nd.cmd.Env = nodeEnv()
	bindToParent(nd.cmd)
	nd.cmd.Stdout = nd.logs
	nd.cmd.Stderr = nd.logs
	progress("starting %s %s", bin, strings.Join(nd.args, " "))
	if err := nd.cmd.Start(); err != nil {
		return nil, cleanup, fmt.Errorf("start node: %w", err)
	}
	go func() {
		_ = nd.cmd.Wait()
		close(nd.exited)
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case nd.base = <-nd.logs.addr:
		return nd, cleanup, nil
	case <-nd.exited:
		err = fmt.Errorf("node exited before listening (%v):\n%s", nd.cmd.ProcessState, strings.Join(nd.logs.tail(), "\n"))
	case <-timer.C:
		err = fmt.Errorf("node did not log its HTTP address within %v:\n%s", startTimeout, strings.Join(nd.logs.tail(), "\n"))
	case <-ctx.Done():
		err = ctx.Err()
	}
	nd.kill()
	return nil, cleanup, err
}

var helpFlagRE = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_-]*)`)

// loopbackArgs returns the flags that keep the node's peer-to-peer
// networking, if its -help lists any, on loopback and off discovery: a
// load test must not listen on other interfaces or dial the internet.
func loopbackArgs(ctx context.Context, bin string) ([]string, error) {
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(hctx, bin, "-help")
	cmd.Env = nodeEnv()
	out, _ := cmd.CombinedOutput() // -help may exit 0 or 2; the text is what matters
	flags := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		if m := helpFlagRE.FindStringSubmatch(line); m != nil {
			flags[m[1]] = true
		}
	}
	if !flags["data"] || !flags["http"] {
		return nil, fmt.Errorf("%s -help lists no -data and -http flags: not a crdt-catalog binary?\n%s", bin, out)
	}
	var args []string
	if flags["listen"] {
		args = append(args, "-listen", "/ip4/127.0.0.1/tcp/0")
	}
	for _, f := range []string{"dht", "mdns", "nat"} {
		if flags[f] {
			args = append(args, "-"+f+"=false")
		}
	}
	return args, nil
}

// nodeEnv is httpload's environment without CRDT_CATALOG_* variables, so
// that only the flags httpload passes configure the node.
func nodeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRDT_CATALOG_") {
			env = append(env, kv)
		}
	}
	return env
}

// buildNode runs go build ./cmd/crdt-catalog from the module root.
func buildNode(ctx context.Context, out string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output() // go env is quick
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w (give -bin instead)", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	if _, err := os.Stat(filepath.Join(root, "cmd", "crdt-catalog")); strings.TrimSpace(string(gomod)) == "" || err != nil {
		return errors.New("not inside the crdt-catalog module: run from its root or give -bin")
	}
	progress("building ./cmd/crdt-catalog in %s", root)
	bctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", out, "./cmd/crdt-catalog")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, b)
	}
	return nil
}

// stop sends SIGTERM and waits up to stopTimeout for exit status 0;
// past that it kills the node.
func (nd *nodeProc) stop() stopInfo {
	info := stopInfo{Signal: "SIGTERM"}
	start := time.Now()
	if err := nd.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		info.Detail = "signal: " + err.Error()
		nd.kill()
		return info
	}
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-nd.exited:
		info.TookMs = msf(time.Since(start))
		info.ExitCode = nd.cmd.ProcessState.ExitCode()
		info.OK = info.ExitCode == 0
		info.Detail = nd.cmd.ProcessState.String()
	case <-timer.C:
		info.TookMs = msf(time.Since(start))
		info.ExitCode = -1
		info.Detail = fmt.Sprintf("still running %v after SIGTERM; killed", stopTimeout)
		nd.kill()
	}
	return info
}

// kill ends the node with SIGKILL and waits briefly for it.
func (nd *nodeProc) kill() {
	select {
	case <-nd.exited:
		return
	default:
	}
	_ = nd.cmd.Process.Kill()
	select {
	case <-nd.exited:
	case <-time.After(5 * time.Second):
	}
}

var listenRE = regexp.MustCompile(`http api listening.*http=(http://[0-9.:\[\]a-z]+)`)

// logWriter keeps the node's last log lines and reports its HTTP address.
type logWriter struct {
	mu       sync.Mutex
	partial  []byte
	lines    []string // ring of the last maxLines lines
	found    bool
	warnings int // lines at level WARN or ERROR
	addr     chan string
}

const maxLines = 100

func newLogWriter() *logWriter { return &logWriter{addr: make(chan string, 1)} }

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if len(w.lines) == maxLines {
			w.lines = w.lines[1:]
		}
		w.lines = append(w.lines, line)
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			w.warnings++
		}
		if m := listenRE.FindStringSubmatch(line); m != nil && !w.found {
			w.found = true
			w.addr <- m[1]
		}
	}
	if len(w.partial) > 64<<10 { // a runaway line: keep memory bounded
		w.partial = w.partial[:0]
	}
	return len(p), nil
}

func (w *logWriter) tail() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.lines...)
}

func (w *logWriter) warnCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.warnings
}

// cpu is cumulative CPU time in seconds: of the node, of httpload and of
// the whole machine (every process), so that the share of other work on a
// shared machine shows.
type cpu struct{ node, self, machine float64 }

// cpuTimes reads the node's (when httpload started it) and httpload's own
// user+system CPU time.
func cpuTimes(nd *nodeProc) cpu {
	var c cpu
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = tv(ru.Utime) + tv(ru.Stime)
	}
	if nd != nil {
		c.node = procCPU(nd.cmd.Process.Pid)
	}
	c.machine = machineCPU()
	return c
}

// machineCPU reads the busy time of all CPUs from /proc/stat (user, nice,
// system, irq, softirq, steal; in USER_HZ = 100 ticks/s); 0 if unavailable.
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	busy := 0.0
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseFloat(f[i], 64)
		busy += v
	}
	return busy / 100
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// procCPU reads utime+stime of pid from /proc (in USER_HZ = 100 ticks/s,
// the Linux ABI value); 0 if unavailable.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100
}

// machine describes where the run happens.
func machine() machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// nodeStats are the node's counters httpload reads from /status and
// /metrics.
type nodeStats struct {
	items                   int64
	ops, commits, commitSec float64
}

// scrape reads the item count and the commit counters.
//
// It runs even after an interrupt (with its own short timeout), so that
// what was measured before it can still be reported.
func (l *loader) scrape(ctx context.Context) (nodeStats, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var st nodeStats
	body, code, err := l.get(ctx, "/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("GET /status: %d %s", code, body)
	}
	var status struct {
		Items map[string]int64 `json:"items"`
	}
	if err := json.Unmarshal(body, &status); err != nil {
		return st, fmt.Errorf("GET /status: %w", err)
	}
	st.items = status.Items[collection]
	body, code, err = l.get(ctx, "/metrics")
	if err != nil || code != http.StatusOK {
		return st, nil // counters are optional
	}
	for line := range strings.Lines(string(body)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			continue
		}
		switch name {
		case "catalog_ops_total":
			st.ops = v
		case "catalog_commits_total":
			st.commits = v
		case "catalog_commit_seconds_total":
			st.commitSec = v
		}
	}
	return st, nil
}

// get reads path fully; it returns the body and status.
func (l *loader) get(ctx context.Context, path string) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := l.cl.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return b, resp.StatusCode, err
}

// timeQuery times reps sequential GET /catalog/query requests, stopping
// early at deadline.
func (l *loader) timeQuery(ctx context.Context, name, q, cursor string, reps int, isTarget bool, deadline time.Time) queryResult {
	v := url.Values{"type": {collection}, "limit": {strconv.Itoa(pageLimit)}}
	if q != "" {
		v.Set("q", q)
	}
	if cursor != "" {
		v.Set("cursor", cursor)
	}
	path := "/catalog/query?" + v.Encode()
	res := queryResult{Name: name, Path: path, Reps: reps, IsTarget: isTarget}
	var lat []time.Duration
	for range reps {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			res.Note = "stopped early by -query-timeout or interrupt"
			break
		}
		t0 := time.Now()
		body, code, err := l.get(ctx, path)
		lat = append(lat, time.Since(t0))
		if err != nil || code != http.StatusOK {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("status %d err %v body %.200s", code, err, body)
			}
			continue
		}
		var page struct {
			Items      []json.RawMessage `json:"items"`
			NextCursor string            `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			res.Errors++
			continue
		}
		res.Items, res.HasNext, res.BodyBytes = len(page.Items), page.NextCursor != "", len(body)
	}
	res.Done = len(lat)
	res.Latency = summarize(lat)
	return res
}
