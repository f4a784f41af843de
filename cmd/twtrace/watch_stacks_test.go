package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/watch"
)

// `twtrace watch --stacks -o json` over a Go client dialling per request:
// the flag reaches the tracer, and each event names the net.Dial line.
func TestWatchStacksFlag(t *testing.T) {
	requireBPF(t)
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	var stdout, stderr testnet.SyncBuffer
	root := newRootCommand()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"watch", "--stacks", "-o", "json", "--netns", fmt.Sprint(ns.Inode), "--duration", "4s"})
	done := make(chan error, 1)
	go func() { done <- root.Execute() }()
	if !testnet.WaitFor(10*time.Second, func() bool { return strings.Contains(stderr.String(), "twtrace: tracing") }) {
		t.Fatalf("watch never got ready: %s", stderr.String())
	}
	testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv.Dest(false), N: 5, NetDial: true})
	if err := <-done; err != nil {
		t.Fatalf("watch: %v; stderr %s", err, stderr.String())
	}
	fn, file, line := testnet.DialCallSite()
	want := fmt.Sprintf("%s (%s:%d)", fn, file, line)
	lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("%d lines, want 5:\n%s", len(lines), stdout.String())
	}
	for _, l := range lines {
		var e struct {
			Event    string `json:"event"`
			CallSite string `json:"call_site"`
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Event != "timewait" || e.CallSite != want {
			t.Errorf("line %s (%v): want a timewait at %s", l, err, want)
		}
	}
	if strings.Contains(stderr.String(), "stacks") {
		t.Errorf("stacks lost: %s", stderr.String())
	}
}

// The stacks watch could not name are two more loss lines, after the
// others.
func TestLossLinesStacks(t *testing.T) {
	var l watch.Losses
	l.Records, l.LostStacks, l.UnresolvedStacks = 1, 2, 3
	want := []string{
		"lost 1 records: the ring buffer was full (raise --ring-buffer-size)",
		"2 connect() stacks had no room to be kept: their events name no call site",
		"3 connect() stacks were not read before their process exited: their events name no call site",
	}
	if got := lossLines(&l); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
