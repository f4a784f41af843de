package agent

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// Limits that keep a slow or hostile client from holding the agent: a
// client that never sends its headers, or never reads the answer, is cut
// off; scrapes beyond maxScrapes at once get 503 at once.
const (
	readHeaderTimeout = 5 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxScrapes        = 4
)

// server is the agent's HTTP server: /metrics, /healthz, /readyz.
func (a *Agent) server() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{
		EnableOpenMetrics:   true,
		MaxRequestsInFlight: maxScrapes,
		Timeout:             writeTimeout - time.Second,
		ErrorLog:            slogPrinter{a.cfg.Log},
		ErrorHandling:       promhttp.ContinueOnError,
	}))
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "twtrace agent: /metrics /healthz /readyz")
	})
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.cfg.Log.Handler(), slog.LevelWarn),
	}
}

// readyz: 200 once every probe is attached and the first inventory read.
func (a *Agent) readyz(w http.ResponseWriter, _ *http.Request) {
	if !a.ready.Load() {
		http.Error(w, "not ready: loading the probes or reading the first inventory", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// healthz: 200 while frames keep coming (a refresh is at most three
// intervals late, plus a minute for a slow scan); before the first frame,
// the agent is starting and healthy.
func (a *Agent) healthz(w http.ResponseWriter, _ *http.Request) {
	if last := a.last.Load(); last != 0 {
		late := time.Since(time.Unix(0, last))
		if late > 3*a.cfg.Interval+time.Minute {
			http.Error(w, fmt.Sprintf("unhealthy: no refresh for %s", late.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// serve serves on ln, with TLS and basic auth when webConfig names
// exporter-toolkit's web configuration file.
func serve(ln net.Listener, srv *http.Server, webConfig string, log *slog.Logger) error {
	err := web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &webConfig}, log.With("component", "http"))
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// validateWebConfig checks the web configuration file before anything
// is loaded.
func validateWebConfig(path string) error {
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("invalid --web.config.file %s: %w", path, err)
	}
	return nil
}

// slogPrinter is promhttp's error log as slog warnings.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "error", fmt.Sprint(v...)) }
