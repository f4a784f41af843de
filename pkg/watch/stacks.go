package watch

import (
	"encoding/json"

	"github.com/twtrace/twtrace/pkg/callsite"
	"github.com/twtrace/twtrace/pkg/event"
	"github.com/twtrace/twtrace/pkg/symbol"
)

// callSites names the call site of each event's connect() stack, when
// watch takes stacks (Config.Stacks).
type callSites struct {
	sites *callsite.Sites
	// encoded holds each site's JSON fields, made once: a site is read
	// again for every connection it opens. Published sites never change
	// (callsite replaces one it learns more about), so the pointer is
	// the key.
	encoded map[*callsite.Site][]byte
	none    []byte // the fields of an event whose stack was not taken
	tooMany []byte // those of a stack past Sites' bound
}

func newCallSites(sites *callsite.Sites) *callSites {
	return &callSites{
		sites:   sites,
		encoded: map[*callsite.Site][]byte{},
		none:    encodeSite(siteFields{Stack: []symbol.Frame{}}),
		tooMany: encodeSite(siteFields{CallSiteNote: tooManyStacks, Stack: []symbol.Frame{}}),
	}
}

// tooManyStacks is the note of a stack past the bound of stacks kept, as
// on top's rows.
const tooManyStacks = "too many stacks to keep"

// carriesSite reports whether events of kind k name the connect() that
// opened their socket: the kinds whose Stack the kernel fills.
func carriesSite(k event.Kind) bool {
	return k == event.KindTimewait || k == event.KindConnectError || k == event.KindOverflow
}

// siteOf is e's call site. taken is false when e has no stack (none was
// taken: a server's socket, one opened before tracing); site is nil with
// taken true for a stack past the bound of stacks kept.
func (c *callSites) siteOf(e *event.Event) (site *callsite.Site, taken bool) {
	if e.Stack == 0 {
		return nil, false
	}
	// The opener's stack; a connect_error's caller is its opener. The
	// pid only places a stack whose own process is gone.
	pid := e.OpenerPID
	if pid == 0 {
		pid = e.PID
	}
	return c.sites.Site(c.sites.Canonical(e.Stack, pid)), true
}

// siteFields are an event's call-site fields in JSON, shaped as a row's
// (docs/json.md).
type siteFields struct {
	CallSite      string         `json:"call_site"`
	CallSiteNote  string         `json:"call_site_note,omitempty"`
	ClientLibrary string         `json:"client_library"`
	Stack         []symbol.Frame `json:"stack"`
}

// encodeSite is f as JSON object members, without the braces: to splice
// into an event's line.
func encodeSite(f siteFields) []byte {
	b, err := json.Marshal(f)
	if err != nil {
		// Strings and numbers only: encoding cannot fail.
		panic(err)
	}
	return b[1 : len(b)-1]
}

// maxEncoded bounds the encoded sites kept; past it the cache starts
// over (Sites' own bound is callsite.DefaultMaxStacks).
const maxEncoded = callsite.DefaultMaxStacks

// appendJSON appends e's call-site fields, each after a comma.
func (c *callSites) appendJSON(dst []byte, e *event.Event) []byte {
	site, taken := c.siteOf(e)
	fields := c.none
	switch {
	case !taken:
	case site == nil:
		fields = c.tooMany
	default:
		fields = c.encoded[site]
		if fields == nil {
			if len(c.encoded) >= maxEncoded {
				clear(c.encoded)
			}
			fields = encodeSite(fieldsOf(site))
			c.encoded[site] = fields
		}
	}
	dst = append(dst, ',')
	return append(dst, fields...)
}

// fieldsOf is a known stack's call-site fields.
func fieldsOf(site *callsite.Site) siteFields {
	f := siteFields{CallSite: site.String(), CallSiteNote: site.Note, ClientLibrary: site.Library, Stack: site.Frames}
	if f.Stack == nil {
		f.Stack = []symbol.Frame{}
	}
	return f
}

// suffix is the table's end of e's line (siteSuffix).
func (c *callSites) suffix(e *event.Event) string {
	return siteSuffix(c.siteOf(e))
}

// siteSuffix is the table's end of an event's line: " at F (file:line)",
// and " via LIBRARY" when the stack shows a client library; " at ?: why"
// when the stack was taken but names no call site (a note may hold
// parentheses of its own); "" when none was
// taken. Everything in it is escaped: names come from the traced program.
func siteSuffix(site *callsite.Site, taken bool) string {
	switch {
	case !taken:
		return ""
	case site == nil:
		return " at ?: " + tooManyStacks
	case !site.Known && site.Note == "":
		return " at ?"
	case !site.Known:
		return " at ?: " + symbol.Escape(site.Note)
	case site.Library != "":
		return " at " + site.String() + " via " + symbol.Escape(site.Library)
	}
	return " at " + site.String()
}
