package demo

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/twtrace/twtrace/pkg/load"
)

// The demo's processes are this program again, re-executed with ChildEnv
// set: the same binary, whatever it is (twtrace, or a test binary), with
// nothing to install. Each renames itself to its role, so that twtrace
// attributes it by pid and name like any other process.

// ChildEnv holds a child's childSpec, as JSON.
const ChildEnv = "TWTRACE_DEMO_CHILD"

// The roles, which are also the processes' names (comm).
const (
	roleServer  = "server"
	roleChurner = "churner"
	rolePooled  = "pooled"
)

// childSpec tells a child what to do.
type childSpec struct {
	Role string  `json:"role"`
	Addr string  `json:"addr"` // the server, for the clients
	Rate float64 `json:"rate"` // requests per second, for the clients
	// Parent is the pid the child must have as parent: if the demo died
	// before the child could arm PR_SET_PDEATHSIG, the child exits.
	Parent int `json:"parent"`
}

// readyLine is what a child writes on stdout once it runs under its name
// (and, for pooled, once it is connected).
const readyLine = "ready\n"

// listenerFD is where the server finds its listening socket (ExtraFiles[0]).
const listenerFD = 3

// RunChildIfAsked runs the demo process this one was started as, and
// exits, when ChildEnv is set; otherwise it returns at once. Programs that
// run the demo call it first thing (an init function), before any of their
// own work.
func RunChildIfAsked() {
	raw, ok := os.LookupEnv(ChildEnv)
	if !ok {
		return
	}
	spec, err := parseSpec(raw)
	if err == nil {
		err = runChild(spec)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s%s\n", childPrefix(cmp.Or(spec.Role, "child")), strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
	os.Exit(0)
}

// childPrefix starts every line a child of role writes on stderr.
func childPrefix(role string) string { return "twtrace demo: " + role + ": " }

func parseSpec(raw string) (childSpec, error) {
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return spec, fmt.Errorf("invalid %s: %w", ChildEnv, err)
	}
	switch spec.Role {
	case roleServer:
	case roleChurner, rolePooled:
		if _, err := net.ResolveTCPAddr("tcp", spec.Addr); err != nil {
			return spec, fmt.Errorf("invalid %s: address %q", ChildEnv, spec.Addr)
		}
		if !(spec.Rate > 0 && spec.Rate <= 1e6) {
			return spec, fmt.Errorf("invalid %s: rate %v", ChildEnv, spec.Rate)
		}
	default:
		return spec, fmt.Errorf("invalid %s: role %q", ChildEnv, spec.Role)
	}
	return spec, nil
}

func runChild(spec childSpec) error {
	// Pdeathsig is set by the parent before exec, but a binary with file
	// capabilities loses it at exec: arm it again, then make sure the
	// parent did not die before.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	if spec.Parent != 0 && os.Getppid() != spec.Parent {
		return errors.New("the demo is gone")
	}
	if err := setComm(spec.Role); err != nil {
		return err
	}
	switch spec.Role {
	case roleServer:
		return runServer()
	case roleChurner:
		return runChurner(spec)
	}
	return runPooled(spec)
}

// setComm names every thread of this process name. The kernel reports the
// name of the thread that makes a system call, and a new thread inherits
// the name of the one that creates it: PR_SET_NAME on one thread is not
// enough for a Go program, whose runtime already has several. Threads may
// be created meanwhile: repeat until a pass finds every one named.
func setComm(name string) error {
	for range 100 {
		d, err := os.Open("/proc/self/task")
		if err != nil {
			return fmt.Errorf("naming the process: %w", err)
		}
		tids, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return fmt.Errorf("naming the process: %w", err)
		}
		renamed := 0
		for _, tid := range tids {
			path := "/proc/self/task/" + tid + "/comm"
			cur, err := os.ReadFile(path)
			if err != nil {
				continue // the thread ended
			}
			if string(cur) == name+"\n" {
				continue
			}
			if err := writeFile(path, name); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("naming the process: %w", err)
			}
			renamed++
		}
		if renamed == 0 {
			return nil
		}
	}
	return errors.New("naming the process: its threads keep changing")
}

// writeFile writes s to an existing file, as /proc wants: no O_CREAT, no
// O_TRUNC.
func writeFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func ready() error {
	_, err := io.WriteString(os.Stdout, readyLine)
	return err
}

// runServer answers on the listener it inherited: every connection gets
// back what it sends, until it closes. The churner's connections send
// nothing and close first, so they end in TIME_WAIT on the churner's side.
func runServer() error {
	f := os.NewFile(listenerFD, "listener")
	if f == nil {
		return errors.New("no listening socket")
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("the inherited listening socket: %w", err)
	}
	if err := ready(); err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			time.Sleep(10 * time.Millisecond) // out of descriptors or memory: do not spin
			continue
		}
		go echo(c)
	}
}

func echo(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// runChurner is twload's client: a new connection per request, closed by
// the client first, at a fixed rate, counting failures and going on.
func runChurner(spec childSpec) error {
	if err := ready(); err != nil {
		return err
	}
	_, err := load.Run(context.Background(), load.Config{
		Clients: 1, Mode: load.ClientClose, Rate: spec.Rate, Addr: spec.Addr,
	})
	return err
}

// request is what pooled sends, and gets back, per request.
var request = []byte("GET /item HTTP/1.1 (keep-alive)\n")

// runPooled sends requests at the same rate over one connection, made once.
func runPooled(spec childSpec) error {
	c, err := net.Dial("tcp", spec.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := ready(); err != nil {
		return err
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / spec.Rate))
	defer tick.Stop()
	resp := make([]byte, len(request))
	for n := 1; ; n++ {
		<-tick.C
		if _, err := c.Write(request); err != nil {
			return fmt.Errorf("request %d: %w", n, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return fmt.Errorf("response %d: %w", n, err)
		}
	}
}

// specEnv is the environment entry that makes a child of spec.
func specEnv(spec childSpec) string {
	raw, _ := json.Marshal(spec) // plain fields: cannot fail
	return ChildEnv + "=" + string(raw)
}

// rateString formats a rate without noise digits: 150, 2.5.
func rateString(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }
