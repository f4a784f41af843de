// Command goopen reports the return address and line of a call made in
// its main.openPerRequest, as "0x<pc> <line> <file>", then lives until its
// stdin closes. pkg/symbol's tests build it stripped and check that the
// address resolves to that function and line.
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
	report()
}

// report prints the return address into its caller (what a stack walk
// finds) and the caller's line of the call.
//
//go:noinline
func report() {
	pcs := make([]uintptr, 1)
	runtime.Callers(2, pcs)
	_, file, line, _ := runtime.Caller(1)
	fmt.Printf("%#x %d %s\n", pcs[0], line, file)
}
