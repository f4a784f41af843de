package load

import (
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// listenBacklog is the accept queue length asked for; the kernel caps
	// it at net.core.somaxconn.
	listenBacklog = 4096
	// readTimeout bounds each blocking call of the server (SO_RCVTIMEO),
	// so that a connection that never sends its FIN cannot hold up stop.
	readTimeout = 250 * time.Millisecond
	// drainGrace is how long stop waits for the accept queue to make
	// progress before giving up on connections still in it.
	drainGrace = time.Second
)

// server is the built-in server: a loopback listener and a few acceptor
// threads, each closing the connections it accepts as the mode says.
type server struct {
	fd       int
	addr     netip.AddrPort
	mode     Mode
	accepted atomic.Int64
	stopped  atomic.Bool
	wg       sync.WaitGroup
}

// listen starts a server on an ephemeral port of 127.0.0.1, or ::1.
func listen(ipv6 bool, mode Mode, acceptors int) (*server, error) {
	domain, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	if ipv6 {
		domain, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16()}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return nil, fmt.Errorf("server socket: %w", err)
	}
	addr, err := bindListen(fd, sa)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &server{fd: fd, addr: addr, mode: mode}
	for range acceptors {
		s.wg.Go(s.acceptLoop)
	}
	return s, nil
}

// bindListen binds fd to sa, listens and returns the address it got.
func bindListen(fd int, sa unix.Sockaddr) (netip.AddrPort, error) {
	// Accepted sockets inherit the timeout.
	tv := unix.NsecToTimeval(readTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return netip.AddrPort{}, fmt.Errorf("server SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return netip.AddrPort{}, fmt.Errorf("server bind: %w", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return netip.AddrPort{}, fmt.Errorf("server listen: %w", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("server getsockname: %w", err)
	}
	switch got := got.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(got.Addr), uint16(got.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(got.Addr), uint16(got.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("server getsockname: unexpected address %T", got)
}

// acceptLoop accepts connections until the server stops.
func (s *server) acceptLoop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 512)
	for {
		fd, _, err := unix.Accept4(s.fd, unix.SOCK_CLOEXEC)
		if err != nil {
			if s.stopped.Load() {
				return
			}
			backOff(err)
			continue
		}
		s.accepted.Add(1)
		if s.mode == ClientClose {
			s.readToEOF(fd, buf)
		}
		unix.Close(fd)
	}
}

// backOff pauses after an accept error that would repeat at once (out of
// descriptors or memory), not after the harmless ones.
func backOff(err error) {
	switch err {
	case unix.EINTR, unix.EAGAIN, unix.ECONNABORTED:
	default:
		time.Sleep(10 * time.Millisecond)
	}
}

// readToEOF waits for the client's FIN. It gives up on errors, or on a
// timeout once the server is stopping.
func (s *server) readToEOF(fd int, buf []byte) {
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if s.stopped.Load() {
				return
			}
		case err != nil || n == 0:
			return
		}
	}
}

// stop waits until the server has accepted want connections, or until the
// accept queue stops draining, then stops the acceptors and closes the
// listener. It returns the number of connections accepted.
//
// The wait matters in client-close mode: the clients may be done while
// their connections still wait in the accept queue, and closing the
// listener would reset them instead of letting them end in TIME_WAIT.
func (s *server) stop(want int64) int64 {
	last, progress := s.accepted.Load(), time.Now()
	for last < want && time.Since(progress) < drainGrace {
		time.Sleep(time.Millisecond)
		if n := s.accepted.Load(); n != last {
			last, progress = n, time.Now()
		}
	}
	s.stopped.Store(true)
	// Shutting a listener down wakes the threads blocked in accept.
	unix.Shutdown(s.fd, unix.SHUT_RDWR)
	s.wg.Wait()
	unix.Close(s.fd)
	return s.accepted.Load()
}
