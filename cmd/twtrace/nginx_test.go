package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/pkg/report"
)

// nginxConf proxies 127.0.0.1:8080 to upstream (%[2]s) as a user would
// who set proxy_http_version 1.1 and gave the upstream block no
// keepalive, with %[3]s the directives of the location's Connection
// header. Two workers, reuseport: the client's connections are spread
// over both.
const nginxConf = `worker_processes 2;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream app { server %[2]s; }
	server {
		listen 127.0.0.1:8080 reuseport;
		location / {
			proxy_pass http://app;
			proxy_http_version 1.1;
			%[3]s
		}
	}
}
`

// nginxRequests is how many requests go through nginx: as many
// connections to the upstream.
const nginxRequests = 200

// nginxCmd is nginx in the foreground with its configuration, logs and
// temporary files in a directory of the test's, proxying to upstream with
// the Connection header set by connection (nginxConf).
func nginxCmd(t *testing.T, upstream, connection string) (cmd *exec.Cmd, dir string) {
	t.Helper()
	nginx := testnet.RequireHost(t, "nginx")[0]
	dir = t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, upstream, connection), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd, dir
}

// nginxNetns is a private namespace with the default port range: the
// client's connections to nginx and nginx's to the upstream take more
// ports than churnNetns's hundred.
func nginxNetns(t *testing.T) *testnet.Netns {
	ns := testnet.New(t)
	ns.Park(t)
	return ns
}

// nginxLoad waits for nginx's pid and for its two workers to listen,
// then sends nginxRequests GETs through it from a Go client, 16 at a
// time; it returns the master's pid once known, error or not. It fails the test through its error only:
// it may run beside twtrace run.
func nginxLoad(ns *testnet.Netns, dir string) (master int, err error) {
	listening := func() bool {
		var tcp []byte
		err := testnet.InNetns(ns.Path(), func() (err error) {
			tcp, err = os.ReadFile("/proc/thread-self/net/tcp")
			return err
		})
		// Two sockets in LISTEN (0A) on port 8080 (1F90).
		return err == nil && strings.Count(string(tcp), ":1F90 00000000:0000 0A") == 2
	}
	pidFile := filepath.Join(dir, "nginx.pid")
	var raw []byte
	if !testnet.WaitFor(10*time.Second, func() bool { raw, err = os.ReadFile(pidFile); return err == nil && len(raw) > 0 }) {
		return 0, fmt.Errorf("nginx wrote no pid: %v", err)
	}
	if master, err = strconv.Atoi(strings.TrimSpace(string(raw))); err != nil {
		return 0, fmt.Errorf("nginx.pid %q: %w", raw, err)
	}
	if !testnet.WaitFor(10*time.Second, listening) {
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return master, fmt.Errorf("nginx is not listening on both workers; error.log:\n%s", log)
	}
	_, err = testnet.RunClient(ns.Path(), testnet.ClientSpec{Dest: "127.0.0.1:8080", HTTPGets: nginxRequests, HTTPConcurrency: 16})
	return master, err
}

// keepaliveForgotten is the Connection header of the usual keep-alive
// recipe (nginxConf) without the upstream's keepalive: the upstream keeps
// the connection, and nginx, with no idle cache, closes it after each
// response, first, and holds the timewait: a port per request. (With
// nginx's default, Connection: close, the upstream's FIN and nginx's
// close race: a few of 200 connections left nginx a timewait here.)
const keepaliveForgotten = `proxy_set_header Connection "";`

// checkNginxRow asserts the row of nginx's workers toward the upstream:
// every request's connection, by both workers, each closed by nginx
// first (a timewait each), per-request, with nginx's own advice first
// (the program is stripped: known by its name) and no Go advice; the
// stack taken, but no call site vouched for (Debian builds nginx without
// frame pointers).
func checkNginxRow(t *testing.T, rows []report.Row, upstream string) {
	t.Helper()
	for _, r := range rows {
		if r.Comm != "nginx" || r.Role != "client" {
			continue
		}
		if dest := netip.AddrPortFrom(r.Daddr, r.Dport).String(); dest != upstream || r.Connects != nginxRequests ||
			r.Timewait != nginxRequests || r.ProcessCount != 2 {
			t.Errorf("nginx row: dest %s, %d connects and %d timewait by %d processes; want %s, %d of each by 2",
				dest, r.Connects, r.Timewait, r.ProcessCount, upstream, nginxRequests)
		}
		if r.Verdict != "per-request" || r.ClientLibrary != "nginx" || len(r.Advice) == 0 ||
			!strings.HasPrefix(r.Advice[0], "nginx: give the upstream block keepalive") {
			t.Errorf("nginx row: verdict %q, library %q, advice %q; want per-request, nginx, nginx's keepalive first",
				r.Verdict, r.ClientLibrary, r.Advice)
		}
		for _, a := range r.Advice {
			if strings.Contains(a, "MaxIdleConnsPerHost") {
				t.Errorf("nginx row advises Go's %q", a)
			}
		}
		note := "stack unavailable (no frame pointers?) in executable nginx"
		if r.CallSite != "" || r.CallSiteNote != note || len(r.Stack) != 1 {
			t.Errorf("nginx row: call site %q, note %q, stack %+v; want \"\", %q, frame 0 alone", r.CallSite, r.CallSiteNote, r.Stack, note)
		}
		return
	}
	t.Fatalf("no nginx row in %+v", rows)
}

// nginx (Debian's, stripped) proxying to an upstream without keepalive,
// under `twtrace top -o json`: its two workers fold into one row that
// opens a connection per request and closes it first, with nginx's
// advice first.
func TestTopNginxUpstream(t *testing.T) {
	requireBPF(t)
	ns := nginxNetns(t)
	up := testnet.StartHTTPServer(t, ns)
	nginx, dir := nginxCmd(t, up.Addr, keepaliveForgotten)
	ns.Do(t, nginx.Start)
	t.Cleanup(func() { nginx.Process.Signal(syscall.SIGQUIT); nginx.Wait() })
	cmd, stdout, rd := startTopCLI(t, ns, "--interval", "3s")
	if _, err := nginxLoad(ns, dir); err != nil {
		t.Fatal(err)
	}
	f := lastTopFrame(t, cmd, stdout, rd)
	checkNginxRow(t, f.Rows, up.Addr)
}

// The same under `twtrace run -- nginx`: run traces the master and the
// workers it forks until nginx quits (SIGQUIT, as `nginx -s quit`).
func TestRunNginxUpstream(t *testing.T) {
	requireBPF(t)
	ns := nginxNetns(t)
	up := testnet.StartHTTPServer(t, ns)
	nginx, dir := nginxCmd(t, up.Addr, keepaliveForgotten)
	loaded := make(chan error, 1)
	go func() {
		master, err := nginxLoad(ns, dir)
		if master != 0 {
			syscall.Kill(master, syscall.SIGQUIT) // as nginx -s quit
		}
		loaded <- err
	}()
	res := twtraceRun(t, ns, append([]string{"--"}, nginx.Args...)...)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if res.code != 0 || res.report == nil {
		t.Fatalf("exit %d, report %+v; stdout %s, stderr %s", res.code, res.report, res.stdout, res.stderr)
	}
	checkNginxRow(t, res.report.Rows, up.Addr)
}
