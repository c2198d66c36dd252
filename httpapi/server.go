package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/node/query"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Catalog is the part of a catalog node the handlers call. *node.Node
// satisfies it; see the node package for what each method promises.
type Catalog interface {
	Collections() []string
	Add(ctx context.Context, k crdt.Key, doc crdt.Document) (node.Item, error)
	Create(ctx context.Context, k crdt.Key, doc crdt.Document) (node.Item, error)
	Replace(ctx context.Context, k crdt.Key, doc crdt.Document) (node.Item, error)
	Patch(ctx context.Context, k crdt.Key, patch crdt.Document) (node.Item, error)
	Batch(ctx context.Context, ops []node.Op) ([]node.Item, error)
	Get(ctx context.Context, k crdt.Key) (node.Item, error)
	WaitApplied(ctx context.Context, t crdt.Token) error
	Query(ctx context.Context, collection, q string, limit int, cursor string) (node.Page, error)
	ChangeBounds() (first, last uint64)
	Watch(since uint64) (*node.Watcher, error)
	WatchInitial(ctx context.Context, collection string, q *query.Query, fn func(node.Item) error) (*node.Watcher, error)
	Count(ctx context.Context, collection, q string) (int, bool, error)
	GetDeltas(ctx context.Context, limit int) (node.Pending, error)
	Attest(d *crdt.Delta) error
	ApplyDeltas(ctx context.Context, deltas []*crdt.Delta) (node.ApplyResult, error)
	ClearDeltas(ctx context.Context, cursor uint64) error
	ClearAllDeltas(ctx context.Context) (uint64, error)
	BeginExport(ctx context.Context) (*node.StateExport, error)
	ImportState(ctx context.Context, r io.Reader) (node.ImportResult, error)
	Stats() node.Stats
	Writable() error
}

var _ Catalog = (*node.Node)(nil)

// StatusFunc supplies the status the node cannot know, such as the peer ID,
// listen addresses and connected peers. GET /status calls it once per
// request and merges the fields it returns into its answer; the node's own
// fields win on a name clash. It must be safe for concurrent use and its
// values must encode as JSON.
type StatusFunc func() map[string]any

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// MaxBodyBytes bounds a request body, in bytes; a larger one is
	// refused with 413 before it is read in full. Default 1 MiB. Raising it
	// lets a gossip transport post bigger batches of deltas (one delta may
	// be up to crdt.MaxDeltaBytes in binary form, and many times that as JSON
	// when it names many dots),
	// at the cost of that much memory per concurrent request.
	MaxBodyBytes int64
	// MaxStateBytes bounds the body of POST /crdt/state, a full-state
	// stream; a larger one is refused with 413. The node copies the body
	// to a temporary file (not memory) while checking it, and its own
	// node.Config.MaxStateBytes applies too. Default 1 GiB.
	MaxStateBytes int64
	// Token, when not empty, is the bearer token that requests must carry
	// ("Authorization: Bearer <Token>"). It is compared in constant time.
	// Default "": no token is required.
	Token string
	// TokenForReads requires the token on GET and HEAD too (except
	// /healthz and /readyz). Default false: reads are open, writes need it.
	TokenForReads bool
	// Logger receives server errors (status 500 and panics) at error level
	// and one line per request at debug level. Default slog.Default().
	Logger *slog.Logger
	// Status adds fields to GET /status. Default nil: none.
	Status StatusFunc
	// Registry is where the server registers its metrics, served at
	// /metrics. Default nil: a new registry that also holds the Go runtime
	// and process collectors. Registering twice on one registry fails.
	Registry *prometheus.Registry

	// ReadHeaderTimeout bounds reading a request's headers, in the
	// http.Server from HTTPServer. Default 10s.
	ReadHeaderTimeout time.Duration
	// BodyTimeout bounds reading a request body: ServeHTTP sets it as the
	// connection's read deadline when the request reaches the handler, and
	// a body not received by then is answered 408 and its connection
	// closed. POST /crdt/state moves it BodyTimeout ahead each time
	// another MiB arrives, so a large full state that keeps coming at a
	// MiB per BodyTimeout or faster takes as long as it needs. Default
	// 30s. Shorter frees the connections of stalled senders sooner;
	// longer admits slower links.
	BodyTimeout time.Duration
	// WriteTimeout bounds writing a response: ServeHTTP sets it as the
	// connection's write deadline when the handler starts its response
	// (and the http.Server from HTTPServer for what net/http writes
	// itself). GET /crdt/state moves it WriteTimeout ahead before each
	// write of its stream, so the stream lasts as long as the client keeps
	// reading it. Default 30s. A client reading slower than that is cut
	// off.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its
	// next request, in the http.Server from HTTPServer. Default 60s.
	IdleTimeout time.Duration
	// MaxConns bounds the connections open at once through LimitListener;
	// further clients wait to be accepted. Default 1024. Keep it well below
	// the process's file descriptor limit, which the store and the peer's
	// connections share; each connection costs a file descriptor and a
	// goroutine with its buffers.
	MaxConns int
	// MaxWatchers bounds the GET /catalog/watch streams open at once;
	// one more is answered 503 with Retry-After. Each holds a connection
	// (counted in MaxConns, so keep it well below) and a goroutine.
	// Default 256.
	MaxWatchers int
	// WatchHeartbeat is how long a watch stream stays silent before it
	// sends a heartbeat. Default 15s.
	WatchHeartbeat time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:      1 << 20,
		MaxStateBytes:     1 << 30,
		Logger:            slog.Default(),
		ReadHeaderTimeout: 10 * time.Second,
		BodyTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxConns:          1024,
		MaxWatchers:       256,
		WatchHeartbeat:    15 * time.Second,
	}
}

func (c *Config) validate() error {
	d := DefaultConfig()
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("httpapi config: MaxBodyBytes must not be negative, got %d", c.MaxBodyBytes)
	}
	if c.MaxStateBytes == 0 {
		c.MaxStateBytes = d.MaxStateBytes
	}
	if c.MaxStateBytes < 0 {
		return fmt.Errorf("httpapi config: MaxStateBytes must not be negative, got %d", c.MaxStateBytes)
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	for _, t := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ReadHeaderTimeout", &c.ReadHeaderTimeout, d.ReadHeaderTimeout},
		{"BodyTimeout", &c.BodyTimeout, d.BodyTimeout},
		{"WriteTimeout", &c.WriteTimeout, d.WriteTimeout},
		{"IdleTimeout", &c.IdleTimeout, d.IdleTimeout},
		{"WatchHeartbeat", &c.WatchHeartbeat, d.WatchHeartbeat},
	} {
		if *t.v == 0 {
			*t.v = t.def
		}
		if *t.v < 0 {
			return fmt.Errorf("httpapi config: %s must be positive, got %v", t.name, *t.v)
		}
	}
	if c.MaxConns == 0 {
		c.MaxConns = d.MaxConns
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("httpapi config: MaxConns must be positive, got %d", c.MaxConns)
	}
	if c.MaxWatchers == 0 {
		c.MaxWatchers = d.MaxWatchers
	}
	if c.MaxWatchers < 0 {
		return fmt.Errorf("httpapi config: MaxWatchers must be positive, got %d", c.MaxWatchers)
	}
	if c.TokenForReads && c.Token == "" {
		return errors.New("httpapi config: TokenForReads is set but Token is empty")
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
		if err := c.Registry.Register(collectors.NewGoCollector()); err != nil {
			return fmt.Errorf("httpapi: register Go collector: %w", err)
		}
		if err := c.Registry.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return fmt.Errorf("httpapi: register process collector: %w", err)
		}
	}
	return nil
}

// reservedNames are first path segments that a collection may not take:
// its item route GET /{name}/{id} would hide ids ("query", "delta") or the
// fixed routes would shadow its items.
var reservedNames = []string{"catalog", "crdt", "status", "healthz", "readyz", "metrics"}

// Server is the HTTP handler of the API. It is safe for concurrent use.
// Besides serving, it can be marked as closing (SetClosing) during a
// graceful shutdown.
type Server struct {
	c        Catalog
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	colls    map[string]bool
	patterns map[string]bool // every pattern registered on mux
	tokenSum [sha256.Size]byte
	closing  atomic.Bool
	metrics  *httpMetrics
	conns    atomic.Int64 // connections open through LimitListener
	watchers atomic.Int64 // open watch streams
	// stopWatches is closed while the server is closing: it ends the
	// watch streams (see watch.go).
	stopMu      sync.Mutex
	stopWatches chan struct{}
	// groups are the watch groups by key (see watchgroup.go).
	groupsMu sync.Mutex
	groups   map[string]*watchGroup
	// pageBytes bounds the JSON of a GET /crdt/delta page:
	// maxDeltaPageBytes, lower in tests.
	pageBytes int
	// groupRing bounds a watch group's messages: groupRing, lower in
	// tests.
	groupRing int
}

var _ http.Handler = (*Server)(nil)

// New returns the API over c, configured by cfg (zero fields take their
// defaults). It fails if cfg is invalid, if a collection of c is named like
// a fixed route (catalog, crdt, status, healthz, readyz, metrics) or is
// listed twice, or if the metrics cannot be registered on cfg.Registry.
// The routes are fixed at New from c.Collections().
func New(c Catalog, cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		pageBytes: maxDeltaPageBytes,
		groupRing: groupRing,
		c:         c,
		cfg:       cfg,
		log:       cfg.Logger,
		mux:       http.NewServeMux(),
		colls:     map[string]bool{},
		patterns:  map[string]bool{},
		tokenSum:  sha256.Sum256([]byte(cfg.Token)),

		stopWatches: make(chan struct{}),
		groups:      map[string]*watchGroup{},
	}
	for _, name := range c.Collections() {
		if err := crdt.ValidateCollection(name); err != nil {
			return nil, fmt.Errorf("httpapi: collection: %w", err)
		}
		if name == "." || name == ".." || slices.Contains(reservedNames, name) {
			return nil, fmt.Errorf("httpapi: collection %q clashes with a fixed route", name)
		}
		if s.colls[name] {
			return nil, fmt.Errorf("httpapi: collection %q listed twice", name)
		}
		s.colls[name] = true
	}
	m, err := newHTTPMetrics(cfg.Registry, c, &s.conns, cfg.MaxConns)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.routes()
	return s, nil
}

// route is one method on one path pattern.
type route struct {
	method, path string
	h            http.Handler
}

// routes registers every route, a method-less fallback per path that
// answers 405 with Allow, and a catch-all that answers 404, so that the
// mux never writes its own plain-text errors.
func (s *Server) routes() {
	var rs, batches []route
	add := func(method, path string, h handlerFunc) {
		rs = append(rs, route{method, path, s.wrap(h)})
	}
	for _, coll := range s.c.Collections() {
		add(http.MethodPost, "/"+coll+"/add/{id}", s.handleAdd(coll))
		add(http.MethodDelete, "/"+coll+"/remove/{id}", s.handleRemove(coll))
		add(http.MethodPut, "/"+coll+"/metadata/{id}", s.handleReplace(coll))
		add(http.MethodPatch, "/"+coll+"/metadata/{id}", s.handlePatch(coll))
		add(http.MethodGet, "/"+coll+"/{id}", s.handleGet(coll))
		// No method-less fallback for this path: it would answer 405 to
		// GET /{collection}/batch, the item whose id is "batch".
		batches = append(batches, route{http.MethodPost, "/" + coll + "/batch", s.wrap(s.handleBatch(coll))})
	}
	add(http.MethodGet, "/catalog/query", s.handleQuery)
	s.indexRoutes(add)
	add(http.MethodGet, "/catalog/watch", s.handleWatch)
	add(http.MethodGet, "/crdt/delta", s.handleGetDeltas)
	add(http.MethodPost, "/crdt/delta", s.handleApplyDeltas)
	add(http.MethodPost, "/crdt/delta/clear", s.handleClearDeltas)
	add(http.MethodGet, "/crdt/state", s.handleExportState)
	add(http.MethodPost, "/crdt/state", s.handleImportState)
	add(http.MethodGet, "/status", s.handleStatus)
	add(http.MethodGet, "/healthz", s.handleHealthz)
	add(http.MethodGet, "/readyz", s.handleReadyz)
	rs = append(rs, route{http.MethodGet, "/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	})})

	allow := map[string][]string{}
	var paths []string
	for _, r := range rs {
		p := r.method + " " + r.path
		s.mux.Handle(p, r.h)
		s.patterns[p] = true
		if _, ok := allow[r.path]; !ok {
			paths = append(paths, r.path)
		}
		allow[r.path] = append(allow[r.path], r.method)
		if r.method == http.MethodGet {
			allow[r.path] = append(allow[r.path], http.MethodHead)
		}
	}
	for _, p := range paths {
		s.mux.Handle(p, s.wrap(methodNotAllowed(strings.Join(allow[p], ", "))))
		s.patterns[p] = true
	}
	for _, r := range batches {
		p := r.method + " " + r.path
		s.mux.Handle(p, r.h)
		s.patterns[p] = true
	}
	s.mux.Handle("/", s.wrap(s.notFound))
	s.patterns["/"] = true
}

// SetClosing marks the API as closing (true) or serving (false). While
// closing, every request except GET /healthz and GET /metrics gets 503,
// /readyz included, so that a load balancer stops sending traffic while
// in-flight requests finish; watch streams end at once (with a message
// saying where to resume). Safe for concurrent use.
func (s *Server) SetClosing(closing bool) {
	s.closing.Store(closing)
	s.endWatches(closing)
}

// Registry returns the registry the server's metrics are registered on:
// Config.Registry, or the one New created.
func (s *Server) Registry() *prometheus.Registry { return s.cfg.Registry }

// ServeHTTP serves one request: metrics and panic recovery around the
// closing check, authentication and the routes. A request body is read
// under Config.BodyTimeout, and only once the request is admitted: a
// request refused before its body is read (a missing token, say) is
// answered at once and its connection closed, without waiting for the
// body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	_, pattern := s.mux.Handler(r)
	if !s.patterns[pattern] {
		pattern = "other" // a redirect of an unclean path, or similar
	}
	if hasBody(r) {
		var step int64
		if pattern == "POST /crdt/state" {
			step = stateProgressBytes
		}
		body := newTrackedBody(w, r, s.cfg.BodyTimeout, step)
		defer body.abandon()
		r2 := new(http.Request)
		*r2 = *r
		r2.Body = body
		r = r2
	}
	rec := &recorder{ResponseWriter: w, writeTimeout: s.cfg.WriteTimeout}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				// A response cut short on purpose (GET /crdt/state
				// failing midway): count it, then let net/http drop
				// the connection.
				s.metrics.observe(pattern, rec.status(), time.Since(start))
				panic(v)
			}
			s.log.Error("http handler panic", "method", r.Method, "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
			if !rec.wrote {
				s.writeJSON(rec, r, http.StatusInternalServerError, errorBody{"internal error"})
			}
		}
		took := time.Since(start)
		s.metrics.observe(pattern, rec.status(), took)
		s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "route", pattern, "status", rec.status(), "took", took)
	}()
	if err := s.admit(r, pattern); err != nil {
		s.writeError(rec, r, err)
		return
	}
	s.mux.ServeHTTP(rec, r)
}

// admit decides whether a request may reach its route: not while closing
// (except liveness and metrics), and not without the token where one is
// required.
func (s *Server) admit(r *http.Request, pattern string) error {
	// /readyz itself answers 503 while closing.
	probe := pattern == "GET /healthz" || pattern == "GET /readyz"
	if s.closing.Load() && !probe && pattern != "GET /metrics" {
		return errClosing
	}
	if s.cfg.Token == "" || probe {
		return nil
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if read && !s.cfg.TokenForReads {
		return nil
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return errNoToken
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	if subtle.ConstantTimeCompare(sum[:], s.tokenSum[:]) != 1 {
		return errBadToken
	}
	return nil
}

// recorder remembers the status written through it. When the handler
// starts its response, it moves the write deadline writeTimeout ahead, so
// that WriteTimeout bounds writing the response, not the time the handler
// took to read the body and compute it (a full-state upload, say).
type recorder struct {
	http.ResponseWriter
	code         int
	wrote        bool
	writeTimeout time.Duration
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote {
		w.start(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.wrote {
		w.start(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *recorder) start(code int) {
	w.code, w.wrote = code, true
	if w.writeTimeout > 0 {
		// A writer without deadlines (a test recorder) writes without.
		_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(time.Now().Add(w.writeTimeout))
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) status() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.code
}
