package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// As root, every run happens in a child process (this test binary again) in
// a network namespace of its own, so that its TIME_WAIT sockets die with it
// instead of piling up on the host. Otherwise runs happen in-process.

// specEnv carries the run to the child, as JSON.
const specEnv = "TWLOAD_TEST_SPEC"

// spec is a run: a configuration and, for runs against an external server,
// how the test's own server behaves.
type spec struct {
	Config Config
	// Server: "" for the built-in one; "close" accepts and closes at once;
	// "hold" accepts and never closes; "never-accept" never accepts, so
	// that its accept queue fills and connects block; "none" is a port
	// nobody listens on.
	Server string
	// Sysctls are applied in the child's namespace (root only).
	Sysctls []string
}

func TestMain(m *testing.M) {
	if InNetnsChild() {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// childMain runs the spec in this process's new namespace and prints the
// result as JSON.
func childMain() int {
	var sp spec
	if err := json.Unmarshal([]byte(os.Getenv(specEnv)), &sp); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var sysctls []Sysctl
	for _, kv := range sp.Sysctls {
		s, err := ParseSysctl(kv)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		sysctls = append(sysctls, s)
	}
	if err := SetupNetns(sysctls); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res, err := runSpec(sp)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

// runSpec starts the spec's server, if any, and runs the load.
func runSpec(sp spec) (Result, error) {
	cfg := sp.Config
	if sp.Server != "" {
		addr, stop, err := testServer(sp.Server)
		if err != nil {
			return Result{}, err
		}
		defer stop()
		cfg.Addr = addr
	}
	return Run(context.Background(), cfg)
}

// testServer starts an external server on 127.0.0.1 that behaves as kind
// says, and returns its address and a function that stops it.
func testServer(kind string) (string, func(), error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)
	if kind == "none" {
		unix.Close(fd) // bound, never listening: connects are refused
		return addr, func() {}, nil
	}
	backlog := 4096
	if kind == "never-accept" {
		backlog = 1
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return "", nil, err
	}
	f := os.NewFile(uintptr(fd), "listener")
	if kind == "never-accept" {
		return addr, func() { f.Close() }, nil
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return "", nil, err
	}
	var mu sync.Mutex
	var held []net.Conn // open until stop: unreferenced, they would be finalized
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if kind != "hold" {
				c.Close()
				continue
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	stop := func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}
	return addr, stop, nil
}

// runIsolated runs sp in a new network namespace as root, in-process
// otherwise.
func runIsolated(t *testing.T, sp spec) Result {
	t.Helper()
	if os.Geteuid() != 0 {
		res, err := runSpec(sp)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	js, err := json.Marshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := NetnsCommand(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, specEnv+"="+string(js))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v: %s", err, stderr.Bytes())
	}
	var res Result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("child output %q: %v", stdout.Bytes(), err)
	}
	return res
}

// checkCounts checks the figures of a run that was not cut short.
func checkCounts(t *testing.T, res Result, attempts, connections int64, errs map[string]int64) {
	t.Helper()
	if res.Attempts != attempts || res.Connections != connections {
		t.Errorf("attempts %d, connections %d; want %d, %d", res.Attempts, res.Connections, attempts, connections)
	}
	if fmt.Sprint(res.Errors) != fmt.Sprint(errs) {
		t.Errorf("errors %v, want %v", res.Errors, errs)
	}
}

func checkAccepted(t *testing.T, res Result, want int64) {
	t.Helper()
	if res.ServerAccepted == nil {
		t.Error("no server_accepted")
	} else if *res.ServerAccepted != want {
		t.Errorf("server accepted %d, want %d", *res.ServerAccepted, want)
	}
}

func TestRunExactCounts(t *testing.T) {
	for _, mode := range []Mode{ClientClose, ServerClose} {
		for _, ipv6 := range []bool{false, true} {
			family := map[bool]string{false: "ipv4", true: "ipv6"}[ipv6]
			t.Run(string(mode)+"/"+family, func(t *testing.T) {
				res := runIsolated(t, spec{Config: Config{Clients: 4, Mode: mode, Connections: 500, IPv6: ipv6}})
				checkCounts(t, res, 500, 500, map[string]int64{})
				checkAccepted(t, res, 500)
				if res.Mode != mode || res.Clients != 4 || res.Family != family {
					t.Errorf("mode %q, clients %d, family %q; want %q, 4, %q", res.Mode, res.Clients, res.Family, mode, family)
				}
				wantPrefix := map[bool]string{false: "127.0.0.1:", true: "[::1]:"}[ipv6]
				if !strings.HasPrefix(res.Addr, wantPrefix) {
					t.Errorf("addr %q, want %s...", res.Addr, wantPrefix)
				}
			})
		}
	}
}

func TestRunRateLimited(t *testing.T) {
	res := runIsolated(t, spec{Config: Config{Clients: 4, Rate: 200, Connections: 20}})
	checkCounts(t, res, 20, 20, map[string]int64{})
}

func TestRunDefaultsToClientClose(t *testing.T) {
	res := runIsolated(t, spec{Config: Config{Clients: 1, Connections: 3}})
	if res.Mode != ClientClose {
		t.Errorf("mode %q, want %q", res.Mode, ClientClose)
	}
	checkCounts(t, res, 3, 3, map[string]int64{})
}

func TestRunExternalServer(t *testing.T) {
	for _, mode := range []Mode{ClientClose, ServerClose} {
		t.Run(string(mode), func(t *testing.T) {
			res := runIsolated(t, spec{Config: Config{Clients: 2, Mode: mode, Connections: 100}, Server: "close"})
			checkCounts(t, res, 100, 100, map[string]int64{})
			if res.ServerAccepted != nil {
				t.Errorf("server_accepted %d with an external server", *res.ServerAccepted)
			}
		})
	}
}

func TestRunCountsErrors(t *testing.T) {
	res := runIsolated(t, spec{Config: Config{Clients: 3, Connections: 50}, Server: "none"})
	checkCounts(t, res, 50, 0, map[string]int64{"ECONNREFUSED": 50})
}

// The end of the run must wake clients blocked in read (the server never
// closes) or in connect (the accept queue is full and SYNs are dropped).
func TestRunStopsBlockedClients(t *testing.T) {
	for _, tc := range []struct {
		server string
		mode   Mode
	}{{"hold", ServerClose}, {"never-accept", ClientClose}} {
		t.Run(tc.server, func(t *testing.T) {
			res := runIsolated(t, spec{Config: Config{Clients: 3, Mode: tc.mode, Duration: 300 * time.Millisecond}, Server: tc.server})
			var failed int64
			for _, n := range res.Errors {
				failed += n
			}
			if res.Attempts != res.Connections+failed {
				t.Errorf("attempts %d != connections %d + errors %v", res.Attempts, res.Connections, res.Errors)
			}
		})
	}
}

// A run cut short by its duration still accounts for every attempt, and the
// built-in server drains what the clients connected.
func TestRunDurationConsistent(t *testing.T) {
	res := runIsolated(t, spec{Config: Config{Clients: 2, Duration: 100 * time.Millisecond}})
	if len(res.Errors) != 0 || res.Attempts != res.Connections {
		t.Errorf("attempts %d, connections %d, errors %v", res.Attempts, res.Connections, res.Errors)
	}
	checkAccepted(t, res, res.Connections)
}

func TestRunCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := Run(ctx, Config{Clients: 2, Rate: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Attempts != 0 {
		t.Errorf("attempts %d after cancel, want 0", res.Attempts)
	}
	if res.Errors == nil {
		t.Error("errors is nil, want an empty map")
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Clients: 1}
	cases := []struct {
		name string
		edit func(*Config)
		want string // in the error; "" for no error
	}{
		{"minimal", func(*Config) {}, ""},
		{"full", func(c *Config) {
			*c = Config{Clients: 8, Mode: ServerClose, Rate: 10, Duration: time.Second, Connections: 5, IPv6: true, Addr: "[::1]:80"}
		}, ""},
		{"no clients", func(c *Config) { c.Clients = 0 }, "clients 0"},
		{"too many clients", func(c *Config) { c.Clients = MaxClients + 1 }, "want 1 to"},
		{"negative rate", func(c *Config) { c.Rate = -1 }, "invalid rate"},
		{"infinite rate", func(c *Config) { c.Rate = math.Inf(1) }, "invalid rate"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "invalid duration"},
		{"negative connections", func(c *Config) { c.Connections = -1 }, "invalid number of connections"},
		{"bad mode", func(c *Config) { c.Mode = "both-close" }, `invalid mode "both-close"`},
		{"addr without port", func(c *Config) { c.Addr = "localhost" }, "want host:port"},
		{"addr port 0", func(c *Config) { c.Addr = "localhost:0" }, "port from 1 to 65535"},
		{"addr port too big", func(c *Config) { c.Addr = "localhost:65536" }, "port from 1 to 65535"},
		{"addr without host", func(c *Config) { c.Addr = ":80" }, "port from 1 to 65535"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
			if tc.want != "" {
				if _, err := Run(context.Background(), c); err == nil {
					t.Error("Run accepted the configuration")
				}
			}
		})
	}
}

func TestRunAddrResolution(t *testing.T) {
	_, err := Run(context.Background(), Config{Clients: 1, Addr: "127.0.0.1:80", IPv6: true})
	if err == nil {
		t.Error("an IPv4 address was accepted with IPv6")
	}
	_, err = Run(context.Background(), Config{Clients: 1, Addr: "no-such-host.invalid:80"})
	if err == nil || !strings.Contains(err.Error(), "no-such-host.invalid") {
		t.Errorf("error %v, want a resolution error", err)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"client-close", "server-close"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := ParseMode("Client-Close"); err == nil {
		t.Error("ParseMode accepted Client-Close")
	}
}

func TestSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := &schedule{start: start, rate: 200, limit: 3}
	for want := int64(0); want < 3; want++ {
		if k, ok := s.claim(); !ok || k != want {
			t.Fatalf("claim = %d, %v; want %d, true", k, ok, want)
		}
	}
	if _, ok := s.claim(); ok {
		t.Error("claim beyond the limit succeeded")
	}
	if got := s.due(0); !got.Equal(start) {
		t.Errorf("due(0) = %v, want the start", got)
	}
	if got := s.due(1000); !got.Equal(start.Add(5 * time.Second)) {
		t.Errorf("due(1000) at 200/s = %v, want start+5s", got.Sub(start))
	}
	unlimited := &schedule{}
	for range 10 {
		if _, ok := unlimited.claim(); !ok {
			t.Fatal("claim without a limit failed")
		}
	}
}

func TestParseSysctl(t *testing.T) {
	good := []struct{ in, key, value, path string }{
		{"net.ipv4.tcp_tw_reuse=0", "net.ipv4.tcp_tw_reuse", "0", "/proc/sys/net/ipv4/tcp_tw_reuse"},
		{"net.ipv4.ip_local_port_range=40000 40009", "net.ipv4.ip_local_port_range", "40000 40009", "/proc/sys/net/ipv4/ip_local_port_range"},
		{" net.core.somaxconn = 128 ", "net.core.somaxconn", "128", "/proc/sys/net/core/somaxconn"},
	}
	for _, tc := range good {
		s, err := ParseSysctl(tc.in)
		if err != nil || s.Key != tc.key || s.Value != tc.value || s.Path() != tc.path {
			t.Errorf("ParseSysctl(%q) = %+v (%s), %v", tc.in, s, s.Path(), err)
		}
	}
	for _, in := range []string{"net.ipv4.tcp_tw_reuse", "kernel.pid_max=10", "net=1", "net..ipv4.x=1", "net.ipv4/../../kernel/x=1", "=1"} {
		if s, err := ParseSysctl(in); err == nil {
			t.Errorf("ParseSysctl(%q) = %+v, want an error", in, s)
		}
	}
}

func TestSetupNetnsRefusesParentNamespace(t *testing.T) {
	ino, err := netnsInode()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(NetnsEnv, fmt.Sprint(ino))
	if err := SetupNetns([]Sysctl{{Key: "net.ipv4.tcp_tw_reuse", Value: "0"}}); err == nil || !strings.Contains(err.Error(), "not in a new network namespace") {
		t.Errorf("SetupNetns in the parent's namespace: %v", err)
	}
}

// In a namespace of 10 ephemeral ports with no TIME_WAIT reuse, the
// listener takes one and a client gets exactly the other 9. (The range must
// have an even size: connect searches only an even number of its ports.)
func TestPortExhaustionInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: network namespaces cannot be tested")
		}
		t.Skip("needs root for a network namespace")
	}
	res := runIsolated(t, spec{
		Config: Config{Clients: 1, Connections: 15},
		// tcp_rfc1337=1: an RST reaching a TIME_WAIT must not free its
		// port early (seen once on 5.10: 14 connections in 9 ports).
		Sysctls: []string{"net.ipv4.ip_local_port_range=40000 40009", "net.ipv4.tcp_tw_reuse=0", "net.ipv4.tcp_rfc1337=1"},
	})
	checkCounts(t, res, 15, 9, map[string]int64{"EADDRNOTAVAIL": 6})
}
