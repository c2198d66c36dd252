package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything httpload prints.
type report struct {
	Machine machineInfo   `json:"machine"`
	Config  config        `json:"config"`
	Node    nodeInfo      `json:"node"`
	Add     addSummary    `json:"add"`
	Fill    *fillInfo     `json:"fill,omitempty"`
	Queries []queryResult `json:"queries,omitempty"`
	Watch   *watchReport  `json:"watch,omitempty"`
	Stop    *stopInfo     `json:"stop,omitempty"` // nil for an external node
	Targets []target      `json:"targets"`
	Error   string        `json:"error,omitempty"` // why the run ended early
}

type machineInfo struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	GoVersion string `json:"go_version"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel,omitempty"`
	LoadAvg   string `json:"loadavg_at_start,omitempty"` // /proc/loadavg: the machine may be shared
}

type config struct {
	Args           []string `json:"args"`
	Clients        int      `json:"clients"`
	N              int      `json:"n"`
	Duration       string   `json:"duration"`
	DocBytes       int      `json:"doc_bytes"`
	DocBytesActual int      `json:"doc_bytes_actual"`
	QueryItems     int      `json:"query_items"`
	IDPrefix       string   `json:"id_prefix"`
}

type nodeInfo struct {
	Binary      string   `json:"binary,omitempty"`
	Args        []string `json:"args,omitempty"`
	Data        string   `json:"data,omitempty"`
	Sync        string   `json:"sync"`
	Addr        string   `json:"addr"`
	PID         int      `json:"pid,omitempty"`
	LogWarnings int      `json:"log_warnings"`
}

// latency is a latency distribution in milliseconds.
type latency struct {
	Count  int     `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

type addSummary struct {
	Issued          int64          `json:"issued"`
	Acked           int64          `json:"acknowledged"`
	Errors          int64          `json:"errors"`
	ErrorKinds      map[string]int `json:"error_kinds,omitempty"`
	StoppedBy       string         `json:"stopped_by"`
	ElapsedSec      float64        `json:"elapsed_s"`
	PerSec          float64        `json:"acknowledged_per_s"`
	Latency         latency        `json:"latency"`
	Connections     int64          `json:"connections_opened"`
	ItemsBefore     int64          `json:"items_before"`
	ItemsAfter      int64          `json:"items_after"`
	Commits         float64        `json:"group_commits"`
	OpsPerCommit    float64        `json:"ops_per_commit"`
	CommitMeanMs    float64        `json:"commit_mean_ms"`
	CommitBusyPct   float64        `json:"commit_busy_pct"`
	Note            string         `json:"note,omitempty"`
	NodeCPUSec      float64        `json:"node_cpu_s"`
	NodeCPUPct      float64        `json:"node_cpu_pct"`
	LoadCPUSec      float64        `json:"httpload_cpu_s"`
	LoadCPUPct      float64        `json:"httpload_cpu_pct"`
	OtherCPUSec     float64        `json:"other_processes_cpu_s"` // the rest of the machine's busy time
	OtherCPUPct     float64        `json:"other_processes_cpu_pct"`
	NodeCPUPerAddUs float64        `json:"node_cpu_per_add_us"`
	LoadCPUPerAddUs float64        `json:"httpload_cpu_per_add_us"`
}

type fillInfo struct {
	Existing   int     `json:"existing"`
	Target     int     `json:"target"`
	Added      int     `json:"added"`
	Errors     int     `json:"errors"`
	ElapsedSec float64 `json:"elapsed_s"`
	Final      int     `json:"final"`
	Note       string  `json:"note,omitempty"`
}

type queryResult struct {
	Name       string  `json:"name"`
	Path       string  `json:"path"`
	Reps       int     `json:"reps"`
	Done       int     `json:"done"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Items      int     `json:"items_last_page"`
	HasNext    bool    `json:"next_cursor_last_page"`
	BodyBytes  int     `json:"body_bytes_last_page"`
	Latency    latency `json:"latency"`
	Note       string  `json:"note,omitempty"`
	IsTarget   bool    `json:"is_target"` // timed against the page target
}

type stopInfo struct {
	Signal   string  `json:"signal,omitempty"`
	ExitCode int     `json:"exit_code"`
	TookMs   float64 `json:"took_ms"`
	OK       bool    `json:"ok"`
	Detail   string  `json:"detail,omitempty"`
}

type target struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

func (r loadResult) summary() addSummary {
	s := addSummary{
		Issued: r.issued, Acked: r.acked, Errors: r.errors, StoppedBy: r.stoppedBy,
		ElapsedSec: r.elapsed.Seconds(), Latency: summarize(r.latencies),
	}
	if len(r.errs) > 0 {
		s.ErrorKinds = r.errs
	}
	if s.ElapsedSec > 0 {
		s.PerSec = float64(r.acked) / s.ElapsedSec
	}
	return s
}

// summarize sorts d and returns its nearest-rank percentiles.
func summarize(d []time.Duration) latency {
	if len(d) == 0 {
		return latency{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	pct := func(p float64) float64 {
		i := int(float64(len(d))*p+0.999999) - 1
		return msf(d[min(max(i, 0), len(d)-1)])
	}
	return latency{
		Count: len(d), MeanMs: msf(sum / time.Duration(len(d))),
		P50Ms: pct(0.50), P90Ms: pct(0.90), P99Ms: pct(0.99), MaxMs: msf(d[len(d)-1]),
	}
}

func msf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// evaluate fills Targets.
func (r *report) evaluate() {
	r.Targets = []target{
		{"durable adds/s (acknowledged, -sync=" + r.Node.Sync + ")", fmt.Sprintf(">= %d", targetAddsPerSec),
			fmt.Sprintf("%.0f", r.Add.PerSec), r.Add.PerSec >= targetAddsPerSec && r.Add.Errors == 0},
		{"add latency p99", fmt.Sprintf("<= %v", targetAddP99),
			fmt.Sprintf("%.2f ms", r.Add.Latency.P99Ms), r.Add.Latency.Count > 0 && r.Add.Latency.P99Ms <= msf(targetAddP99)},
	}
	for _, q := range r.Queries {
		if !q.IsTarget {
			continue // reported only
		}
		r.Targets = append(r.Targets, target{
			"query " + q.Name + " p99, " + fmt.Sprint(r.Fill.Final) + " items", fmt.Sprintf("<= %v", targetPageP99),
			fmt.Sprintf("%.2f ms", q.Latency.P99Ms), q.Errors == 0 && q.Done > 0 && q.Latency.P99Ms <= msf(targetPageP99),
		})
	}
}

func (r *report) writeText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	m := r.Machine
	p("httpload report")
	p("machine: nproc=%d cpu=%q %s kernel=%s %s", m.NProc, m.CPU, m.OS, m.Kernel, m.GoVersion)
	p("         loadavg at start: %s", m.LoadAvg)
	p("command: httpload %s", strings.Join(r.Config.Args, " "))
	p("node:    %s (sync=%s, pid %d, %d WARN/ERROR log lines)", r.Node.Addr, r.Node.Sync, r.Node.PID, r.Node.LogWarnings)
	if r.Node.Binary != "" {
		p("         %s %s", r.Node.Binary, strings.Join(r.Node.Args, " "))
	}
	p("load:    clients=%d n=%d duration=%s doc=%d bytes (asked %d) ids=%s-NNNNNNNNN",
		r.Config.Clients, r.Config.N, r.Config.Duration, r.Config.DocBytesActual, r.Config.DocBytes, r.Config.IDPrefix)
	a := r.Add
	p("")
	p("phase 1: adds  (POST /%s/add/{id})", collection)
	p("  issued %d, acknowledged (201) %d, errors %d, stopped by %s", a.Issued, a.Acked, a.Errors, a.StoppedBy)
	for _, k := range sortedKeys(a.ErrorKinds) {
		p("    error %q x %d", k, a.ErrorKinds[k])
	}
	p("  elapsed %.3f s -> %.0f acknowledged adds/s", a.ElapsedSec, a.PerSec)
	p("  latency ms: mean %.2f  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  (%d requests)",
		a.Latency.MeanMs, a.Latency.P50Ms, a.Latency.P90Ms, a.Latency.P99Ms, a.Latency.MaxMs, a.Latency.Count)
	p("  connections opened %d; items in %q %d -> %d", a.Connections, collection, a.ItemsBefore, a.ItemsAfter)
	if a.Note != "" {
		p("  NOTE: %s", a.Note)
	}
	p("  group commits %.0f: %.1f ops/commit, mean commit %.2f ms, commit goroutine busy %.0f%% of wall time",
		a.Commits, a.OpsPerCommit, a.CommitMeanMs, a.CommitBusyPct)
	p("  CPU: node %.2f s (%.0f%% of one core, %.0f us/add), httpload %.2f s (%.0f%%, %.0f us/add), other processes %.2f s (%.0f%%) of %d cores",
		a.NodeCPUSec, a.NodeCPUPct, a.NodeCPUPerAddUs, a.LoadCPUSec, a.LoadCPUPct, a.LoadCPUPerAddUs, a.OtherCPUSec, a.OtherCPUPct, r.Machine.NProc)
	if r.Fill != nil {
		f := r.Fill
		p("")
		p("phase 2: queries on %d items (had %d, added %d in %.1f s untimed, %d errors)", f.Final, f.Existing, f.Added, f.ElapsedSec, f.Errors)
		if f.Note != "" {
			p("  NOTE: %s", f.Note)
		}
		for _, q := range r.Queries {
			p("  %s", q.Name)
			p("    GET %s", q.Path)
			p("    %d/%d done, %d errors, last page %d items (%d bytes), next_cursor=%t",
				q.Done, q.Reps, q.Errors, q.Items, q.BodyBytes, q.HasNext)
			p("    latency ms: mean %.2f  p50 %.2f  p99 %.2f  max %.2f", q.Latency.MeanMs, q.Latency.P50Ms, q.Latency.P99Ms, q.Latency.MaxMs)
			if q.FirstError != "" {
				p("    first error: %s", q.FirstError)
			}
			if q.Note != "" {
				p("    NOTE: %s", q.Note)
			}
		}
	}
	if r.Watch != nil {
		r.Watch.writeText(w)
	}
	p("")
	if r.Error != "" {
		p("run ended early: %s", r.Error)
	}
	if r.Stop != nil {
		p("stop: %s -> exit %d after %.0f ms (%s), ok=%t", r.Stop.Signal, r.Stop.ExitCode, r.Stop.TookMs, r.Stop.Detail, r.Stop.OK)
	} else {
		p("stop: external node left running")
	}
	p("")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\twanted\tmeasured\tmet")
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Target, t.Measured, yesNo(t.Met))
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

func sortedKeys(m map[string]int) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// progress writes a line to stderr.
func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "httpload: "+format+"\n", a...)
}
