package metrics

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func sample() Stats {
	return Stats{
		Version:  "v1.2.3",
		Digest:   "abc123",
		Config:   "/etc/map646.hcl",
		Started:  time.Unix(1700000000, 0),
		Mappings: 2,
		Tun:      "map646",
		Healthy:  true,
		Routes:   3,
		// One main-table route was there before the daemon.
		RoutesPreexisting: 1,
		Packets: []Count{
			{Dir: "4to6", Kind: "tcp", Value: 10},
			{Dir: "6to4", Kind: "udp", Value: 7},
		},
		Bytes:         []Count{{Dir: "4to6", Value: 1400}},
		Drops:         []Count{{Dir: "4to6", Kind: "malformed", Value: 1}},
		Emitted:       4,
		Link:          []Count{{Kind: "read_errors", Value: 2}},
		Reloads:       Reloads{OK: 5, Failed: 1, Last: time.Unix(1700000100, 0)},
		Repairs:       []Count{{Kind: "sysctl", Value: 2}, {Kind: "route", Value: 1}},
		ControlClosed: []Count{{Kind: "idle", Value: 7}, {Kind: "evicted", Value: 0}, {Kind: "refused", Value: 2}},
	}
}

func TestCollectorExposition(t *testing.T) {
	c := NewCollector(sample)
	want := `
# HELP map646_config_reloads_total Configuration reloads, by result.
# TYPE map646_config_reloads_total counter
map646_config_reloads_total{result="failure"} 1
map646_config_reloads_total{result="success"} 5
# HELP map646_drops_total Packets not translated, by direction and reason.
# TYPE map646_drops_total counter
map646_drops_total{direction="4to6",reason="malformed"} 1
# HELP map646_mappings Explicit address mappings (RFC 7757) in the running configuration.
# TYPE map646_mappings gauge
map646_mappings 2
# HELP map646_packets_total Packets translated, by direction and protocol.
# TYPE map646_packets_total counter
map646_packets_total{direction="4to6",protocol="tcp"} 10
map646_packets_total{direction="6to4",protocol="udp"} 7
# HELP map646_config_info The running configuration (sha256 of the HCL and mappings files).
# TYPE map646_config_info gauge
map646_config_info{digest="abc123",file="/etc/map646.hcl"} 1
# HELP map646_link_events_total Link-level counters of the tun queues.
# TYPE map646_link_events_total counter
map646_link_events_total{counter="read_errors"} 2
# HELP map646_routes_preexisting Wanted routes another party had installed first: left alone, not replaced, never removed.
# TYPE map646_routes_preexisting gauge
map646_routes_preexisting 1
# HELP map646_kernel_repairs_total Kernel state of the translator put back after someone else changed or removed it, by what: a forwarding sysctl, a route, a policy rule, an address.
# TYPE map646_kernel_repairs_total counter
map646_kernel_repairs_total{what="route"} 1
map646_kernel_repairs_total{what="sysctl"} 2
# HELP map646_control_connections_closed_total Control socket connections the daemon closed on its own: idle (no request for 30 s), evicted (the oldest idle one, to stay within the cap of 64) or refused (at the cap, every connection busy).
# TYPE map646_control_connections_closed_total counter
map646_control_connections_closed_total{reason="evicted"} 0
map646_control_connections_closed_total{reason="idle"} 7
map646_control_connections_closed_total{reason="refused"} 2
# HELP map646_datapath_healthy 1 when the data path can forward: its links are up, its routes and forwarding sysctls in place and every queue makes progress.
# TYPE map646_datapath_healthy gauge
map646_datapath_healthy 1
# HELP map646_config_last_reload_timestamp_seconds When the configuration was last reloaded successfully.
# TYPE map646_config_last_reload_timestamp_seconds gauge
map646_config_last_reload_timestamp_seconds 1.7000001e+09
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"map646_config_reloads_total", "map646_drops_total", "map646_mappings", "map646_packets_total",
		"map646_config_info", "map646_link_events_total", "map646_datapath_healthy", "map646_routes_preexisting",
		"map646_config_last_reload_timestamp_seconds", "map646_kernel_repairs_total",
		"map646_control_connections_closed_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if n := testutil.CollectAndCount(c, "map646_build_info"); n != 1 {
		t.Errorf("build_info: %d series", n)
	}
}

// TestCollectorReadsAtScrapeTime: each scrape sees the counters as they
// are then, no caching and no updates pushed from the packet path.
func TestCollectorReadsAtScrapeTime(t *testing.T) {
	var n atomic.Uint64
	c := NewCollector(func() Stats {
		return Stats{Packets: []Count{{Dir: "4to6", Kind: "udp", Value: n.Load()}}}
	})
	for _, v := range []uint64{0, 3, 1000} {
		n.Store(v)
		want := "# HELP map646_packets_total Packets translated, by direction and protocol.\n# TYPE map646_packets_total counter\n" +
			"map646_packets_total{direction=\"4to6\",protocol=\"udp\"} " + map[uint64]string{0: "0", 3: "3", 1000: "1000"}[v] + "\n"
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "map646_packets_total"); err != nil {
			t.Error(err)
		}
	}
}

func TestServerMetricsAndHealthz(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	stats := func() Stats {
		s := sample()
		s.Healthy = healthy.Load()
		s.Announcer = []Status{{Name: "fake", Status: fakeSource{up: true, sent: 3, links: []string{"eth1"}}}}
		return s
	}
	srv, err := Listen("127.0.0.1:0", stats, healthy.Load, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + srv.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `map646_packets_total{direction="4to6",protocol="tcp"} 10`) ||
		!strings.Contains(body, `map646_fake_sent_total{kind="hello",link="eth1"} 3`) ||
		!strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz healthy: %d %q", code, body)
	}
	healthy.Store(false)
	if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz unhealthy: %d", code)
	}
	if code, _ := get("/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d", code)
	}
	if err := srv.Close(); err != nil {
		t.Error(err)
	}
	if _, err := http.Get(base + "/metrics"); err == nil {
		t.Error("still serving after Close")
	}
}

func alwaysHealthy() bool { return true }

// TestHealthzReadsNoStats: /healthz answers from its health getter while
// a Stats snapshot is stuck (an announcer's status waiting on its
// routing daemon, the route tracker held by a restore); /metrics, which
// needs the snapshot, waits.
func TestHealthzReadsNoStats(t *testing.T) {
	stuck := make(chan struct{})
	stats := func() Stats { <-stuck; return sample() }
	var servers []*Server
	t.Cleanup(func() {
		close(stuck)
		for _, s := range servers {
			s.Close()
		}
	})
	for _, healthy := range []bool{true, false} {
		srv, err := Listen("127.0.0.1:0", stats, func() bool { return healthy }, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv)
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + srv.Addr().String() + "/healthz")
		if err != nil {
			t.Fatalf("healthy %v: /healthz while Stats is stuck: %v", healthy, err)
		}
		resp.Body.Close()
		want := map[bool]int{true: http.StatusOK, false: http.StatusServiceUnavailable}[healthy]
		if resp.StatusCode != want {
			t.Errorf("healthy %v: /healthz %d, want %d", healthy, resp.StatusCode, want)
		}
		c.Timeout = 100 * time.Millisecond
		if resp, err := c.Get("http://" + srv.Addr().String() + "/metrics"); err == nil {
			resp.Body.Close()
			t.Errorf("healthy %v: /metrics answered though its Stats is stuck: the test's fake does not block", healthy)
		}
	}
}

func TestListenBadAddress(t *testing.T) {
	if _, err := Listen("not an address", sample, alwaysHealthy, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("no error for a bad listen address")
	}
}

// TestMappingCollector: the per-mapping series are exported for the
// entries top returns at scrape time (the daemon's top N), four per
// entry; none while it returns none.
func TestMappingCollector(t *testing.T) {
	var top []MappingCount
	c := NewMappingCollector(func() []MappingCount { return top })
	if n := testutil.CollectAndCount(c); n != 0 {
		t.Errorf("%d mapping series without mapping counters", n)
	}
	top = []MappingCount{
		{IPv4: "198.51.100.10/32", IPv6: "2001:db8:6::10/128", Packets4to6: 5, Bytes4to6: 500, Packets6to4: 4, Bytes6to4: 320},
		{IPv4: "198.51.100.11/32", IPv6: "2001:db8:6::11/128", Packets4to6: 1, Bytes4to6: 60},
	}
	want := `
# HELP map646_mapping_packets_total Packets translated for one EAM entry (the metrics.mapping_top busiest by packets), by direction.
# TYPE map646_mapping_packets_total counter
map646_mapping_packets_total{direction="4to6",ipv4="198.51.100.10/32",ipv6="2001:db8:6::10/128"} 5
map646_mapping_packets_total{direction="6to4",ipv4="198.51.100.10/32",ipv6="2001:db8:6::10/128"} 4
map646_mapping_packets_total{direction="4to6",ipv4="198.51.100.11/32",ipv6="2001:db8:6::11/128"} 1
map646_mapping_packets_total{direction="6to4",ipv4="198.51.100.11/32",ipv6="2001:db8:6::11/128"} 0
# HELP map646_mapping_bytes_total Bytes received for translation for one EAM entry (the metrics.mapping_top busiest by packets), by direction.
# TYPE map646_mapping_bytes_total counter
map646_mapping_bytes_total{direction="4to6",ipv4="198.51.100.10/32",ipv6="2001:db8:6::10/128"} 500
map646_mapping_bytes_total{direction="6to4",ipv4="198.51.100.10/32",ipv6="2001:db8:6::10/128"} 320
map646_mapping_bytes_total{direction="4to6",ipv4="198.51.100.11/32",ipv6="2001:db8:6::11/128"} 60
map646_mapping_bytes_total{direction="6to4",ipv4="198.51.100.11/32",ipv6="2001:db8:6::11/128"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "map646_mapping_packets_total", "map646_mapping_bytes_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
