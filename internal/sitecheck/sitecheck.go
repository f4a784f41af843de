// Package sitecheck holds the assertions the call-site tests of several
// packages share (top's and run's): what a row of testnet's clients must
// say of their call sites.
package sitecheck

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/report"
)

// dialSite is the site of net/http's own dial goroutine.
const dialSite = "net/http.(*Transport).dial ("

// HTTPSite checks the row of testnet's net/http client (HTTPGets, which
// paused after its first GET while twtrace saw that GET's stack and
// probed the executable). From Linux 5.15 on: the line that called
// Client.Do (testnet's get, exactly) for callers connections or more,
// with the caller's goroutine as the stack; the first dial, taken before
// the executable was probed, in net/http's own dial goroutine. Before
// 5.15, net/http's dial goroutine for all.
func HTTPSite(t testing.TB, row report.Row, callers uint64) {
	t.Helper()
	if row.ClientLibrary != "net/http" || row.CallSiteNote != "" {
		t.Errorf("library %q, note %q; want net/http, none", row.ClientLibrary, row.CallSiteNote)
	}
	if !testnet.KernelAtLeast(5, 15) {
		if !strings.HasPrefix(row.CallSite, dialSite) || row.CallSites != nil {
			t.Errorf("call site %q (sites %+v); want net/http's dial goroutine alone before 5.15", row.CallSite, row.CallSites)
		}
		return
	}
	fn, file, line := testnet.HTTPCallSite()
	want := fmt.Sprintf("%s (%s:%d)", fn, file, line)
	sites := row.CallSites
	if row.CallSite != want || len(sites) != 2 || sites[0].CallSite != want || sites[0].Connects < callers ||
		!strings.HasPrefix(sites[1].CallSite, dialSite) || sites[1].Connects != 1 || sites[1].ClientLibrary != "net/http" {
		t.Errorf("call site %q, sites %+v; want %q for %d dials or more, then net/http's dial for the first", row.CallSite, sites, want, callers)
	}
	if len(row.Stack) == 0 || row.Stack[0].Function != "net/http.(*Transport).queueForDial" {
		t.Errorf("stack %+v: want the caller's goroutine, from queueForDial", row.Stack)
	}
}
