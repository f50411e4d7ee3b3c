// Package kit is the small service toolkit shared by the Veza Go services (standard library only):
// JSON logs, build info, Prometheus metrics, /health /ready /version /metrics, the -healthcheck mode
// and graceful termination on SIGTERM (drain: /ready answers 503 for SHUTDOWN_DELAY_S, then shut down).
//
// The same file is copied into each Go service's build context (a context cannot reach outside itself);
// tests/unit/test_services_kit.py keeps the copies identical.
package kit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Build info, injected with -ldflags "-X .../kit.Version=... -X .../kit.Revision=... -X .../kit.Created=...".
var (
	Version  = "dev"
	Revision = "unknown"
	Created  = "unknown"
)

// Log writes one JSON object per line to stdout.
func Log(level, msg string, fields map[string]any) {
	rec := map[string]any{"ts": time.Now().UTC().Format(time.RFC3339Nano), "level": level, "msg": msg}
	for k, v := range fields {
		rec[k] = v
	}
	b, err := json.Marshal(rec)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"level":"error","msg":"log encoding failed: %s"}`, err))
	}
	logMu.Lock()
	os.Stdout.Write(append(b, '\n'))
	logMu.Unlock()
}

var logMu sync.Mutex

// Env returns the environment variable or a default.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// ---------------------------------------------------------------- metrics

var buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

type histogram struct {
	counts []uint64
	sum    float64
	count  uint64
}

// Metrics holds request counters and latency histograms, rendered in the Prometheus text format.
type Metrics struct {
	mu        sync.Mutex
	service   string
	requests  map[[3]string]uint64 // method, route, code
	durations map[string]*histogram
	started   time.Time
}

func NewMetrics(service string) *Metrics {
	return &Metrics{service: service, requests: map[[3]string]uint64{}, durations: map[string]*histogram{},
		started: time.Now()}
}

func (m *Metrics) observe(method, route string, code int, seconds float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[[3]string{method, route, strconv.Itoa(code)}]++
	h, ok := m.durations[route]
	if !ok {
		h = &histogram{counts: make([]uint64, len(buckets))}
		m.durations[route] = h
	}
	for i, b := range buckets {
		if seconds <= b {
			h.counts[i]++
		}
	}
	h.sum += seconds
	h.count++
}

// Render writes the metrics in the Prometheus text exposition format (version 0.0.4).
func (m *Metrics) Render() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var sb strings.Builder
	fmt.Fprintf(&sb, "# HELP veza_build_info Build information.\n# TYPE veza_build_info gauge\n")
	fmt.Fprintf(&sb, "veza_build_info{service=%q,version=%q,revision=%q} 1\n", m.service, Version, Revision)
	fmt.Fprintf(&sb, "# HELP veza_uptime_seconds Seconds since the process started.\n# TYPE veza_uptime_seconds gauge\n")
	fmt.Fprintf(&sb, "veza_uptime_seconds %.3f\n", time.Since(m.started).Seconds())
	fmt.Fprintf(&sb, "# HELP http_requests_total HTTP requests served.\n# TYPE http_requests_total counter\n")
	keys := make([][3]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return strings.Join(keys[i][:], " ") < strings.Join(keys[j][:], " ") })
	for _, k := range keys {
		fmt.Fprintf(&sb, "http_requests_total{method=%q,route=%q,code=%q} %d\n", k[0], k[1], k[2], m.requests[k])
	}
	fmt.Fprintf(&sb, "# HELP http_request_duration_seconds HTTP request latency.\n")
	fmt.Fprintf(&sb, "# TYPE http_request_duration_seconds histogram\n")
	routes := make([]string, 0, len(m.durations))
	for r := range m.durations {
		routes = append(routes, r)
	}
	sort.Strings(routes)
	for _, r := range routes {
		h := m.durations[r]
		for i, b := range buckets {
			fmt.Fprintf(&sb, "http_request_duration_seconds_bucket{route=%q,le=%q} %d\n", r,
				strconv.FormatFloat(b, 'g', -1, 64), h.counts[i])
		}
		fmt.Fprintf(&sb, "http_request_duration_seconds_bucket{route=%q,le=\"+Inf\"} %d\n", r, h.count)
		fmt.Fprintf(&sb, "http_request_duration_seconds_sum{route=%q} %.6f\n", r, h.sum)
		fmt.Fprintf(&sb, "http_request_duration_seconds_count{route=%q} %d\n", r, h.count)
	}
	return sb.String()
}

// ---------------------------------------------------------------- HTTP plumbing

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// JSON writes v as a JSON response with the given status.
func JSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Check is one readiness dependency: nil when it really answers.
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// RejectedError marks a check's error where the dependency answered and refused this service's credentials
// (a wrong password, an unknown user): waiting will not heal it. /ready lists such checks under "rejected",
// and the deploy stops on them at once (pipeline/stages/deploy/failfast.py) instead of waiting out Helm.
type RejectedError struct{ Err error }

func (e *RejectedError) Error() string { return "credentials rejected: " + e.Err.Error() }
func (e *RejectedError) Unwrap() error { return e.Err }

// Rejected wraps err as a RejectedError (nil stays nil).
func Rejected(err error) error {
	if err == nil {
		return nil
	}
	return &RejectedError{Err: err}
}

// Service is an HTTP server with the standard endpoints.
type Service struct {
	Name    string
	Addr    string
	Checks  []Check
	Metrics *Metrics
	mux     *http.ServeMux
	routes  map[string]bool
	// draining is set when SIGTERM arrives: /ready answers 503 so the endpoints drop the pod, the rest serve.
	draining atomic.Bool
}

func New(name, addr string) *Service {
	s := &Service{Name: name, Addr: addr, Metrics: NewMetrics(name), mux: http.NewServeMux(), routes: map[string]bool{}}
	s.Handle("/health", func(w http.ResponseWriter, r *http.Request) {
		JSON(w, http.StatusOK, map[string]any{"status": "ok", "service": name})
	})
	s.Handle("/ready", s.ready)
	s.Handle("/version", func(w http.ResponseWriter, r *http.Request) {
		JSON(w, http.StatusOK, map[string]any{"service": name, "version": Version, "revision": Revision,
			"created": Created})
	})
	s.Handle("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write([]byte(s.Metrics.Render()))
	})
	return s
}

// Handle registers a handler; a pattern ending in "/" is a prefix route (its metrics label is the pattern).
func (s *Service) Handle(pattern string, h http.HandlerFunc) {
	s.routes[pattern] = true
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h(sw, r)
		elapsed := time.Since(start)
		s.Metrics.observe(r.Method, pattern, sw.code, elapsed.Seconds())
		if pattern != "/health" && pattern != "/metrics" {
			Log("info", "request", map[string]any{"method": r.Method, "path": r.URL.Path, "status": sw.code,
				"duration_ms": float64(elapsed.Microseconds()) / 1000})
		}
	})
}

func (s *Service) ready(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		JSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "draining": true})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	results := map[string]string{}
	var rejected []string
	ok := true
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range s.Checks {
		wg.Add(1)
		go func(c Check) {
			defer wg.Done()
			err := c.Run(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ok = false
				results[c.Name] = err.Error()
				var rej *RejectedError
				if errors.As(err, &rej) {
					rejected = append(rejected, c.Name)
				}
			} else {
				results[c.Name] = "ok"
			}
		}(c)
	}
	wg.Wait()
	if ok {
		JSON(w, http.StatusOK, map[string]any{"ready": true, "checks": results})
		return
	}
	body := map[string]any{"ready": false, "checks": results}
	level := "warn"
	if len(rejected) > 0 {
		sort.Strings(rejected)
		body["rejected"] = rejected
		level = "error"
	}
	// The pod's log says why it is not Ready (the kubelet's probe event does not carry the body).
	Log(level, "not ready", map[string]any{"checks": results, "rejected": rejected})
	JSON(w, http.StatusServiceUnavailable, body)
}

// ShutdownDelay reads SHUTDOWN_DELAY_S: the seconds (a non-negative number, default 0) a terminating service
// keeps serving with /ready at 503 before it shuts down, so Kubernetes removes the pod from the Service's
// endpoints before its listener closes. An error names the variable and the value.
func ShutdownDelay() (time.Duration, error) {
	v := Env("SHUTDOWN_DELAY_S", "0")
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0 && f <= 3600) { // also refuses NaN
		return 0, fmt.Errorf("SHUTDOWN_DELAY_S must be a number of seconds from 0 to 3600, got %q", v)
	}
	return time.Duration(f * float64(time.Second)), nil
}

// Run serves on s.Addr until SIGTERM/SIGINT, then drains and shuts down as Serve does.
func (s *Service) Run(delay time.Duration) error {
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		return err
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	return s.Serve(ln, stop, delay)
}

// Serve serves on ln until a value arrives on stop; then /ready answers 503 {"draining": true} while every
// other endpoint keeps serving for delay, and the server shuts down gracefully (in-flight requests get up
// to 4 s). Returns nil after a clean shutdown, or the server's error.
func (s *Service) Serve(ln net.Listener, stop <-chan os.Signal, delay time.Duration) error {
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	Log("info", "listening", map[string]any{"service": s.Name, "addr": ln.Addr().String(), "version": Version,
		"revision": Revision})
	select {
	case err := <-errc:
		return err
	case sig := <-stop:
		s.draining.Store(true)
		Log("info", "draining", map[string]any{"signal": sig.String(), "delay_s": delay.Seconds()})
	}
	select {
	case err := <-errc:
		return err
	case <-time.After(delay):
	}
	Log("info", "shutting down", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	Log("info", "stopped", nil)
	return nil
}

// Main handles the -healthcheck flag (the image's HEALTHCHECK: no shell or curl in a scratch image),
// otherwise runs the service; it never returns.
func Main(s *Service) {
	for _, a := range os.Args[1:] {
		if a == "-healthcheck" || a == "--healthcheck" {
			os.Exit(Healthcheck(s.Addr))
		}
	}
	delay, err := ShutdownDelay()
	if err != nil {
		Log("error", "bad configuration", map[string]any{"error": err.Error()})
		os.Exit(2)
	}
	if err := s.Run(delay); err != nil {
		Log("error", "server failed", map[string]any{"error": err.Error()})
		os.Exit(1)
	}
	os.Exit(0)
}

// Healthcheck asks the local /health endpoint; 0 when it answers 200.
func Healthcheck(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 1
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + port + "/health")
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "healthcheck: status", resp.StatusCode)
		return 1
	}
	return 0
}

// Probe opens a TCP connection with the context's deadline, sends req and returns the first n bytes answered.
func Probe(ctx context.Context, addr string, req []byte, n int) ([]byte, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if len(req) > 0 {
		if _, err := conn.Write(req); err != nil {
			return nil, err
		}
	}
	buf := make([]byte, n)
	got := 0
	for got < n {
		k, err := conn.Read(buf[got:])
		got += k
		if err != nil {
			if got > 0 {
				break
			}
			return nil, err
		}
		if k > 0 && buf[got-1] == '\n' {
			break
		}
	}
	return buf[:got], nil
}
