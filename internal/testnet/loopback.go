package testnet

import (
	"io"
	"net"
	"testing"
)

// LoopbackServer listens on 127.0.0.1 in the caller's namespace, reads
// each connection to EOF and closes it (the client closes first), and
// returns its address; cleanup closes it.
func LoopbackServer(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}
