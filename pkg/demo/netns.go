package demo

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/load"
)

// nsThread is an OS thread that made the demo's network namespace and
// runs, one at a time, the functions that must happen inside it: making
// the server's listener and starting the processes (a child is born in
// the namespace of the thread that forks it).
//
// The thread is also the parent the children's PR_SET_PDEATHSIG watches:
// the kernel signals them when the thread that forked them ends, not the
// process. So it lives, locked, until the children have been reaped, and
// then ends with its goroutine instead of going back to the scheduler.
type nsThread struct {
	inode uint32
	host  *os.File // the namespace the thread came from
	reqs  chan func()
	done  chan struct{}
	once  sync.Once
}

// newNetns creates the namespace on a new thread, brings loopback up and
// applies sysctls there.
func newNetns(sysctls []load.Sysctl) (*nsThread, error) {
	t := &nsThread{reqs: make(chan func()), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(t.done)
		// Never unlocked: the thread may be in the demo's namespace.
		runtime.LockOSThread()
		if err := t.setup(sysctls); err != nil {
			errc <- err
			return
		}
		errc <- nil
		for fn := range t.reqs {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		<-t.done
		if t.host != nil {
			t.host.Close()
		}
		return nil, err
	}
	return t, nil
}

func (t *nsThread) setup(sysctls []load.Sysctl) error {
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return fmt.Errorf("opening our network namespace: %w", err)
	}
	t.host = f
	host, err := threadNetns()
	if err != nil {
		return err
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w (unshare(CLONE_NEWNET): %v)", ErrPermission, err)
		}
		return fmt.Errorf("creating a network namespace: unshare(CLONE_NEWNET): %w", err)
	}
	ino, err := threadNetns()
	if err != nil {
		return err
	}
	// The sysctls below must never reach the host's namespace.
	if ino == host {
		return errors.New("creating a network namespace: still in the host's after unshare")
	}
	t.inode = ino
	if err := load.LoopbackUp(); err != nil {
		return err
	}
	for _, s := range sysctls {
		if err := s.Apply(); err != nil {
			return err
		}
	}
	return nil
}

// do runs fn on the thread.
func (t *nsThread) do(fn func() error) error {
	errc := make(chan error, 1)
	t.reqs <- func() { errc <- fn() }
	return <-errc
}

// close ends the thread, and with it its reference to the namespace.
// Children it started must have been reaped: they get SIGKILL otherwise.
// Calls after the first do nothing.
func (t *nsThread) close() {
	t.once.Do(func() {
		close(t.reqs)
		<-t.done
		t.host.Close()
	})
}

// leave moves the thread back to the namespace it came from, so that only
// the demo's processes keep the namespace alive (and name it in top).
func (t *nsThread) leave() error {
	return t.do(func() error {
		if err := unix.Setns(int(t.host.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("returning to the host's network namespace: %w", err)
		}
		return nil
	})
}

// threadNetns is the inode of the calling thread's network namespace.
func threadNetns() (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("reading the network namespace: %w", err)
	}
	return uint32(st.Ino), nil
}
