package symbol

import "testing"

func goFrame(fn string) Frame   { return Frame{Function: fn, File: "x.go", Line: 1, Module: "app"} }
func libc(fn string) Frame      { return Frame{Function: fn, Module: "libc.so.6"} }
func native(fn, m string) Frame { return Frame{Function: fn, Module: m} }

func TestCallSite(t *testing.T) {
	for _, c := range []struct {
		name   string
		frames []Frame
		site   string // Function of the site; "" when !ok
		lib    string
	}{
		{"Go net.Dial in the application's goroutine", []Frame{
			goFrame("internal/runtime/syscall/linux.Syscall6"), goFrame("syscall.RawSyscall6"), goFrame("syscall.connect"),
			goFrame("internal/poll.(*FD).Connect"), goFrame("net.(*netFD).connect"), goFrame("net.(*sysDialer).dialTCP"),
			goFrame("net.(*Dialer).DialContext"), goFrame("net.Dial"), goFrame("main.openPerRequest"),
			goFrame("main.main"), goFrame("runtime.main"), goFrame("runtime.goexit"),
		}, "main.openPerRequest", ""},
		{"Go net/http: only its dial goroutine", []Frame{
			goFrame("syscall.connect"), goFrame("net.(*Dialer).DialContext"),
			goFrame("net/http.(*Transport).dial"), goFrame("net/http.(*Transport).dialConn"),
			goFrame("net/http.(*Transport).dialConnFor"), goFrame("runtime.goexit"),
		}, "net/http.(*Transport).dial", "net/http"},
		{"Go net/http with the application's DialContext", []Frame{
			goFrame("syscall.connect"), goFrame("net.(*Dialer).DialContext"),
			goFrame("main.newClient.func1"), goFrame("net/http.(*Transport).dial"),
			goFrame("net/http.(*Transport).dialConnFor"), goFrame("runtime.goexit"),
		}, "main.newClient.func1", "net/http"},
		{"Go database/sql: past the driver to the query", []Frame{
			goFrame("syscall.connect"), goFrame("net.Dial"), goFrame("github.com/lib/pq.dial"),
			goFrame("github.com/lib/pq.(*Connector).open"), goFrame("database/sql.(*DB).conn"),
			goFrame("database/sql.(*DB).query"), goFrame("database/sql.(*DB).QueryContext"),
			goFrame("main.lookupUser"), goFrame("main.main"),
		}, "main.lookupUser", "database/sql"},
		{"Go grpc", []Frame{
			goFrame("syscall.connect"), goFrame("net.(*Dialer).DialContext"),
			goFrame("google.golang.org/grpc/internal/transport.dial"), goFrame("google.golang.org/grpc.(*addrConn).createTransport"),
			goFrame("runtime.goexit"),
		}, "google.golang.org/grpc/internal/transport.dial", "grpc"},
		{"Go TLS dial", []Frame{
			goFrame("syscall.connect"), goFrame("net.Dial"), goFrame("crypto/tls.DialWithDialer"), goFrame("main.fetch"),
		}, "main.fetch", ""},
		{"C: libc's connect, then the application", []Frame{
			libc("connect"), native("open_per_request", "copen"), native("main", "copen"), libc("__libc_start_call_main"),
		}, "open_per_request", ""},
		{"C with libcurl: past libcurl to the application", []Frame{
			libc("connect"), native("Curl_socket_connect", "libcurl.so.4"), native("curl_easy_perform", "libcurl.so.4"),
			native("fetch_page", "crawler"), native("main", "crawler"),
		}, "fetch_page", "libcurl"},
		{"C: unnamed frames are skipped", []Frame{
			libc("connect"), {Module: "app", Address: 0x1234}, native("handler", "app"),
		}, "handler", ""},
		{"only libc and the loader", []Frame{libc("connect"), native("_dl_start", "ld-linux-x86-64.so.2")}, "", ""},
		{"unavailable: one frame", []Frame{libc("connect")}, "", ""},
		{"unavailable: none", nil, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.frames { // one return address per frame
				c.frames[i].Address = 0x401000 + uint64(i)*0x10
			}
			site, lib, ok := CallSite(c.frames)
			if ok != (c.site != "") || site.Function != c.site || lib != c.lib {
				t.Errorf("CallSite = %q, %q, %v; want %q, %q", site.Function, lib, ok, c.site, c.lib)
			}
		})
	}
}

func TestAvailable(t *testing.T) {
	inlined := []Frame{{Function: "net.Dial", Address: 0x10}, {Function: "main.open", Address: 0x10}}
	for _, c := range []struct {
		frames []Frame
		want   bool
	}{
		{nil, false},
		{[]Frame{{Address: 0x10}}, false},
		{inlined, false}, // one address, two frames
		{append(inlined, Frame{Address: 0x20}), true},
		{[]Frame{{Address: 0x10}, {Address: 0x20}}, true},
	} {
		if got := Available(c.frames); got != c.want {
			t.Errorf("Available(%+v) = %v, want %v", c.frames, got, c.want)
		}
	}
}

// The stack of a goroutine that asked net/http for a connection, from
// queueForDial outwards: the site is the first frame neither runtime nor
// net/http; the dial goroutine's own stack is told by dialConnFor.
func TestGoHTTPCaller(t *testing.T) {
	caller := []Frame{
		goFrame("net/http.(*Transport).queueForDial"), goFrame("net/http.(*Transport).getConn"),
		goFrame("net/http.(*Client).Do"), goFrame("main.fetch"), goFrame("main.main"), goFrame("runtime.main"),
	}
	for i := range caller {
		caller[i].Address = 0x401000 + uint64(i)*0x10
	}
	if site, ok := GoHTTPCaller(caller); !ok || site.Function != "main.fetch" {
		t.Errorf("GoHTTPCaller = %q, %v; want main.fetch", site.Function, ok)
	}
	if _, ok := GoHTTPCaller(caller[:3]); ok {
		t.Error("a stack of net/http alone has a caller")
	}
	if _, ok := GoHTTPCaller(caller[3:4]); ok {
		t.Error("an unavailable stack (one frame) has a caller")
	}
	dial := []Frame{goFrame("net.(*Dialer).DialContext"), goFrame("net/http.(*Transport).dialConn"),
		goFrame("net/http.(*Transport).dialConnFor"), goFrame("runtime.goexit")}
	if !GoHTTPDialer(dial) || GoHTTPDialer(caller) {
		t.Error("GoHTTPDialer: want the dial goroutine only")
	}
}
