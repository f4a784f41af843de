package testnet

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// openPerRequest dials dest with the net package, as a Go program that
// opens a connection per request does: the call site tests name
// (DialCallSite). The net.Dial call must stay its first statement.
func openPerRequest(dest string) (*net.TCPConn, error) {
	c, err := net.Dial("tcp", dest)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// DialCallSite is where a NetDial client calls net.Dial: the function and
// the file:line as the test binary's own tables give them.
func DialCallSite() (function, file string, line int) {
	f := runtime.FuncForPC(reflect.ValueOf(openPerRequest).Pointer())
	file, line = f.FileLine(f.Entry())
	return f.Name(), file, line + 1
}

// netDialRun is clientRun for NetDial: N connections through
// openPerRequest, each closed by the client at once.
func netDialRun(spec ClientSpec) (*ClientResult, error) {
	res := &ClientResult{Ports: []int{}}
	for range spec.N {
		c, err := openPerRequest(spec.Dest)
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		res.Ports = append(res.Ports, c.LocalAddr().(*net.TCPAddr).Port)
		c.Close()
	}
	return res, nil
}

// httpRun is clientRun for HTTPGets: that many GETs of Dest through Go's
// default HTTP client, HTTPConcurrency at a time. The default transport
// keeps 2 idle connections per host: the rest are closed by the client
// after each burst, a connection per request. Ports are those of the
// connections made (not reused).
func httpRun(spec ClientSpec) (*ClientResult, error) {
	res := &ClientResult{Ports: []int{}}
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if !info.Reused {
			mu.Lock()
			res.Ports = append(res.Ports, info.Conn.LocalAddr().(*net.TCPAddr).Port)
			mu.Unlock()
		}
	}}
	url := "http://" + spec.Dest + "/"
	if (spec.HTTPPauseMs > 0 || spec.HTTPWaitFile != "") && spec.HTTPGets > 0 {
		if err := get(url, trace); err != nil {
			return nil, err
		}
		spec.HTTPGets--
		// Its connection ends now: what twtrace learnt of it shows.
		http.DefaultClient.CloseIdleConnections()
		if spec.HTTPWaitFile == "" {
			time.Sleep(time.Duration(spec.HTTPPauseMs) * time.Millisecond)
		} else if !WaitFor(30*time.Second, func() bool { _, err := os.Stat(spec.HTTPWaitFile); return err == nil }) {
			return nil, fmt.Errorf("%s did not appear", spec.HTTPWaitFile)
		}
	}
	work := make(chan struct{})
	errs := make(chan error, spec.HTTPGets)
	var wg sync.WaitGroup
	for range max(spec.HTTPConcurrency, 1) {
		wg.Go(func() {
			for range work {
				errs <- get(url, trace)
			}
		})
	}
	for range spec.HTTPGets {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	http.DefaultClient.CloseIdleConnections()
	return res, nil
}

// get makes one GET through Go's default client and reads the body to
// EOF: the call site the tests name (HTTPCallSite). The Do call must stay
// its first statement.
func get(url string, trace *httptrace.ClientTrace) error {
	resp, err := http.DefaultClient.Do(newGet(url, trace))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

func newGet(url string, trace *httptrace.ClientTrace) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		panic(err) // the client's own URL
	}
	return req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
}

// HTTPCallSite is where an HTTPGets client asks net/http for a response
// (the caller of its dials): the function and the file:line as the test
// binary's own tables give them.
func HTTPCallSite() (function, file string, line int) {
	f := runtime.FuncForPC(reflect.ValueOf(get).Pointer())
	file, line = f.FileLine(f.Entry())
	return f.Name(), file, line + 1
}

// HTTPServer is an HTTP server in a namespace, answering every request
// with 100 bytes and keeping connections alive.
type HTTPServer struct {
	Addr string
}

// StartHTTPServer listens on 127.0.0.1 in ns on a port outside the test
// range (see StartServer).
func StartHTTPServer(t testing.TB, ns *Netns) *HTTPServer {
	t.Helper()
	return StartHTTPServerDelay(t, ns, 0, 0)
}

// StartHTTPServerDelay is StartHTTPServer answering its first n requests
// after delay: until then no connection of a client comes free, so every
// request it queues meanwhile dials. (Delaying every answer would have
// the freed connections handed to queued requests: fewer dials.)
func StartHTTPServerDelay(t testing.TB, ns *Netns, n int64, delay time.Duration) *HTTPServer {
	t.Helper()
	var answered atomic.Int64
	s := StartServer(t, ns, "127.0.0.1", ServerHold) // its listener only
	s.ln.Close()
	var ln net.Listener
	ns.Do(t, func() error {
		var err error
		ln, err = net.Listen("tcp", s.Addr.String())
		return err
	})
	body := make([]byte, 100)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if answered.Add(1) <= n {
			time.Sleep(delay)
		}
		w.Write(body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &HTTPServer{Addr: s.Addr.String()}
}
