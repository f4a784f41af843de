package watch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/pkg/callsite"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
	"github.com/twtrace/twtrace/pkg/tracer"
	"github.com/twtrace/twtrace/pkg/workload"
)

// noStacks is a kernel whose stack table has lost every stack.
type noStacks struct{}

func (noStacks) Stack(uint64) (tracer.Stack, error) { return tracer.Stack{}, tracer.ErrNoStack }

// hostile is a name a traced program may give its functions and files.
const hostile = "\x1b[2J\x07f\"n\\\xff\n"

func dialSite() *callsite.Site {
	fr := symbol.Frame{Function: "main.fetch", File: "/src/app/main.go", Line: 42, Module: "app", Address: 0x4a1f2c, FileAddress: 0x4a1f2c}
	return &callsite.Site{ID: 7, Known: true, Frame: fr, Frames: []symbol.Frame{{Function: "net.Dial", Module: "app"}, fr}}
}

// The table's suffix: the site, its library, or why there is none; a
// hostile name never reaches the terminal raw.
func TestSiteSuffix(t *testing.T) {
	lib := dialSite()
	lib.Library = "net/http"
	evil := dialSite()
	evil.Frame.Function, evil.Frame.File = hostile, hostile
	cases := []struct {
		site  *callsite.Site
		taken bool
		want  string
	}{
		{nil, false, ""},
		{nil, true, " at ?: too many stacks to keep"},
		{dialSite(), true, " at main.fetch (/src/app/main.go:42)"},
		{lib, true, " at main.fetch (/src/app/main.go:42) via net/http"},
		{&callsite.Site{Note: "process gone before its stack was read"}, true, " at ?: process gone before its stack was read"},
		{&callsite.Site{}, true, " at ?"},
		{evil, true, ""}, // escaped: symbol.Frame's tests say how
	}
	for _, c := range cases {
		got := siteSuffix(c.site, c.taken)
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Errorf("control character in %q", got)
		}
		if c.site != evil && got != c.want {
			t.Errorf("suffix %q, want %q", got, c.want)
		}
	}
}

// The JSON fields have a row's shapes; call_site_note only when there is
// one to give.
func TestSiteFieldsJSON(t *testing.T) {
	want := `"call_site":"main.fetch (/src/app/main.go:42)","client_library":"","stack":[` +
		`{"function":"net.Dial","file":"","line":0,"module":"app","address":0,"file_address":0},` +
		`{"function":"main.fetch","file":"/src/app/main.go","line":42,"module":"app","address":4857644,"file_address":4857644}]`
	if got := string(encodeSite(fieldsOf(dialSite()))); got != want {
		t.Errorf("fields\n%s\nwant\n%s", got, want)
	}
	c := newCallSites(callsite.New(noStacks{}, symbol.NewResolver(1)))
	if s := string(c.none); s != `"call_site":"","client_library":"","stack":[]` {
		t.Errorf("no stack: %s", s)
	}
	if s := string(c.tooMany); s != `"call_site":"","call_site_note":"too many stacks to keep","client_library":"","stack":[]` {
		t.Errorf("too many: %s", s)
	}
}

// A stack the kernel no longer holds: the events name no site and say
// why, in JSON and in the table; KindStack is consumed, never written;
// events of other kinds carry no call-site field.
func TestWriterStackLost(t *testing.T) {
	sites := callsite.New(noStacks{}, symbol.NewResolver(1))
	named := newCallSites(sites)
	tw := event.Event{Kind: event.KindTimewait, PID: 9, OpenerPID: 9, Stack: 0xabc,
		Daddr: netip.MustParseAddr("10.0.0.1"), Saddr: netip.MustParseAddr("10.0.0.2"), Dport: 80, Sport: 40000}
	end := tw
	end.Kind = event.KindTimewaitEnd
	none := tw
	none.Stack = 0

	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	write, err := writer(JSON, bw, named)
	if err != nil {
		t.Fatal(err)
	}
	var id workload.Identity
	for _, e := range []*event.Event{&tw, &end, &none} {
		if err := write(e, &id); err != nil {
			t.Fatal(err)
		}
	}
	bw.Flush()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3:\n%s", len(lines), out.String())
	}
	wantNote := []any{"stack not kept by the kernel", nil, nil}
	wantSite := []bool{true, false, true}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		_, hasSite := m["call_site"]
		if hasSite != wantSite[i] || m["call_site_note"] != wantNote[i] || (hasSite && (m["call_site"] != "" || m["client_library"] != "")) {
			t.Errorf("line %d %s: want call site fields %v, note %v", i, l, wantSite[i], wantNote[i])
		}
		if st, ok := m["stack"].([]any); hasSite && (!ok || len(st) != 0) {
			t.Errorf("line %d: stack %v, want []", i, m["stack"])
		}
	}
	if st := sites.Stats(); st.Unresolved != 1 || st.Stacks != 1 {
		t.Errorf("stats %+v: want 1 stack, unresolved", st)
	}

	out.Reset()
	write, err = writer(Table, bw, named)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*event.Event{&tw, &end, &none} {
		if err := write(e, &id); err != nil {
			t.Fatal(err)
		}
	}
	bw.Flush()
	lines = strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("want a header and 3 lines:\n%s", out.String())
	}
	if !strings.HasSuffix(lines[1], "rx=0 at ?: stack not kept by the kernel") || strings.Contains(lines[2], " at ") || !strings.HasSuffix(lines[3], "rx=0") {
		t.Errorf("table:\n%s", out.String())
	}
}

// FuzzSiteFields: whatever a traced program names its functions, files
// and modules, the JSON fields make a valid object that gives them back
// and the table's suffix has no control character.
func FuzzSiteFields(f *testing.F) {
	f.Add("main.fetch", "/src/app/main.go", "app", 42, "", "")
	f.Add(hostile, hostile, hostile, -1, hostile, hostile)
	f.Add("", "", "", 0, "process gone before its stack was read", "net/http")
	f.Fuzz(func(t *testing.T, fn, file, module string, line int, note, lib string) {
		fr := symbol.Frame{Function: fn, File: file, Line: line, Module: module, Address: 1}
		for _, known := range []bool{true, false} {
			site := &callsite.Site{ID: 1, Known: known, Frame: fr, Frames: []symbol.Frame{fr}, Note: note, Library: lib}
			var m siteFields
			if err := json.Unmarshal([]byte("{"+string(encodeSite(fieldsOf(site)))+"}"), &m); err != nil {
				t.Fatalf("invalid JSON: %v", err)
			}
			if len(m.Stack) != 1 || m.Stack[0].Line != line || m.CallSite != site.String() {
				t.Errorf("fields %+v from %+v", m, site)
			}
			s := siteSuffix(site, true)
			if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Errorf("control character in %q", s)
			}
		}
	})
}
