package cri

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultEndpoints are the usual CRI sockets, in the order FindEndpoint
// tries them: containerd's (a plain install, then k3s's own), CRI-O's,
// cri-dockerd's. /var/run is a link to /run on the distributions these
// runtimes support, so the /run paths cover both.
var DefaultEndpoints = []string{
	"/run/containerd/containerd.sock",
	"/run/k3s/containerd/containerd.sock",
	"/run/crio/crio.sock",
	"/run/cri-dockerd.sock",
}

// FindEndpoint returns the first of DefaultEndpoints that exists as a
// socket, as "unix://<path>", or "" when none does.
func FindEndpoint() string { return findEndpoint(DefaultEndpoints) }

func findEndpoint(paths []string) string {
	for _, p := range paths {
		// Stat, not Lstat: a socket reached through a link is still the socket.
		if fi, err := os.Stat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return "unix://" + p
		}
	}
	return ""
}

// socketPath turns an endpoint ("unix:///path", or a bare path as crictl
// and the kubelet accept) into the absolute path of a unix socket. Other
// transports (tcp://, npipe://) are refused: a node's CRI is local.
func socketPath(endpoint string) (string, error) {
	if endpoint == "" {
		return "", errors.New("no endpoint")
	}
	if strings.IndexByte(endpoint, 0) >= 0 {
		return "", errors.New("endpoint holds a NUL byte")
	}
	p := endpoint
	if scheme, rest, ok := strings.Cut(endpoint, "://"); ok {
		if scheme != "unix" {
			return "", fmt.Errorf("endpoint %q: only unix sockets are supported", endpoint)
		}
		// unix://host/path names a host, which a local socket has not.
		if !strings.HasPrefix(rest, "/") {
			return "", fmt.Errorf("endpoint %q: want unix:///absolute/path", endpoint)
		}
		p = rest
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	return abs, nil
}
