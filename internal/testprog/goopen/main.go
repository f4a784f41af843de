// Command goopen reports where a call made in its main.openPerRequest
// is, then lives until its stdin closes. The call goes through dial,
// which the compiler inlines as it inlines net.Dial into its callers. It
// prints "0x<pc> <line> <file> main.dial <dial's line>": the return
// address a stack walk finds, the line in openPerRequest that calls dial,
// and the line in dial that the inlined code comes from. pkg/symbol's
// tests build it stripped and check that the address resolves to both.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
)

func main() {
	openPerRequest()
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// openPerRequest stands where an application would call net.Dial.
//
//go:noinline
func openPerRequest() {
	dial()
}

// dial is small enough to be inlined.
func dial() {
	report()
}

// report prints the return address into its caller and the positions
// the runtime gives for it: dial's line, then openPerRequest's.
//
//go:noinline
func report() {
	pcs := make([]uintptr, 1)
	runtime.Callers(2, pcs)
	_, _, dialLine, _ := runtime.Caller(1)
	_, file, line, _ := runtime.Caller(2)
	fmt.Printf("%#x %d %s main.dial %d\n", pcs[0], line, file, dialLine)
}
