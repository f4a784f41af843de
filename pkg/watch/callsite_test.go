package watch

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/filter"
	"github.com/twtrace/twtrace/pkg/symbol"
)

// jsonEvent is a watch line's fields that these tests read.
type jsonEvent struct {
	Event         string          `json:"event"`
	PID           uint32          `json:"pid"`
	CallSite      *string         `json:"call_site"`
	CallSiteNote  *string         `json:"call_site_note"`
	ClientLibrary *string         `json:"client_library"`
	Stack         *[]symbol.Frame `json:"stack"`
}

// jsonEvents decodes watch's JSON lines.
func jsonEvents(t *testing.T, out string) []jsonEvent {
	t.Helper()
	var evs []jsonEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e jsonEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("invalid JSON line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

// dialSiteWant is the NetDial client's call site in its screen form.
func dialSiteWant() (string, symbol.Frame) {
	fn, file, line := testnet.DialCallSite()
	return fmt.Sprintf("%s (%s:%d)", fn, file, line), symbol.Frame{Function: fn, File: file, Line: line}
}

// hasFrame reports whether stack holds want's function at want's line,
// placed in a module.
func hasFrame(stack []symbol.Frame, want symbol.Frame) bool {
	for _, f := range stack {
		if f.Function == want.Function && f.File == want.File && f.Line == want.Line && f.Address != 0 && f.Module != "" {
			return true
		}
	}
	return false
}

// watch --stacks -o json over a Go client that dials per request: each of
// its 20 timewait events names the exact line of its net.Dial call, with
// the stack leading to it; the stack records themselves are never lines.
func TestWatchStacksJSONNamesDialCallSite(t *testing.T) {
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	var cl *testnet.ClientResult
	out, loss := watchWith(t, ns, Config{Format: JSON, Stacks: true}, filter.Options{}, 20, func() {
		cl = testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv.Dest(false), N: 20, NetDial: true})
	})
	want, frame := dialSiteWant()
	evs := jsonEvents(t, out)
	if len(evs) != 20 || len(cl.Ports) != 20 {
		t.Fatalf("%d lines for %d connections, want 20:\n%s", len(evs), len(cl.Ports), out)
	}
	for i, e := range evs {
		if e.Event != "timewait" || e.PID != uint32(cl.PID) {
			t.Errorf("line %d: %s of pid %d, want timewait of %d", i, e.Event, e.PID, cl.PID)
		}
		if e.CallSite == nil || *e.CallSite != want || e.CallSiteNote != nil || e.ClientLibrary == nil || *e.ClientLibrary != "" {
			t.Errorf("line %d: call site %v, note %v, library %v; want %q, no note, \"\"", i, deref(e.CallSite), deref(e.CallSiteNote), deref(e.ClientLibrary), want)
		}
		if e.Stack == nil || len(*e.Stack) < 4 || !hasFrame(*e.Stack, frame) {
			t.Errorf("line %d: stack %+v: want the dial's frame %+v in it", i, e.Stack, frame)
		}
	}
	if loss.LostStacks != 0 || loss.UnresolvedStacks != 0 {
		t.Errorf("lost %d stacks, %d unresolved; want none", loss.LostStacks, loss.UnresolvedStacks)
	}
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// The table ends each line of the client's timewait events with where it
// dialled.
func TestWatchStacksTable(t *testing.T) {
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	out, _ := watchWith(t, ns, Config{Format: Table, Stacks: true}, filter.Options{}, 1+5, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv.Dest(false), N: 5, NetDial: true})
	})
	want, _ := dialSiteWant()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[0], "TIME ") {
		t.Fatalf("want a header and 5 lines:\n%s", out)
	}
	for _, l := range lines[1:] {
		// The precise tier adds the substate after the bytes.
		if !strings.Contains(l, " timewait ") || !strings.Contains(l, " rx=0 ") || !strings.HasSuffix(l, " at "+want) {
			t.Errorf("line %q: want a timewait ending in at %s", l, want)
		}
	}
}

// Without --stacks no event has a call site, and no stack record shows.
func TestWatchWithoutStacks(t *testing.T) {
	ns := testnet.New(t)
	srv := testnet.StartServer(t, ns, "127.0.0.1", testnet.ServerReadEOF)
	out, loss := watchWith(t, ns, Config{Format: JSON}, filter.Options{}, 20, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Comm: "dialer", Dest: srv.Dest(false), N: 20, NetDial: true})
	})
	evs := jsonEvents(t, out)
	if len(evs) != 20 {
		t.Fatalf("%d lines, want 20:\n%s", len(evs), out)
	}
	for i, e := range evs {
		if e.Event != "timewait" || e.CallSite != nil || e.CallSiteNote != nil || e.ClientLibrary != nil || e.Stack != nil {
			t.Errorf("line %d: %s event with call site fields %v %v %v %v", i, e.Event, deref(e.CallSite), deref(e.CallSiteNote), deref(e.ClientLibrary), e.Stack)
		}
	}
	if loss.LostStacks != 0 || loss.UnresolvedStacks != 0 {
		t.Errorf("lost %d stacks, %d unresolved without stacks", loss.LostStacks, loss.UnresolvedStacks)
	}
}

// A connect() that fails names its call site too: ten ports, twelve
// connect() calls from one line of code; the 10 timewait and the 2
// connect_error events all name that line.
func TestWatchStacksConnectError(t *testing.T) {
	ns, srv := tenPorts(t)
	out, _ := watchWith(t, ns, Config{Format: JSON, Stacks: true}, filter.Options{}, 12, func() {
		testnet.StartClient(t, ns, testnet.ClientSpec{Mode: "connect", Dest: srv.Dest(false), N: 12})
	})
	evs := jsonEvents(t, out)
	kinds := map[string]int{}
	sites := map[string]int{}
	for _, e := range evs {
		kinds[e.Event]++
		if e.CallSite != nil {
			sites[*e.CallSite]++
		}
	}
	if kinds["timewait"] != 10 || kinds["connect_error"] != 2 || len(evs) != 12 {
		t.Fatalf("events %v, want 10 timewait and 2 connect_error:\n%s", kinds, out)
	}
	if len(sites) != 1 || sites[""] != 0 {
		t.Fatalf("call sites %v: want one, named, on all 12 events:\n%s", sites, out)
	}
	t.Logf("call sites: %v", sites)
}
