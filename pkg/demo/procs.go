package demo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// readyTimeout bounds how long a child may take to say it is ready. It only
// matters when something is broken; a child is ready in milliseconds.
const readyTimeout = 10 * time.Second

// proc is one of the demo's processes, as the demo sees it.
type proc struct {
	role   string
	cmd    *exec.Cmd
	stderr tail
	exited chan struct{} // closed once the process is reaped
	err    error         // Wait's result, once exited is closed
}

// tail keeps the last bytes written to it: a child's last words.
type tail struct {
	mu sync.Mutex
	b  []byte
}

const tailSize = 1024

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = append(t.b[:0], t.b[len(t.b)-tailSize:]...)
	}
	return len(p), nil
}

// lastWords is the last line a child of role wrote, without the prefix
// RunChildIfAsked gives it.
func (t *tail) lastWords(role string) string {
	return strings.TrimPrefix(t.lastLine(), childPrefix(role))
}

// lastLine is the last non-empty line written.
func (t *tail) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := bytes.TrimSpace(t.b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b)
}

// startProc starts the child spec describes and waits until it says it is
// ready. It runs on the namespace thread: the child is born in the
// namespace, and the thread is the parent its Pdeathsig watches. extra,
// if not nil, becomes the child's file descriptor 3.
func startProc(spec childSpec, extra *os.File) (*proc, error) {
	p := &proc{role: spec.Role, exited: make(chan struct{})}
	// /proc/self/exe, resolved by the child: this very binary, even if
	// its file was replaced or deleted since. The kernel would name the
	// process "exe"; the child renames itself.
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{spec.Role}
	cmd.Env = append(os.Environ(), specEnv(spec))
	cmd.Stderr = &p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("starting the %s process: %w", spec.Role, err)
	}
	if extra != nil {
		cmd.ExtraFiles = []*os.File{extra}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The children must not outlive the demo, however it ends
		// (SIGKILL included): the kernel kills them when this thread ends.
		Pdeathsig: syscall.SIGKILL,
		// Their own process group: Ctrl-C on a terminal reaches the demo
		// only, which then stops them itself.
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the %s process: %w", spec.Role, err)
	}
	p.cmd = cmd

	readyc := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		switch {
		case line == readyLine:
			readyc <- nil
		case err != nil:
			readyc <- err
		default:
			readyc <- fmt.Errorf("unexpected output %q", line)
		}
	}()
	select {
	case err = <-readyc:
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		<-readyc
		err = fmt.Errorf("not ready after %s", readyTimeout)
	}
	if err != nil {
		cmd.Process.Kill()
		werr := cmd.Wait()
		msg := p.stderr.lastWords(spec.Role)
		if msg == "" {
			msg = fmt.Sprintf("%v (%v)", err, werr)
		}
		return nil, fmt.Errorf("the %s process failed: %s", spec.Role, msg)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// group is the demo's processes. One that exits before stop is a failure
// of the demo.
type group struct {
	procs    []*proc
	stopping atomic.Bool
	onFail   func() // called once, on the first unexpected exit

	mu     sync.Mutex
	failed error
}

// add watches p.
func (g *group) add(p *proc) {
	g.procs = append(g.procs, p)
	go func() {
		<-p.exited
		if g.stopping.Load() {
			return
		}
		msg := p.stderr.lastWords(p.role)
		if msg == "" {
			msg = fmt.Sprint(p.err)
		}
		g.mu.Lock()
		first := g.failed == nil
		if first {
			g.failed = fmt.Errorf("the %s process (pid %d) ended early: %s", p.role, p.pid(), msg)
		}
		g.mu.Unlock()
		if first && g.onFail != nil {
			g.onFail()
		}
	}()
}

// err is the first unexpected exit, if any.
func (g *group) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// stop kills every process and reaps it. It may be called more than once.
func (g *group) stop() {
	g.stopping.Store(true)
	for _, p := range g.procs {
		p.cmd.Process.Kill() // an error: it is gone already; reaped below either way
	}
	for _, p := range g.procs {
		<-p.exited
	}
}
