package testnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the client process of the scenarios: real,
// separate processes whose pid and comm the tracer must name.

const helperEnv = "TWTRACE_TEST_CLIENT"

// ClientComm is every client's comm, set with PR_SET_NAME.
const ClientComm = "twt-client"

func init() {
	// Keep main on the main thread so PR_SET_NAME names the thread that
	// makes every socket call.
	runtime.LockOSThread()
}

// RunClientIfAsked must be the first call of the TestMain of a package that
// uses StartClient: in the re-executed test binary it runs the client and exits.
func RunClientIfAsked() {
	if k := os.Getenv(poolEnv); k != "" {
		n, _ := strconv.Atoi(k)
		os.Exit(runPool(n))
	}
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(runClient(spec))
	}
}

// ClientSpec tells a client process what to do.
type ClientSpec struct {
	Mode string // connect, bind
	// Comm names the process (PR_SET_NAME); default ClientComm. Up to 15 bytes.
	Comm string
	// Dest is the server; a v4-mapped address is dialled from an AF_INET6 socket.
	Dest string
	N    int
	// How each connection ends.
	Shutdown  bool // shutdown(SHUT_WR), read to EOF, then close
	ReadFirst bool // read to EOF (the server closes first), then close
	Linger0   bool // SO_LINGER {1,0}: close with RST
	// FillAndExit: write until the send buffer is full, close and exit at
	// once, so the FIN leaves (and timewait begins) after the process is gone.
	FillAndExit bool
	// Hold keeps every connection open until all N are made, then closes
	// them in the order they were made.
	Hold bool
	// Requests sends this many 100-byte messages on each connection,
	// PauseMs apart, before closing it: a pooled client's one long
	// connection.
	Requests int
	PauseMs  int
	// IOUring connects through io_uring (IORING_OP_CONNECT) instead of
	// connect(2).
	IOUring bool
	// IOUringAsync also sets IOSQE_ASYNC: each connect runs in an io-wq
	// worker.
	IOUringAsync bool
	// Rename names the process Comm followed by the connection's number
	// (PR_SET_NAME) before each connection: one process, as many names
	// as connections.
	Rename bool
	// Dests, when set, are dialled in turn (connection i toward
	// Dests[i%len(Dests)]) instead of Dest; not with IOUring.
	Dests []string
	// NetDial makes the N connections with Go's net.Dial from one
	// function (DialCallSite), each closed at once by the client.
	NetDial bool
	// HTTPGets, when set, makes that many GETs of Dest (an HTTPServer)
	// through Go's default HTTP client, HTTPConcurrency at a time,
	// instead of N connections.
	HTTPGets, HTTPConcurrency int
	// HTTPPauseMs pauses the HTTP client this long after its first GET
	// (whose connection it closes), as a service does between its first
	// request and its load; with HTTPWaitFile, until that file exists
	// instead (at most 30 s).
	HTTPPauseMs  int
	HTTPWaitFile string
}

// ClientResult is what the client reports on stdout.
type ClientResult struct {
	PID      int
	Ports    []int // local ports of connections that were made
	Failures int   // EADDRNOTAVAIL from connect or EADDRINUSE from bind
	Refused  int   // ECONNREFUSED from connect (no listener)
	// Unreachable counts ENETUNREACH from connect (no route).
	Unreachable int
	// Workers are the client's io-wq worker threads (comm iou-wrk-TID)
	// when its last connect completed: none where the kernel runs io-wq
	// workers as kernel threads (before 5.12).
	Workers []int
}

func runClient(raw string) int {
	var spec ClientSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	comm := spec.Comm
	if comm == "" {
		comm = ClientComm
	}
	if err := setComm(comm); err != nil {
		fmt.Fprintln(os.Stderr, "prctl:", err)
		return 2
	}
	res, err := clientRun(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res.PID = os.Getpid()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// setComm names the calling thread (the process's, on the main thread).
func setComm(comm string) error {
	return unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&append([]byte(comm), 0)[0])), 0, 0, 0)
}

func sockaddrOf(ap netip.AddrPort) (unix.Sockaddr, int) {
	a := ap.Addr()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}, unix.AF_INET
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}, unix.AF_INET6
}

func clientRun(spec ClientSpec) (*ClientResult, error) {
	switch {
	case spec.NetDial:
		return netDialRun(spec)
	case spec.HTTPGets > 0:
		return httpRun(spec)
	}
	if spec.Dest == "" && len(spec.Dests) > 0 {
		spec.Dest = spec.Dests[0]
	}
	dest, err := netip.ParseAddrPort(spec.Dest)
	if err != nil {
		return nil, err
	}
	sa, family := sockaddrOf(dest)
	targets := make([]unix.Sockaddr, len(spec.Dests))
	for i, d := range spec.Dests {
		ap, err := netip.ParseAddrPort(d)
		if err != nil {
			return nil, err
		}
		targets[i], _ = sockaddrOf(ap)
	}
	res := &ClientResult{Ports: []int{}}
	var keep []int // bind mode and Hold keep their sockets until the end
	defer func() {
		for _, fd := range keep {
			unix.Close(fd)
		}
	}()
	connect := func(fd int) error { return unix.Connect(fd, sa) }
	if spec.IOUring {
		ring, err := newUring()
		if err != nil {
			return nil, err
		}
		defer ring.Close()
		ring.async = spec.IOUringAsync
		connect = func(fd int) error {
			err := ring.connect(fd, dest)
			res.Workers = ioWorkers()
			return err
		}
	}
	for i := 0; i < spec.N; i++ {
		if len(targets) > 0 {
			sa = targets[i%len(targets)]
		}
		if spec.Rename {
			name := spec.Comm + strconv.Itoa(i)
			if err := setComm(name[:min(len(name), 15)]); err != nil {
				return nil, err
			}
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("socket: %w", err)
		}
		if spec.Mode == "bind" {
			ok, err := clientBind(fd, dest.Addr(), family, res)
			if err != nil {
				return nil, err
			}
			if ok {
				keep = append(keep, fd)
			}
			continue
		}
		if err := connect(fd); err != nil {
			unix.Close(fd)
			if countConnectError(err, res) {
				continue
			}
			return nil, fmt.Errorf("connect: %w", err)
		}
		if err := clientConnected(fd, spec, res); err != nil {
			return nil, err
		}
		if spec.Hold {
			keep = append(keep, fd)
			continue
		}
		unix.Close(fd)
	}
	return res, nil
}

// clientBind binds fd to port 0 of addr: ok when it got a port, a
// failure counted (and fd closed) when the range is exhausted.
func clientBind(fd int, addr netip.Addr, family int, res *ClientResult) (ok bool, err error) {
	var bsa unix.Sockaddr = &unix.SockaddrInet4{Addr: addr.As4()}
	if family == unix.AF_INET6 {
		bsa = &unix.SockaddrInet6{Addr: addr.As16()}
	}
	if err := unix.Bind(fd, bsa); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			res.Failures++
			return false, nil
		}
		return false, fmt.Errorf("bind: %w", err)
	}
	return true, nil
}

// countConnectError counts the connect() failures a test provokes on
// purpose; any other is the client's failure.
func countConnectError(err error, res *ClientResult) bool {
	switch {
	case errors.Is(err, unix.EADDRNOTAVAIL):
		res.Failures++
	case errors.Is(err, unix.ECONNREFUSED):
		res.Refused++
	case errors.Is(err, unix.ENETUNREACH):
		res.Unreachable++
	default:
		return false
	}
	return true
}

// clientConnected records fd's source port, sends the requests, and
// closes the way spec says (the caller closes fd, or keeps it).
func clientConnected(fd int, spec ClientSpec, res *ClientResult) error {
	local, err := unix.Getsockname(fd)
	if err != nil {
		return err
	}
	switch l := local.(type) {
	case *unix.SockaddrInet4:
		res.Ports = append(res.Ports, l.Port)
	case *unix.SockaddrInet6:
		res.Ports = append(res.Ports, l.Port)
	}
	for r := 0; r < spec.Requests; r++ {
		if r > 0 {
			time.Sleep(time.Duration(spec.PauseMs) * time.Millisecond)
		}
		if _, err := unix.Write(fd, make([]byte, 100)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	switch {
	case spec.Linger0:
		return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	case spec.Shutdown:
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return err
		}
		readToEOF(fd)
	case spec.ReadFirst:
		readToEOF(fd)
	case spec.FillAndExit:
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		buf := make([]byte, 64<<10)
		for {
			if _, err := unix.Write(fd, buf); err != nil {
				break
			}
		}
	}
	return nil
}

func readToEOF(fd int) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			return
		}
	}
}

// StartClient runs a client process inside ns and returns once it has
// exited, with its report.
func StartClient(t *testing.T, ns *Netns, spec ClientSpec) *ClientResult {
	t.Helper()
	res, err := RunClient(ns.Path(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// RunClient is StartClient for a goroutine other than the test's: it
// returns the failure instead of failing the test.
func RunClient(nsPath string, spec ClientSpec) (*ClientResult, error) {
	raw, _ := json.Marshal(spec)
	var out []byte
	err := InNetns(nsPath, func() error {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"="+string(raw))
		cmd.Stderr = os.Stderr
		var err error
		out, err = cmd.Output()
		if err != nil {
			return fmt.Errorf("client %+v: %w", spec, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var res ClientResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("client output %q: %w", out, err)
	}
	return &res, nil
}

// WaitFor polls cond every 10 ms until it holds or the budget runs out.
// The budget only bounds a failing test; nothing here asserts speed.
func WaitFor(budget time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(budget)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}

// ServerMode is how a Server treats each accepted connection.
type ServerMode int

const (
	ServerReadEOF    ServerMode = iota // read to EOF, then close: the client closed first
	ServerCloseFirst                   // write a byte and close at once
	ServerHold                         // keep until Release, then read to EOF and close
	// ServerAfterTen reads ten 100-byte requests (a pooled client's:
	// ClientSpec{Requests: 10}), then closes first, as a keep-alive
	// server closing an idle connection: the timewait is the server's.
	ServerAfterTen
	// ServerHoldRST keeps each connection until Release, then closes it
	// with an RST (SO_LINGER 0).
	ServerHoldRST
)

// Server is a TCP server inside a namespace, run by the test process.
type Server struct {
	Addr    netip.AddrPort
	ln      net.Listener
	release chan struct{}
	wg      sync.WaitGroup
}

// Tests narrow connect()'s port range to ports inside these, after their
// servers listen; a server's listener there would take one of them (seen:
// 93 usable ports of 94).
const testRangeLo, testRangeHi = 40000, 41999

// StartServer listens inside ns on ip ("127.0.0.1", "::1", ...), on a port
// the kernel picks: outside testRangeLo-testRangeHi unless the namespace's
// range is already inside it (then the test wants a port from its range).
func StartServer(t testing.TB, ns *Netns, ip string, mode ServerMode) *Server {
	t.Helper()
	s := &Server{release: make(chan struct{})}
	ns.Do(t, func() error {
		var lo, hi int
		raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
		if err != nil {
			return err
		}
		if _, err := fmt.Sscan(string(raw), &lo, &hi); err != nil {
			return fmt.Errorf("ip_local_port_range %q: %w", raw, err)
		}
		narrowed := lo >= testRangeLo && hi <= testRangeHi
		// Listeners on rejected ports stay open until one fits, so the
		// kernel does not hand the same port out again.
		var rejected []net.Listener
		defer func() {
			for _, l := range rejected {
				l.Close()
			}
		}()
		for {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
			if err != nil {
				return err
			}
			if p := ln.Addr().(*net.TCPAddr).Port; narrowed || p < testRangeLo || p > testRangeHi {
				s.ln = ln
				return nil
			}
			rejected = append(rejected, ln)
		}
	})
	s.Addr = s.ln.Addr().(*net.TCPAddr).AddrPort()
	go func() {
		for {
			conn, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer conn.Close()
				switch mode {
				case ServerReadEOF:
					io.Copy(io.Discard, conn)
				case ServerCloseFirst:
					conn.Write([]byte{'x'})
				case ServerHold:
					<-s.release
					io.Copy(io.Discard, conn)
				case ServerAfterTen:
					io.ReadFull(conn, make([]byte, 1000))
				case ServerHoldRST:
					<-s.release
					conn.(*net.TCPConn).SetLinger(0)
				}
			}()
		}
	}()
	t.Cleanup(func() { s.ln.Close() })
	return s
}

// Release lets held connections finish.
func (s *Server) Release() { close(s.release) }

// Stop closes the listener and waits for every connection to finish.
func (s *Server) Stop() {
	s.ln.Close()
	s.wg.Wait()
}

// Dest is the server's address as a client dials it; mapped dials an IPv4
// server through an AF_INET6 socket with a v4-mapped address.
func (s *Server) Dest(mapped bool) string {
	if mapped {
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr.Addr().As16()), s.Addr.Port()).String()
	}
	return s.Addr.String()
}

// ioWorkers lists this process's io-wq worker threads.
func ioWorkers() []int {
	var tids []int
	dir, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	for _, d := range dir {
		comm, err := os.ReadFile("/proc/self/task/" + d.Name() + "/comm")
		if err != nil || !strings.HasPrefix(string(comm), "iou-wrk-") {
			continue
		}
		if tid, err := strconv.Atoi(d.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}
