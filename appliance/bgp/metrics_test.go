package bgp

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/map646/map646/appliance/metrics"
)

// statusCollector is the daemon's metrics collector with the speaker's
// status as its only announcer.
func statusCollector(st func() Status) *metrics.Collector {
	return metrics.NewCollector(func() metrics.Stats {
		return metrics.Stats{Announcer: []metrics.Status{{Name: "bgp", Status: st()}}}
	})
}

func TestStatusMetrics(t *testing.T) {
	st := Status{
		LocalAS: speakerAS, RouterID: "192.0.2.2", Healthy: true, Updates: 3,
		Announced: []string{"198.51.100.0/24", "203.0.113.0/25", "2001:db8:64::/96"},
		Neighbors: []NeighborStatus{
			{Address: "192.0.2.1", RemoteAS: peerAS, State: "established", Established: true,
				Since: time.Unix(1700000000, 0), Advertised: 2, Received: 5, Flaps: 1, PrefixLimitHits: 4, SendHoldExpiries: 2},
			{Address: "2001:db8::1", RemoteAS: 64501, State: "active"},
		},
	}
	c := statusCollector(func() Status { return st })
	want := `
# HELP map646_bgp_healthy 1 while the BGP speaker announces the translator's prefixes (the data path is healthy).
# TYPE map646_bgp_healthy gauge
map646_bgp_healthy 1
# HELP map646_bgp_announcement_updates_total Announcements the BGP speaker applied (start, reloads, health changes).
# TYPE map646_bgp_announcement_updates_total counter
map646_bgp_announcement_updates_total 3
# HELP map646_bgp_announced_prefixes Prefixes the BGP speaker announces, by address family.
# TYPE map646_bgp_announced_prefixes gauge
map646_bgp_announced_prefixes{family="ipv4"} 2
map646_bgp_announced_prefixes{family="ipv6"} 1
# HELP map646_bgp_session_established 1 while the BGP session with the neighbor is Established.
# TYPE map646_bgp_session_established gauge
map646_bgp_session_established{neighbor="192.0.2.1",remote_as="64500"} 1
map646_bgp_session_established{neighbor="2001:db8::1",remote_as="64501"} 0
# HELP map646_bgp_session_state BGP session state (RFC 4271 section 8.2.2): 1 for the current state of the neighbor.
# TYPE map646_bgp_session_state gauge
map646_bgp_session_state{neighbor="192.0.2.1",state="active"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="connect"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="established"} 1
map646_bgp_session_state{neighbor="192.0.2.1",state="idle"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="openconfirm"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="opensent"} 0
map646_bgp_session_state{neighbor="2001:db8::1",state="active"} 1
map646_bgp_session_state{neighbor="2001:db8::1",state="connect"} 0
map646_bgp_session_state{neighbor="2001:db8::1",state="established"} 0
map646_bgp_session_state{neighbor="2001:db8::1",state="idle"} 0
map646_bgp_session_state{neighbor="2001:db8::1",state="openconfirm"} 0
map646_bgp_session_state{neighbor="2001:db8::1",state="opensent"} 0
# HELP map646_bgp_session_state_change_timestamp_seconds When the BGP session last came up or went down.
# TYPE map646_bgp_session_state_change_timestamp_seconds gauge
map646_bgp_session_state_change_timestamp_seconds{neighbor="192.0.2.1"} 1.7e+09
# HELP map646_bgp_session_flaps_total Times the BGP session left Established.
# TYPE map646_bgp_session_flaps_total counter
map646_bgp_session_flaps_total{neighbor="192.0.2.1"} 1
map646_bgp_session_flaps_total{neighbor="2001:db8::1"} 0
# HELP map646_bgp_prefixes_advertised Prefixes advertised to the BGP neighbor.
# TYPE map646_bgp_prefixes_advertised gauge
map646_bgp_prefixes_advertised{neighbor="192.0.2.1"} 2
map646_bgp_prefixes_advertised{neighbor="2001:db8::1"} 0
# HELP map646_bgp_prefix_limit_exceeded_total Sessions ended because the BGP neighbor sent more prefixes than max_prefixes allows.
# TYPE map646_bgp_prefix_limit_exceeded_total counter
map646_bgp_prefix_limit_exceeded_total{neighbor="192.0.2.1"} 4
map646_bgp_prefix_limit_exceeded_total{neighbor="2001:db8::1"} 0
# HELP map646_bgp_send_hold_timer_expired_total Sessions ended because the BGP neighbor accepted no message for send_hold_time (RFC 9687).
# TYPE map646_bgp_send_hold_timer_expired_total counter
map646_bgp_send_hold_timer_expired_total{neighbor="192.0.2.1"} 2
map646_bgp_send_hold_timer_expired_total{neighbor="2001:db8::1"} 0
# HELP map646_bgp_prefixes_received Prefixes received from the BGP neighbor (ignored: the speaker imports nothing).
# TYPE map646_bgp_prefixes_received gauge
map646_bgp_prefixes_received{neighbor="192.0.2.1"} 5
map646_bgp_prefixes_received{neighbor="2001:db8::1"} 0
`
	names := []string{"map646_bgp_healthy", "map646_bgp_announcement_updates_total", "map646_bgp_announced_prefixes",
		"map646_bgp_session_established", "map646_bgp_session_state", "map646_bgp_session_state_change_timestamp_seconds",
		"map646_bgp_session_flaps_total", "map646_bgp_prefixes_advertised", "map646_bgp_prefixes_received",
		"map646_bgp_prefix_limit_exceeded_total", "map646_bgp_send_hold_timer_expired_total"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}

	// Withdrawn and a state outside the FSM's six: nothing announced,
	// and the odd state still shows as the current one.
	st = Status{Neighbors: []NeighborStatus{{Address: "192.0.2.1", RemoteAS: peerAS, State: "unknown(9)"}}}
	want = `
# HELP map646_bgp_healthy 1 while the BGP speaker announces the translator's prefixes (the data path is healthy).
# TYPE map646_bgp_healthy gauge
map646_bgp_healthy 0
# HELP map646_bgp_announced_prefixes Prefixes the BGP speaker announces, by address family.
# TYPE map646_bgp_announced_prefixes gauge
map646_bgp_announced_prefixes{family="ipv4"} 0
map646_bgp_announced_prefixes{family="ipv6"} 0
# HELP map646_bgp_session_state BGP session state (RFC 4271 section 8.2.2): 1 for the current state of the neighbor.
# TYPE map646_bgp_session_state gauge
map646_bgp_session_state{neighbor="192.0.2.1",state="active"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="connect"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="established"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="idle"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="openconfirm"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="opensent"} 0
map646_bgp_session_state{neighbor="192.0.2.1",state="unknown(9)"} 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"map646_bgp_healthy", "map646_bgp_announced_prefixes", "map646_bgp_session_state"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "map646_bgp_session_state_change_timestamp_seconds"); n != 0 {
		t.Errorf("%d state change series for a session without a time, want 0", n)
	}
}
