package symbol

import "strings"

// The call site is the first frame, going outwards from connect(), that is
// neither the language runtime, nor the network library, nor libc: the
// application's line that asked for the connection. Go frames are told by
// their function's package, native frames by their module.

// runtimePrefixes are the Go packages between an application and the
// connect() system call: skipped. net/http is not among them: when its
// own dial goroutine is all there is, its frame is the best site known,
// and a DialContext closure of the application's comes before it.
var runtimePrefixes = []string{
	"runtime.",
	"syscall.",
	"internal/", // internal/poll, internal/syscall/unix, …
	"net.",      // net.(*Dialer).DialContext, net.Dial, … (not net/http.)
	"crypto/tls.",
	"golang.org/x/sys/unix.",
}

// systemModules are the C library and dynamic loader, by module name
// prefix: skipped, as are native frames no symbol names.
var systemModules = []string{
	"libc.so",
	"libc-",
	"libpthread.so",
	"libpthread-",
	"ld-linux",
	"ld-musl",
	"libc.musl",
}

// A library is a client library recognized in a stack. An outward
// library dials in the application's own thread or goroutine: its frames
// and whatever it calls (a database driver) are skipped, and the site is
// the first frame outside it. Libraries are tried in table order.
type library struct {
	name    string
	match   func(Frame) bool
	outward bool
}

var libraries = []library{
	{"database/sql", funcPrefix("database/sql."), true},
	{"grpc", funcPrefix("google.golang.org/grpc.", "google.golang.org/grpc/"), false},
	{"net/http", funcPrefix("net/http."), false},
	{"libcurl", modulePrefix("libcurl.so", "libcurl-"), true},
}

func funcPrefix(prefixes ...string) func(Frame) bool {
	return func(f Frame) bool { return hasAnyPrefix(f.Function, prefixes) }
}

func modulePrefix(prefixes ...string) func(Frame) bool {
	return func(f Frame) bool { return hasAnyPrefix(f.Module, prefixes) }
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// SystemFrame reports whether a frame is in the C library or the dynamic
// loader.
func SystemFrame(f Frame) bool { return hasAnyPrefix(f.Module, systemModules) }

// skipped reports whether a frame is runtime, network library or libc.
func skipped(f Frame) bool {
	return f.Function == "" || hasAnyPrefix(f.Function, runtimePrefixes) ||
		hasAnyPrefix(f.Module, systemModules)
}

// Available reports whether a resolved stack (Resolve's result, cut at
// the first untrusted address) says anything about its call site: it
// needs at least 2 return addresses, the first being the system call's
// own. (Frames are counted by address: the inlined calls that Resolve
// expands one address into do not count.) Fewer means the walk could not
// leave the syscall wrapper (no frame pointers) or started outside mapped
// code: the stack is unavailable and only the executable can be named.
func Available(frames []Frame) bool {
	for i := 1; i < len(frames); i++ {
		if frames[i].Address != frames[0].Address {
			return true
		}
	}
	return false
}

// CallSite picks the application's frame that opened the connection, and
// the client library the stack shows ("" when none): see runtimePrefixes,
// systemModules and libraries. ok is false when the stack is unavailable
// or every frame is skipped.
func CallSite(frames []Frame) (site Frame, lib string, ok bool) {
	if !Available(frames) {
		return Frame{}, "", false
	}
	from := 0
	for _, l := range libraries {
		outermost := -1
		for i, f := range frames {
			if l.match(f) {
				outermost = i
			}
		}
		if outermost < 0 {
			continue
		}
		lib = l.name
		if l.outward && firstKept(frames, outermost+1) >= 0 {
			from = outermost + 1
		}
		break
	}
	if i := firstKept(frames, from); i >= 0 {
		return frames[i], lib, true
	}
	return Frame{}, lib, false
}

func firstKept(frames []Frame, from int) int {
	for i := from; i < len(frames); i++ {
		if !skipped(frames[i]) {
			return i
		}
	}
	return -1
}

// GoHTTPDialer reports whether a stack is Go net/http's own dial
// goroutine ((*Transport).dialConnFor): the connect() of a dial whose
// caller is on another goroutine's stack.
func GoHTTPDialer(frames []Frame) bool {
	for _, f := range frames {
		if f.Function == "net/http.(*Transport).dialConnFor" {
			return true
		}
	}
	return false
}

// GoHTTPCaller picks the application's frame from the stack of the
// goroutine that asked net/http for a connection (it queued the dial):
// the first frame that is neither runtime nor net/http. ok is false when
// the stack is unavailable or has no such frame.
func GoHTTPCaller(frames []Frame) (site Frame, ok bool) {
	if !Available(frames) {
		return Frame{}, false
	}
	for _, f := range frames {
		if !skipped(f) && !strings.HasPrefix(f.Function, "net/http.") {
			return f, true
		}
	}
	return Frame{}, false
}
