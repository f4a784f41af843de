// Package testnet gives privileged tests real network namespaces and real
// client processes: the kernel behaviour under test is never mocked.
package testnet

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/load"
)

// Netns is a private network namespace with only loopback, up.
type Netns struct {
	file *os.File
	// Inode identifies the namespace, as twtrace reports it.
	Inode uint32
}

// New creates a namespace that lives until the test ends.
func New(t testing.TB) *Netns {
	t.Helper()
	type result struct {
		ns  *Netns
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, now in another namespace, dies with
		// this goroutine instead of going back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("unshare(CLONE_NEWNET): %w", err)}
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			ch <- result{err: err}
			return
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			ch <- result{err: err}
			return
		}
		if err := load.LoopbackUp(); err != nil {
			f.Close()
			ch <- result{err: err}
			return
		}
		ch <- result{ns: &Netns{file: f, Inode: uint32(st.Ino)}}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("creating network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.file.Close() })
	return r.ns
}

// Do runs fn on an OS thread inside the namespace. Sockets, sysctl writes
// and child processes started by fn belong to the namespace.
func (n *Netns) Do(t testing.TB, fn func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(n.file.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// Sysctl sets a net.* sysctl of the namespace, e.g. "ipv4/tcp_tw_reuse".
func (n *Netns) Sysctl(t testing.TB, name, value string) {
	t.Helper()
	n.Do(t, func() error {
		return os.WriteFile("/proc/sys/net/"+name, []byte(value), 0o644)
	})
}

// Park keeps an OS thread of the test process inside the namespace until
// the test ends, so that /proc/PID/task/TID/ns/net leads to it: otherwise
// only an open file holds the namespace, and twtrace (like ip netns and
// every /proc walker) finds namespaces through processes and bind mounts.
func (n *Netns) Park(t testing.TB) {
	t.Helper()
	release := make(chan struct{})
	in := make(chan struct{})
	go n.Do(t, func() error {
		close(in)
		<-release
		return nil
	})
	<-in
	t.Cleanup(func() { close(release) })
}

// Path names the namespace for another process (a container runtime
// joining it): this process's descriptor of it.
func (n *Netns) Path() string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), n.file.Fd())
}

// TCPListing is the namespace's /proc/net/tcp as the kernel prints it now
// (states in hex, timers, queues): for a failed test's message.
func (n *Netns) TCPListing(t testing.TB) string {
	t.Helper()
	var b []byte
	n.Do(t, func() error {
		var err error
		b, err = os.ReadFile("/proc/thread-self/net/tcp")
		return err
	})
	return string(b)
}

// TCPSocket is one line of /proc/net/tcp: a full socket or a timewait
// one. A timewait socket prints its substate (FIN_WAIT2 or TIME_WAIT) as
// its state, like a full socket in that state; its timer (3) tells them
// apart.
type TCPSocket struct {
	LocalPort, RemotePort uint16
	State                 uint8 // the kernel's TCP_* number
	Timer                 uint8 // 3: a timewait socket's timer
}

// Timewait says whether s is a timewait socket, whatever its substate.
func (s TCPSocket) Timewait() bool { return s.Timer == 3 }

// TCPSockets lists the namespace's IPv4 TCP sockets now.
func (n *Netns) TCPSockets(t testing.TB) []TCPSocket {
	t.Helper()
	socks, err := ParseTCPListing(n.TCPListing(t))
	if err != nil {
		t.Fatal(err)
	}
	return socks
}

// ParseTCPListing reads /proc/net/tcp's text.
func ParseTCPListing(text string) ([]TCPSocket, error) {
	var out []TCPSocket
	for i, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // the header
		}
		if len(f) < 6 {
			return nil, fmt.Errorf("/proc/net/tcp line %d: %d fields", i+1, len(f))
		}
		var s TCPSocket
		var err error
		if s.LocalPort, err = hexPort(f[1]); err == nil {
			s.RemotePort, err = hexPort(f[2])
		}
		var st, tr uint64
		if err == nil {
			st, err = strconv.ParseUint(f[3], 16, 8)
		}
		if timer, _, ok := strings.Cut(f[5], ":"); err == nil && ok {
			tr, err = strconv.ParseUint(timer, 16, 8)
		} else if err == nil {
			err = fmt.Errorf("timer %q", f[5])
		}
		if err != nil {
			return nil, fmt.Errorf("/proc/net/tcp line %d: %v", i+1, err)
		}
		s.State, s.Timer = uint8(st), uint8(tr)
		out = append(out, s)
	}
	return out, nil
}

// hexPort is the port of an "ADDR:PORT" field, both in hex.
func hexPort(field string) (uint16, error) {
	_, port, ok := strings.Cut(field, ":")
	if !ok {
		return 0, fmt.Errorf("address %q", field)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	return uint16(p), err
}
