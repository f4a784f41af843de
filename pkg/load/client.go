package load

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// schedule hands out attempt slots to all clients: it enforces the total
// number of attempts and, with a rate, the time each attempt is due.
type schedule struct {
	start time.Time
	rate  float64 // attempts per second; 0: no pacing
	limit int64   // total attempts; 0: unlimited
	next  atomic.Int64
}

// claim returns the index of the caller's next attempt, or false when the
// limit is reached.
func (s *schedule) claim() (int64, bool) {
	k := s.next.Add(1) - 1
	return k, s.limit == 0 || k < s.limit
}

// due is when attempt k may start. Due times are absolute, k/rate seconds
// after the start, so pacing does not drift however late the clients wake;
// clients that fall behind catch up at full speed.
func (s *schedule) due(k int64) time.Time {
	return s.start.Add(time.Duration(float64(k) / s.rate * float64(time.Second)))
}

// stats are one client's counters; summed once the clients are done.
type stats struct {
	attempts    int64
	connections int64
	errors      map[unix.Errno]int64
}

func (s *stats) fail(err error) {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		errno = unix.EINVAL // not reached: the system calls return an Errno
	}
	if s.errors == nil {
		s.errors = make(map[unix.Errno]int64)
	}
	s.errors[errno]++
}

func (s *stats) add(o *stats) {
	s.attempts += o.attempts
	s.connections += o.connections
	for errno, n := range o.errors {
		if s.errors == nil {
			s.errors = make(map[unix.Errno]int64)
		}
		s.errors[errno] += n
	}
}

// errorNames returns the error counts keyed by errno name, never nil.
func (s *stats) errorNames() map[string]int64 {
	names := make(map[string]int64, len(s.errors))
	for errno, n := range s.errors {
		name := unix.ErrnoName(errno)
		if name == "" {
			name = "errno " + strconv.Itoa(int(errno))
		}
		names[name] += n
	}
	return names
}

// client makes one connection at a time on its own OS thread, with
// blocking system calls.
type client struct {
	domain  int
	sa      unix.Sockaddr // built once: the client's own copy
	mode    Mode
	stopped *atomic.Bool // set when the run is cut short
	buf     []byte       // for reads until EOF in server-close mode
	stats   stats

	mu  sync.Mutex
	fd  int    // the socket in use, -1 if none
	seq uint64 // the number of sockets opened so far
}

func newClient(ep endpoint, mode Mode, stopped *atomic.Bool) *client {
	c := &client{domain: ep.domain, sa: ep.sockaddr(), mode: mode, stopped: stopped, fd: -1}
	if mode == ServerClose {
		c.buf = make([]byte, 4096)
	}
	return c
}

// run makes attempts until the schedule runs out or ctx is done.
func (c *client) run(ctx context.Context, sched *schedule) {
	// A blocking call per connection: keep the thread rather than hand the
	// goroutine between threads at every call.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var timer *time.Timer // reused for every wait
	if sched.rate > 0 {
		timer = time.NewTimer(time.Hour)
		defer timer.Stop()
	}
	for {
		k, ok := sched.claim()
		if !ok || c.stopped.Load() {
			return
		}
		if timer != nil && !sleepUntil(ctx, timer, sched.due(k)) {
			return
		}
		c.attempt()
	}
}

// sleepUntil waits for t with timer, and reports false if ctx is done first.
func sleepUntil(ctx context.Context, timer *time.Timer, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// attempt makes one connection and closes it as the mode says. After the
// run is stopped, failures are those of the abort and are not counted.
func (c *client) attempt() {
	fd, err := c.open()
	if fd < 0 {
		if err != nil && !c.stopped.Load() {
			c.stats.attempts++
			c.stats.fail(err)
		}
		return
	}
	defer c.close(fd)
	if err := connect(fd, c.sa); err != nil {
		if !c.stopped.Load() {
			c.stats.attempts++
			c.stats.fail(err)
		}
		return
	}
	c.stats.attempts++
	c.stats.connections++
	if c.mode == ServerClose {
		if err := readToEOF(fd, c.buf); err != nil && !c.stopped.Load() {
			c.stats.fail(err)
		}
	}
}

// open creates the socket and publishes it for abortIfStuck. It returns -1
// and no error if the run is stopped.
func (c *client) open() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped.Load() {
		return -1, nil
	}
	fd, err := unix.Socket(c.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, err
	}
	c.fd = fd
	c.seq++
	return fd, nil
}

// close closes fd under the lock, so that abortIfStuck never shuts down a
// descriptor number that was reused for another file.
func (c *client) close(fd int) {
	c.mu.Lock()
	c.fd = -1
	unix.Close(fd)
	c.mu.Unlock()
}

// abortIfStuck wakes the client if it is blocked in connect or read on the
// socket it already had at the previous call, whose number is in *seen:
// shutdown makes a pending connect fail and a read return EOF. Sockets
// that make progress are left alone: aborting a connect that was about to
// succeed would lose a connection the server accepted.
func (c *client) abortIfStuck(seen *uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd >= 0 && c.seq == *seen {
		unix.Shutdown(c.fd, unix.SHUT_RDWR)
	}
	*seen = c.seq
}

// connect is a blocking connect(2). If a signal interrupts it the
// handshake goes on; connecting again waits for it to finish.
func connect(fd int, sa unix.Sockaddr) error {
	err := unix.Connect(fd, sa)
	for err == unix.EINTR {
		err = unix.Connect(fd, sa)
		if err == unix.EISCONN {
			return nil
		}
	}
	return err
}

// readToEOF reads and discards until the peer closes.
func readToEOF(fd int, buf []byte) error {
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return err
		case n == 0:
			return nil
		}
	}
}
