// Package metrics exposes a running translator's counters to Prometheus
// and to `map646 stats`. Nothing here is on the packet path: a Collector
// asks for a Stats snapshot at scrape time, and the data path only ever
// increments its own per-worker counters.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Stats is one snapshot of a running translator. The same value is what
// `map646 stats --json` prints, so its JSON names are part of the CLI.
type Stats struct {
	Version string `json:"version"`
	Digest  string `json:"config_digest"` // of the configuration running
	// PendingDigest is that of the file last reloaded while some of its
	// settings (tun, metrics, log) wait for a restart; "" when none do.
	PendingDigest string    `json:"pending_config_digest,omitempty"`
	Config        string    `json:"config_file"`
	Started       time.Time `json:"started"`
	Mappings      int       `json:"mappings"`
	Tun           string    `json:"tun"`
	Offloads      string    `json:"offloads,omitempty"`
	MetricsListen string    `json:"metrics_listen,omitempty"` // bound address of /metrics
	Healthy       bool      `json:"healthy"`
	Routes        int       `json:"routes"`
	// RoutesPreexisting counts wanted main-table routes that someone
	// else had installed: left alone, never removed.
	RoutesPreexisting int     `json:"routes_preexisting"`
	Packets           []Count `json:"packets"`      // Dir, Kind = protocol
	Bytes             []Count `json:"bytes"`        // Dir
	Drops             []Count `json:"drops"`        // Dir, Kind = reason
	Emitted           uint64  `json:"emitted"`      // packets the translator made itself (ICMP errors, fragments)
	Hairpinned        uint64  `json:"hairpinned"`   // RFC 7757 section 4.2 hairpinned packets
	RateLimited       uint64  `json:"rate_limited"` // translator-originated ICMP errors suppressed by the rate limit
	Link              []Count `json:"link"`         // Kind = link-level counter (read errors, ...)
	Reloads           Reloads `json:"reloads"`
	// Repairs count what the daemon put back after someone else
	// changed or removed it; Kind = sysctl, route, rule, address.
	Repairs []Count `json:"repairs,omitempty"`
	// ControlClosed count the control connections the daemon closed on
	// its own; Kind = idle, evicted, refused.
	ControlClosed []Count  `json:"control_connections_closed,omitempty"`
	Announcer     []Status `json:"announcers,omitempty"`
}

// MappingCount is one EAM entry's counters (translator.mapping_counters):
// packets and bytes per direction, bytes as received before translation.
// It is also one record of `map646 stats --mappings --format json`.
type MappingCount struct {
	IPv4        string `json:"ipv4"`
	IPv6        string `json:"ipv6"`
	Packets4to6 uint64 `json:"packets_4to6"`
	Bytes4to6   uint64 `json:"bytes_4to6"`
	Packets6to4 uint64 `json:"packets_6to4"`
	Bytes6to4   uint64 `json:"bytes_6to4"`
}

// Count is one counter value with its labels.
type Count struct {
	Dir   string `json:"direction,omitempty"`
	Kind  string `json:"kind,omitempty"`
	Value uint64 `json:"value"`
}

// Reloads counts configuration reloads.
type Reloads struct {
	OK        uint64    `json:"success"`
	Failed    uint64    `json:"failure"`
	Last      time.Time `json:"last,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// Status is what one announcer (BGP, router advertisements) reports.
type Status struct {
	Name   string `json:"name"`
	Status any    `json:"status"`
}

var (
	descPackets  = prometheus.NewDesc("map646_packets_total", "Packets translated, by direction and protocol.", []string{"direction", "protocol"}, nil)
	descBytes    = prometheus.NewDesc("map646_bytes_total", "Bytes received for translation, by direction.", []string{"direction"}, nil)
	descDrops    = prometheus.NewDesc("map646_drops_total", "Packets not translated, by direction and reason.", []string{"direction", "reason"}, nil)
	descEmitted  = prometheus.NewDesc("map646_emitted_packets_total", "Packets the translator originated (ICMP errors, fragments).", nil, nil)
	descHairpin  = prometheus.NewDesc("map646_hairpinned_packets_total", "Packets hairpinned (RFC 7757 section 4.2), also counted as 6to4.", nil, nil)
	descRateLim  = prometheus.NewDesc("map646_icmp_errors_rate_limited_total", "Translator-originated ICMP errors suppressed by the rate limit.", nil, nil)
	descLink     = prometheus.NewDesc("map646_link_events_total", "Link-level counters of the tun queues.", []string{"counter"}, nil)
	descMappings = prometheus.NewDesc("map646_mappings", "Explicit address mappings (RFC 7757) in the running configuration.", nil, nil)
	descRoutes   = prometheus.NewDesc("map646_routes", "Kernel routes the daemon installed.", nil, nil)
	descPreexist = prometheus.NewDesc("map646_routes_preexisting", "Wanted routes another party had installed first: left alone, not replaced, never removed.", nil, nil)
	descRepairs  = prometheus.NewDesc("map646_kernel_repairs_total", "Kernel state of the translator put back after someone else changed or removed it, by what: a forwarding sysctl, a route, a policy rule, an address.", []string{"what"}, nil)
	descCtlClose = prometheus.NewDesc("map646_control_connections_closed_total", "Control socket connections the daemon closed on its own: idle (no request for 30 s), evicted (the oldest idle one, to stay within the cap of 64) or refused (at the cap, every connection busy).", []string{"reason"}, nil)
	descHealthy  = prometheus.NewDesc("map646_datapath_healthy", "1 when the data path can forward: its links are up, its routes and forwarding sysctls in place and every queue makes progress.", nil, nil)
	descBuild    = prometheus.NewDesc("map646_build_info", "The running binary.", []string{"version", "goversion"}, nil)
	descConfig   = prometheus.NewDesc("map646_config_info", "The running configuration (sha256 of the HCL and mappings files).", []string{"digest", "file"}, nil)
	descReloads  = prometheus.NewDesc("map646_config_reloads_total", "Configuration reloads, by result.", []string{"result"}, nil)
	descLastRel  = prometheus.NewDesc("map646_config_last_reload_timestamp_seconds", "When the configuration was last reloaded successfully.", nil, nil)
	descStarted  = prometheus.NewDesc("map646_start_time_seconds", "When the daemon started.", nil, nil)
	descMapPkts  = prometheus.NewDesc("map646_mapping_packets_total", "Packets translated for one EAM entry (the metrics.mapping_top busiest by packets), by direction.", []string{"ipv4", "ipv6", "direction"}, nil)
	descMapBytes = prometheus.NewDesc("map646_mapping_bytes_total", "Bytes received for translation for one EAM entry (the metrics.mapping_top busiest by packets), by direction.", []string{"ipv4", "ipv6", "direction"}, nil)
)

// Collector is a prometheus.Collector that reads a Stats snapshot at
// scrape time. Besides the translator's own series it emits those of every
// announcer whose status is a Source.
type Collector struct {
	stats func() Stats
}

// NewCollector returns a collector over stats, which must be safe to call
// from any goroutine.
func NewCollector(stats func() Stats) *Collector { return &Collector{stats: stats} }

// Describe implements prometheus.Collector. It sends nothing, which makes
// the collector unchecked: the announcers' series depend on the running
// configuration (BGP neighbors, RA interfaces), which a reload changes, and
// one snapshot per scrape must serve both the translator's series and
// theirs.
func (c *Collector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range s.Packets {
		counter(descPackets, p.Value, p.Dir, p.Kind)
	}
	for _, b := range s.Bytes {
		counter(descBytes, b.Value, b.Dir)
	}
	for _, d := range s.Drops {
		counter(descDrops, d.Value, d.Dir, d.Kind)
	}
	counter(descEmitted, s.Emitted)
	counter(descHairpin, s.Hairpinned)
	counter(descRateLim, s.RateLimited)
	for _, l := range s.Link {
		counter(descLink, l.Value, l.Kind)
	}
	gauge(descMappings, float64(s.Mappings))
	gauge(descRoutes, float64(s.Routes))
	gauge(descPreexist, float64(s.RoutesPreexisting))
	h := 0.0
	if s.Healthy {
		h = 1
	}
	gauge(descHealthy, h)
	for _, r := range s.Repairs {
		counter(descRepairs, r.Value, r.Kind)
	}
	for _, c := range s.ControlClosed {
		counter(descCtlClose, c.Value, c.Kind)
	}
	gauge(descBuild, 1, s.Version, runtime.Version())
	gauge(descConfig, 1, s.Digest, s.Config)
	counter(descReloads, s.Reloads.OK, "success")
	counter(descReloads, s.Reloads.Failed, "failure")
	if !s.Reloads.Last.IsZero() {
		gauge(descLastRel, float64(s.Reloads.Last.UnixNano())/1e9)
	}
	if !s.Started.IsZero() {
		gauge(descStarted, float64(s.Started.UnixNano())/1e9)
	}
	collectSources(ch, s.Announcer)
}

// MappingCollector exports per-mapping counters: those of the entries top
// returns at scrape time (the daemon's metrics.mapping_top busiest; none
// while that is 0). It is a collector of its own, not part of Stats, so
// that /healthz and `map646 stats` never pay for ranking a large table.
type MappingCollector struct {
	top func() []MappingCount
}

// NewMappingCollector returns a collector over top, which must be safe to
// call from any goroutine.
func NewMappingCollector(top func() []MappingCount) *MappingCollector {
	return &MappingCollector{top: top}
}

// Describe implements prometheus.Collector; unchecked, like Collector
// (the entries exported change from scrape to scrape).
func (c *MappingCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *MappingCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.top() {
		for _, v := range [4]struct {
			d   *prometheus.Desc
			v   uint64
			dir string
		}{{descMapPkts, m.Packets4to6, "4to6"}, {descMapPkts, m.Packets6to4, "6to4"}, {descMapBytes, m.Bytes4to6, "4to6"}, {descMapBytes, m.Bytes6to4, "6to4"}} {
			ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.v), m.IPv4, m.IPv6, v.dir)
		}
	}
}

// Handler serves /metrics (Prometheus text format: the translator's
// collector plus the Go runtime and process collectors) and /healthz (200
// "ok" while healthy reports the data path healthy, 503 otherwise).
// /healthz reads healthy alone, never a full Stats: a load balancer's or
// service manager's probe must answer at once whatever a snapshot waits
// on (a BGP speaker's status, the route tracker during a restore).
// More collectors (the server's own counters) join the translator's.
func Handler(stats func() Stats, healthy func() bool, more ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(stats),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(more...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !healthy() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("unhealthy\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Server is the metrics HTTP listener.
type Server struct {
	srv  *http.Server
	ln   *capListener
	done chan error
	once sync.Once
	err  error
}

// serverLimits bound what one client can hold of the metrics server: a
// scraper needs one short request at a time, so slow or idle clients
// (slowloris) are cut off rather than allowed to pile up.
type serverLimits struct {
	maxConns          int           // open connections; the oldest idle one makes room for a new one
	readHeaderTimeout time.Duration // to send the request line and headers
	readTimeout       time.Duration // to send the whole request
	writeTimeout      time.Duration // from the end of the headers to the end of the reply
	idleTimeout       time.Duration // between requests on a kept-alive connection
	maxHeaderBytes    int
}

var limits = serverLimits{
	maxConns:          64,
	readHeaderTimeout: 5 * time.Second,
	readTimeout:       10 * time.Second,
	writeTimeout:      30 * time.Second,
	idleTimeout:       60 * time.Second,
	maxHeaderBytes:    8 << 10,
}

// Listen starts serving Handler(stats, healthy, more...) on addr
// ("[::1]:9646"). It returns once the socket is bound, so a bad address
// is an error here.
func Listen(addr string, stats func() Stats, healthy func() bool, log *slog.Logger, more ...prometheus.Collector) (*Server, error) {
	inner, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ln := newCapListener(inner, limits.maxConns)
	h := Handler(stats, healthy, append(more, ln)...)
	s := &Server{
		srv: &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer ln.busy(r.Context())()
				h.ServeHTTP(w, r)
			}),
			ReadHeaderTimeout: limits.readHeaderTimeout,
			ReadTimeout:       limits.readTimeout,
			WriteTimeout:      limits.writeTimeout,
			IdleTimeout:       limits.idleTimeout,
			MaxHeaderBytes:    limits.maxHeaderBytes,
			ConnContext:       ln.connContext,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Addr is the bound address (useful with port 0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener, letting scrapes in progress finish briefly.
// Closing twice is harmless.
func (s *Server) Close() error {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := s.srv.Shutdown(ctx)
		s.err = errors.Join(err, <-s.done)
	})
	return s.err
}
