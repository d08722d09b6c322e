package ra

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/map646/map646/appliance/metrics"
)

// statusCollector is the daemon's metrics collector with the advertisers'
// statuses as its only announcer.
func statusCollector(ss Statuses) *metrics.Collector {
	return metrics.NewCollector(func() metrics.Stats {
		return metrics.Stats{Announcer: []metrics.Status{{Name: "ra", Status: ss}}}
	})
}

// raCounters are the per-interface counter series, in exposition order.
var raCounters = []struct{ name, help string }{
	{"map646_ra_advertisements_sent_total", "Router advertisements sent on the interface, all kinds."},
	{"map646_ra_solicited_advertisements_total", "Router advertisements sent in answer to a router solicitation."},
	{"map646_ra_goodbye_advertisements_total", "Router advertisements sent with lifetime 0 to withdraw routes."},
	{"map646_ra_solicitations_received_total", "Router solicitations received on the interface."},
	{"map646_ra_solicitations_rate_limited_total", "Valid router solicitations answered by an advertisement already scheduled (RFC 4861 section 6.2.6 rate limit)."},
	{"map646_ra_send_errors_total", "Router advertisements that could not be sent."},
}

// wantCounters is the exposition of the counter series of ss.
func wantCounters(ss Statuses) string {
	var b strings.Builder
	for i, c := range raCounters {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", c.name, c.help, c.name)
		for _, s := range ss {
			v := []uint64{s.Sent, s.Solicited, s.Goodbyes, s.RSReceived, s.RSRateLimited, s.SendErrors}[i]
			fmt.Fprintf(&b, "%s{interface=%q} %d\n", c.name, s.Interface, v)
		}
	}
	const ignored = "map646_ra_solicitations_ignored_total"
	fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", ignored,
		"Router solicitations ignored as invalid (RFC 4861 section 6.1.1), by reason: hop_limit (not 255) or invalid (malformed).", ignored)
	for _, s := range ss {
		fmt.Fprintf(&b, "%s{interface=%q,reason=\"hop_limit\"} %d\n", ignored, s.Interface, s.RSBadHopLimit)
		fmt.Fprintf(&b, "%s{interface=%q,reason=\"invalid\"} %d\n", ignored, s.Interface, s.RSInvalid)
	}
	return b.String()
}

func counterNames() []string {
	var n []string
	for _, c := range raCounters {
		n = append(n, c.name)
	}
	return append(n, "map646_ra_solicitations_ignored_total")
}

func TestStatusesMetrics(t *testing.T) {
	ss := Statuses{
		{Interface: "eth1", Healthy: true, Routes: []string{"2001:db8:64::/96"},
			Sent: 12, Solicited: 3, Goodbyes: 1, RSReceived: 40, RSBadHopLimit: 5, RSInvalid: 6, RSRateLimited: 26,
			SendErrors: 2, LastSent: time.Unix(1700000000, 0)},
		{Interface: "eth2"},
	}
	c := statusCollector(ss)
	want := wantCounters(ss) + `
# HELP map646_ra_healthy 1 while router advertisements on the interface announce the translator (the data path is healthy).
# TYPE map646_ra_healthy gauge
map646_ra_healthy{interface="eth1"} 1
map646_ra_healthy{interface="eth2"} 0
# HELP map646_ra_routes Routes (RFC 4191 route information options) advertised on the interface.
# TYPE map646_ra_routes gauge
map646_ra_routes{interface="eth1"} 1
map646_ra_routes{interface="eth2"} 0
# HELP map646_ra_last_sent_timestamp_seconds When the last router advertisement was sent on the interface.
# TYPE map646_ra_last_sent_timestamp_seconds gauge
map646_ra_last_sent_timestamp_seconds{interface="eth1"} 1.7e+09
`
	if !strings.Contains(want, `map646_ra_send_errors_total{interface="eth1"} 2`) ||
		!strings.Contains(want, `map646_ra_solicitations_ignored_total{interface="eth1",reason="hop_limit"} 5`) ||
		!strings.Contains(want, `map646_ra_solicitations_rate_limited_total{interface="eth1"} 26`) {
		t.Fatalf("expected exposition is wrong:\n%s", want)
	}
	names := append(counterNames(), "map646_ra_healthy", "map646_ra_routes", "map646_ra_last_sent_timestamp_seconds")
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	if n := testutil.CollectAndCount(statusCollector(Statuses{}), names...); n != 0 {
		t.Errorf("%d series without interfaces, want 0", n)
	}
}
