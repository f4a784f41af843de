package testnet

import (
	"slices"
	"testing"
)

// A listener, a full orphan in FIN_WAIT2 (keepalive timer) and a
// timewait socket standing for FIN_WAIT2, as 6.18 prints them.
const listing = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 40221 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 05 00000000:00000000 02:00001770 00000000     0        0 0 2 0000000000000000 20 4 30 10 -1
   2: 0100007F:9C41 0100007F:1F90 05 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`

func TestParseTCPListing(t *testing.T) {
	got, err := ParseTCPListing(listing)
	if err != nil {
		t.Fatal(err)
	}
	want := []TCPSocket{
		{LocalPort: 8080, State: 10},
		{LocalPort: 40000, RemotePort: 8080, State: 5, Timer: 2},
		{LocalPort: 40001, RemotePort: 8080, State: 5, Timer: 3},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got[1].Timewait() || !got[2].Timewait() {
		t.Fatalf("timewait: %v %v, want false true", got[1].Timewait(), got[2].Timewait())
	}
	for _, bad := range []string{"h\n 0: 0100007F 00000000:0000 0A 0:0 00:0", "h\n 0: 0100007F:1F90 00000000:0000 0A 0:0 zz", "h\n 0: 1"} {
		if _, err := ParseTCPListing(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParseTCPListing(f *testing.F) {
	f.Add(listing)
	f.Fuzz(func(t *testing.T, s string) { ParseTCPListing(s) })
}
