package watch

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/tracer"
)

func TestMain(m *testing.M) {
	testnet.RunClientIfAsked()
	os.Exit(m.Run())
}

func requireBPF(t *testing.T) { testnet.RequireBPF(t, tracer.Preflight) }

// watchDuring runs Run while work() happens inside ns, then stops it.
func watchDuring(t *testing.T, ns *testnet.Netns, format Format, opts filter.Options, want int, work func()) string {
	t.Helper()
	out, _ := watchWith(t, ns, Config{Format: format}, opts, want, work)
	return out
}

// watchWith is watchDuring with cfg (its Filter, Netns and Ready set
// here), returning what Run counted lost too.
func watchWith(t *testing.T, ns *testnet.Netns, cfg Config, opts filter.Options, want int, work func()) (string, Losses) {
	t.Helper()
	requireBPF(t)
	flt, err := filter.Parse(opts)
	if err != nil {
		t.Fatal(err)
	}
	out := &testnet.SyncBuffer{}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		loss Losses
		err  error
	}
	done := make(chan result, 1)
	cfg.Filter, cfg.Netns, cfg.Ready = flt, ns.Inode, func() { close(ready) }
	go func() {
		loss, err := Run(ctx, cfg, out)
		done <- result{loss, err}
	}()
	select {
	case <-ready:
	case r := <-done:
		t.Fatalf("watch ended before ready: %v", r.err)
	}
	work()
	testnet.WaitFor(10*time.Second, func() bool { return strings.Count(out.String(), "\n") >= want })
	time.Sleep(300 * time.Millisecond)
	cancel()
	r := <-done
	if r.err != nil || r.loss.Records != 0 {
		t.Fatalf("watch: lost %d, err %v", r.loss.Records, r.err)
	}
	return out.String(), r.loss
}

// tenPorts is a namespace where connect() has 10 ports (40000-40009,
// tcp_tw_reuse 0) and a server (clients close first) outside them: the
// 11th connection in 60 s fails with EADDRNOTAVAIL. tcp_rfc1337=1, as in
// testnet.NewSmallRange: by default an RST ends a TIME_WAIT at once, and
// on loopback one comes when a server's retransmitted FIN crosses the
// client's last ACK (the client's TIME_WAIT ACKs it again and the listener
// answers with an RST); its port would then be free for one more
// connection (seen on 5.10 in a VM, 1 run in 3).
func tenPorts(t *testing.T) (*testnet.Netns, *testnet.Server) {
	t.Helper()
	ns := testnet.New(t)
	ns.Sysctl(t, "ipv4/tcp_rfc1337", "1")
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	ns.Sysctl(t, "ipv4/ip_local_port_range", "40000 40009")
	ns.Sysctl(t, "ipv4/tcp_tw_reuse", "0")
	return ns, srv
}

// JSON Lines: one valid object per event with the documented fields.
func TestWatchJSONLines(t *testing.T) {
	ns, srv := tenPorts(t)
	var cl *testnet.ClientResult
	out := watchDuring(t, ns, JSON, filter.Options{}, 12, func() {
		cl = testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 12})
	})
	var timewaits, errors int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("invalid JSON line %q: %v", sc.Text(), err)
		}
		if m["pid"] != float64(cl.PID) || m["comm"] != testnet.ClientComm || m["family"] != "ipv4" ||
			m["daddr"] != "127.0.0.1" || m["dport"] != float64(srv.Addr.Port()) || m["netns"] != float64(ns.Inode) {
			t.Errorf("line %s: want pid %d comm %s to 127.0.0.1:%d in netns %d", sc.Text(), cl.PID, testnet.ClientComm, srv.Addr.Port(), ns.Inode)
		}
		if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
			t.Errorf("time %v: %v", m["time"], err)
		}
		switch m["event"] {
		case "timewait":
			timewaits++
			if m["role"] != "client" || m["opener_pid"] != float64(cl.PID) || m["saddr"] != "127.0.0.1" {
				t.Errorf("timewait line %s", sc.Text())
			}
		case "connect_error":
			errors++
			if m["errno"] != "EADDRNOTAVAIL" || m["saddr"] != "127.0.0.1" || m["sport"] != float64(0) || m["tid"] != float64(cl.PID) {
				t.Errorf("connect_error line %s", sc.Text())
			}
		default:
			t.Errorf("unexpected line %s", sc.Text())
		}
	}
	if timewaits != 10 || errors != 2 {
		t.Fatalf("%d timewait and %d connect_error lines, want 10 and 2:\n%s", timewaits, errors, out)
	}
}

// --events filters in the kernel: only connect errors come out.
func TestWatchEventsFilter(t *testing.T) {
	ns, srv := tenPorts(t)
	out := watchDuring(t, ns, JSON, filter.Options{Events: "connect_error"}, 4, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 14})
	})
	if n := strings.Count(out, "\n"); n != 4 || strings.Count(out, `"event":"connect_error"`) != 4 {
		t.Fatalf("want exactly 4 connect_error lines, got:\n%s", out)
	}
}

// A hostile process name never reaches the terminal as control bytes,
// and JSON stays valid and exact.
func TestWatchEscapesHostileComm(t *testing.T) {
	const evil = "\x1b[2J\x07ev\"il\n"
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	table := watchDuring(t, ns, Table, filter.Options{}, 1+3, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 3, Comm: evil})
	})
	lines := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("want a header and 3 rows, got %d lines:\n%q", len(lines), table)
	}
	for _, c := range table {
		if (c < 0x20 && c != '\n') || c == 0x7f {
			t.Fatalf("control character %#x in table output %q", c, table)
		}
	}
	js := watchDuring(t, ns, JSON, filter.Options{}, 3, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 3, Comm: evil})
	})
	dec := json.NewDecoder(strings.NewReader(js))
	n := 0
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("invalid JSON %q: %v", js, err)
		}
		if m["comm"] != evil || m["event"] != "timewait" {
			t.Errorf("%s event, comm %q: want timewait, %q", m["event"], m["comm"], evil)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d JSON events, want 3:\n%s", n, js)
	}
}
