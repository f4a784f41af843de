package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tail keeps the last max bytes written to it: the guest's console, shown
// when the VM fails.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
	tee io.Writer // also written here, if set
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	if t.tee != nil {
		t.tee.Write(b)
	}
	return len(b), nil
}

// lines is the last n lines, without carriage returns and empty lines.
func (t *tail) lines(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(string(t.buf), "\r", ""), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// vm is one boot of the guest.
type vm struct {
	arch    *guestArch
	qemu    string
	accel   string
	kernel  string
	initrd  string
	append  string
	mem     int
	smp     int
	timeout time.Duration
	dir     string // for the sockets
}

// outcome is how a boot ended when the guest reported no exit status.
type outcome struct {
	timedOut bool
	signal   os.Signal
	qemuErr  error  // qemu's own exit
	qemuOut  string // what qemu printed
}

// run boots the guest and copies the second serial port to rep and the
// console to console, until qemu exits, the guest reported DONE, the
// timeout passes or a signal arrives.
func (v *vm) run(rep *reports, console *tail) (*outcome, error) {
	conSock, outSock := filepath.Join(v.dir, "con.sock"), filepath.Join(v.dir, "out.sock")
	conL, err := net.Listen("unix", conSock)
	if err != nil {
		return nil, err
	}
	defer conL.Close()
	outL, err := net.Listen("unix", outSock)
	if err != nil {
		return nil, err
	}
	defer outL.Close()

	var qemuOut bytes.Buffer
	cmd := exec.Command(v.qemu, v.args(conSock, outSock)...)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	// qemu dies with the wrapper, even when go test kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Both serial ports connect while qemu starts, before the guest runs.
	failed := func(err error) (*outcome, error) {
		cmd.Process.Kill()
		<-exited // qemuOut is complete
		return &outcome{qemuErr: err, qemuOut: qemuOut.String()}, nil
	}
	conConn, err := accept(conL, exited)
	if err != nil {
		return failed(err)
	}
	defer conConn.Close()
	outConn, err := accept(outL, exited)
	if err != nil {
		return failed(err)
	}
	defer outConn.Close()
	var copies sync.WaitGroup
	copies.Add(2)
	go func() {
		defer copies.Done()
		io.Copy(console, conConn)
	}()
	doneSeen := make(chan struct{})
	go func() {
		defer copies.Done()
		copyReports(outConn, rep, doneSeen)
	}()

	timer := time.NewTimer(v.timeout)
	defer timer.Stop()
	out := &outcome{}
	var grace <-chan time.Time
	for {
		select {
		case err := <-exited:
			copies.Wait()
			out.qemuErr, out.qemuOut = err, qemuOut.String()
			return out, nil
		case <-doneSeen:
			doneSeen = nil
			// The guest waits for this before it powers off, so that
			// nothing it wrote is lost in the serial port.
			outConn.Write([]byte("ok\n"))
			// poweroff -f follows at once; a hung power-off must not wait
			// for the timeout.
			grace = time.After(10 * time.Second)
		case <-grace:
			cmd.Process.Kill()
		case <-timer.C:
			out.timedOut = true
			cmd.Process.Kill()
		case sig := <-sigs:
			out.signal = sig
			cmd.Process.Kill()
		}
	}
}

// copyReports copies conn to rep, closing done once rep saw DONE.
func copyReports(conn net.Conn, rep *reports, done chan struct{}) {
	buf := make([]byte, 32<<10)
	closed := false
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			rep.Write(buf[:n])
			if rep.done && !closed {
				close(done)
				closed = true
			}
		}
		if err != nil {
			rep.Flush()
			return
		}
	}
}

// accept waits for qemu to connect to l, or to exit first.
func accept(l net.Listener, exited chan error) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case err := <-exited:
		exited <- err // for run's loop
		if err == nil {
			err = errors.New("exited before the guest started")
		}
		return nil, err
	case <-time.After(30 * time.Second):
		return nil, errors.New("did not connect its serial ports in 30 s")
	}
}
