package cri

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The first candidate that is a socket wins: a missing path, a regular
// file and a directory are passed over; a link to a socket counts.
func TestFindEndpoint(t *testing.T) {
	dir := t.TempDir()
	listen := func(name string) string {
		p := filepath.Join(dir, name)
		ln, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return p
	}
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	crio, dockerd := listen("crio.sock"), listen("cri-dockerd.sock")
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(dockerd, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		paths []string
		want  string
	}{
		{[]string{filepath.Join(dir, "missing.sock"), file, dir, crio, dockerd}, "unix://" + crio},
		{[]string{file, link, crio}, "unix://" + link},
		{[]string{file, dir}, ""},
		{nil, ""},
	} {
		if got := findEndpoint(tc.paths); got != tc.want {
			t.Errorf("findEndpoint(%q) = %q; want %q", tc.paths, got, tc.want)
		}
	}
	if len(DefaultEndpoints) != 4 || DefaultEndpoints[0] != "/run/containerd/containerd.sock" {
		t.Errorf("DefaultEndpoints = %q", DefaultEndpoints)
	}
}

func TestSocketPath(t *testing.T) {
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ endpoint, want, err string }{
		{"unix:///run/containerd/containerd.sock", "/run/containerd/containerd.sock", ""},
		{"/run/crio/crio.sock", "/run/crio/crio.sock", ""},
		{"unix:///run//k3s/../crio/crio.sock", "/run/crio/crio.sock", ""},
		{"unix:///run/my sock%20/x.sock", "/run/my sock%20/x.sock", ""},
		{"cri.sock", filepath.Join(cwd, "cri.sock"), ""},
		{"", "", "no endpoint"},
		{"tcp://10.0.0.1:10010", "", `endpoint "tcp://10.0.0.1:10010": only unix sockets are supported`},
		{"npipe:////./pipe/dockershim", "", `endpoint "npipe:////./pipe/dockershim": only unix sockets are supported`},
		{"unix://host/run/x.sock", "", `endpoint "unix://host/run/x.sock": want unix:///absolute/path`},
		{"unix://", "", `endpoint "unix://": want unix:///absolute/path`},
		{"/run/x\x00.sock", "", "endpoint holds a NUL byte"},
	} {
		got, err := socketPath(tc.endpoint)
		if errText := errString(err); got != tc.want || errText != tc.err {
			t.Errorf("socketPath(%q) = %q, %q; want %q, %q", tc.endpoint, got, errText, tc.want, tc.err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Any endpoint string: no panic; an accepted one is a clean absolute path
// without NUL, and the unix:// form of it is accepted as the same path.
func FuzzSocketPath(f *testing.F) {
	for _, s := range []string{
		"unix:///run/containerd/containerd.sock", "/run/crio/crio.sock", "cri.sock", "",
		"tcp://1.2.3.4:5", "unix://", "unix://h/p", "unix:///a/../../b", "://", "unix:///\x00",
		"unix:///" + strings.Repeat("a/", 2048),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, endpoint string) {
		p, err := socketPath(endpoint)
		if err != nil {
			if p != "" {
				t.Fatalf("socketPath(%q) = %q with error %v", endpoint, p, err)
			}
			return
		}
		if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.IndexByte(p, 0) >= 0 {
			t.Fatalf("socketPath(%q) = %q: not a clean absolute path", endpoint, p)
		}
		if again, err := socketPath("unix://" + p); again != p || err != nil {
			t.Fatalf("socketPath(unix://%s) = %q, %v; want the same path", p, again, err)
		}
	})
}
