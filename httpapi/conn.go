package httpapi

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Hostile or broken clients hold connections in three ways, each bounded
// here: headers that trickle in (Config.ReadHeaderTimeout, by the
// http.Server from HTTPServer), bodies that trickle in (Config.BodyTimeout,
// a read deadline ServeHTTP sets per request) and responses read slowly
// or not at all (Config.WriteTimeout). Config.MaxConns caps how many
// connections are open at once (LimitListener), so that however many
// clients try, the process keeps file descriptors for its store and its
// peers, and a connection freed by a deadline goes to the next client in
// the kernel's accept queue.

// stateProgressBytes is how much of a POST /crdt/state body must arrive to
// move its read deadline BodyTimeout ahead again.
const stateProgressBytes = 1 << 20

// HTTPServer returns an http.Server that serves s with the header, write
// and idle timeouts of s's Config; errorLog, if not nil, receives
// net/http's own errors. Serve it on a listener from LimitListener. The
// body deadline is not the server's: ServeHTTP sets it per request.
func (s *Server) HTTPServer(errorLog *log.Logger) *http.Server {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		// ReadTimeout stays 0: it would also cover reading the body, which
		// ServeHTTP bounds per route, and when it expires while a handler
		// runs, net/http cancels the request's context.
		WriteTimeout: s.cfg.WriteTimeout,
		IdleTimeout:  s.cfg.IdleTimeout,
		ErrorLog:     errorLog,
	}
	// Shutdown waits for handlers to return: end the watch streams.
	srv.RegisterOnShutdown(func() { s.endWatches(true) })
	return srv
}

// LimitListener returns ln limited to Config.MaxConns open connections:
// at the limit, Accept waits until one closes, and further clients wait
// in the kernel's accept queue. Closing the returned listener closes ln
// and ends a waiting Accept. The open connections are exported as the
// catalog_http_open_connections gauge. Use one per Server.
func (s *Server) LimitListener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, s.cfg.MaxConns), done: make(chan struct{}), open: &s.conns}
}

// limitListener is a net.Listener with at most cap(sem) open connections.
type limitListener struct {
	net.Listener
	sem  chan struct{} // one token per open connection
	done chan struct{} // closed by Close
	once sync.Once
	open *atomic.Int64
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.open.Add(1)
	return &limitConn{Conn: c, l: l}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its token back once, when closed.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		<-c.l.sem
	})
	return err
}

// hasBody reports whether r may carry a body.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// trackedBody is a request body under a read deadline: it notes when the
// body has been read to its end, and then lifts the deadline, so that it
// cannot fire during a long handler (net/http would cancel the request's
// context). With step > 0, the deadline moves timeout ahead each time
// another step bytes have arrived. It is read by the handler's goroutine
// only.
type trackedBody struct {
	io.ReadCloser
	ctl     *http.ResponseController
	timeout time.Duration
	step    int64
	got     int64 // bytes since the deadline last moved
	eof     bool
}

// newTrackedBody wraps r's body and sets its first deadline.
func newTrackedBody(w http.ResponseWriter, r *http.Request, timeout time.Duration, step int64) *trackedBody {
	b := &trackedBody{ReadCloser: r.Body, ctl: http.NewResponseController(w), timeout: timeout, step: step}
	// A writer without deadlines (a test recorder) serves without them.
	_ = b.ctl.SetReadDeadline(time.Now().Add(timeout))
	return b
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		_ = b.ctl.SetReadDeadline(time.Time{})
	case b.step > 0 && n > 0:
		if b.got += int64(n); b.got >= b.step {
			b.got = 0
			_ = b.ctl.SetReadDeadline(time.Now().Add(b.timeout))
		}
	}
	return n, err
}

// abandon makes net/http give up the rest of a body the handler did not
// read, instead of reading up to 256 KiB of it to keep the connection
// (which a slow sender would make last until the deadline): the read
// fails at once and the connection closes after the response.
func (b *trackedBody) abandon() {
	if !b.eof {
		_ = b.ctl.SetReadDeadline(time.Now())
	}
}

// unread reports whether r has a body that was not read to its end.
func unread(r *http.Request) bool {
	b, ok := r.Body.(*trackedBody)
	return ok && !b.eof
}

// bodyError turns a failure to read a request body into the error to
// answer: a body that stopped arriving before its deadline is a 408, a
// broken one a 400, and the body limit stays a MaxBytesError (413).
func bodyError(err error) error {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return &httpError{http.StatusRequestTimeout, "request body not received in time"}
	}
	return badRequest("read request body: %v", err)
}

// deadlineWriter moves the write deadline timeout ahead before every
// write, for a response streamed for as long as the client keeps reading
// it (GET /crdt/state).
type deadlineWriter struct {
	w       io.Writer
	ctl     *http.ResponseController
	timeout time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.ctl.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
}
