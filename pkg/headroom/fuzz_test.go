package headroom

import (
	"encoding/binary"
	"testing"
)

// FuzzCompute checks Compute's figures and forecasts on namespaces built
// from the fuzzer's bytes (see decodeNamespace) against a recount.
func FuzzCompute(f *testing.F) {
	f.Add([]byte{})
	// Range 40000-40099 and one reserved span, tcp_tw_reuse=2 with
	// timestamps, then sockets: state, flags, port, destination,
	// remaining.
	seed := []byte{2, 0, 99, 2<<1 | 2<<3 | 1<<5 | 1<<6, 10, 4, 200, 3}
	for i := range 40 {
		seed = append(seed, 5, 0x06, byte(20+i%30), 3<<3, byte(4*i))
	}
	seed = append(seed, 9, 1, 251, 5, 0)       // a listener on 8080
	seed = append(seed, 0, 0, 251, 1|7<<3, 0)  // accepted on it
	seed = append(seed, 5, 6, 251, 1|7<<3, 80) // and closed by the server
	f.Add(seed)
	var wide []byte
	for i := range 200 {
		wide = binary.LittleEndian.AppendUint32(wide, uint32(i)*2654435761)
	}
	f.Add(wide)
	f.Fuzz(func(t *testing.T, data []byte) {
		ns := decodeNamespace(data)
		checkReport(t, ns, Compute(ns))
		checkCompact(t, ns)
	})
}
