package bgp

import (
	"net/netip"
	"strconv"

	"github.com/map646/map646/appliance/metrics"
)

// sessionStates are the RFC 4271 section 8.2.2 FSM states, as
// NeighborStatus.State spells them.
var sessionStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

var _ metrics.Source = Status{}

// Collect implements metrics.Source: the Prometheus series of the speaker,
// from this snapshot.
func (s Status) Collect(emit metrics.Emit) {
	emit("map646_bgp_healthy", "1 while the BGP speaker announces the translator's prefixes (the data path is healthy).",
		metrics.Gauge, metrics.Bool(s.Healthy))
	emit("map646_bgp_announcement_updates_total", "Announcements the BGP speaker applied (start, reloads, health changes).",
		metrics.Counter, float64(s.Updates))
	emit("map646_bgp_neighbors_stale", "1 while GoBGP does not list the BGP sessions in time: the session series are its last list.",
		metrics.Gauge, metrics.Bool(s.NeighborsStale))
	var v4, v6 int
	for _, a := range s.Announced {
		if p, err := netip.ParsePrefix(a); err == nil && p.Addr().Is4() {
			v4++
		} else if err == nil {
			v6++
		}
	}
	const announced = "Prefixes the BGP speaker announces, by address family."
	emit("map646_bgp_announced_prefixes", announced, metrics.Gauge, float64(v4), "family", "ipv4")
	emit("map646_bgp_announced_prefixes", announced, metrics.Gauge, float64(v6), "family", "ipv6")
	for _, n := range s.Neighbors {
		as := strconv.FormatUint(uint64(n.RemoteAS), 10)
		emit("map646_bgp_session_established", "1 while the BGP session with the neighbor is Established.",
			metrics.Gauge, metrics.Bool(n.Established), "neighbor", n.Address, "remote_as", as)
		// Every state is present, 1 for the current one, so that a
		// session that vanishes from one state shows up in another.
		const state = "BGP session state (RFC 4271 section 8.2.2): 1 for the current state of the neighbor."
		known := false
		for _, st := range sessionStates {
			known = known || st == n.State
			emit("map646_bgp_session_state", state, metrics.Gauge, metrics.Bool(st == n.State), "neighbor", n.Address, "state", st)
		}
		if !known && n.State != "" {
			emit("map646_bgp_session_state", state, metrics.Gauge, 1, "neighbor", n.Address, "state", n.State)
		}
		if !n.Since.IsZero() {
			emit("map646_bgp_session_state_change_timestamp_seconds", "When the BGP session last came up or went down.",
				metrics.Gauge, float64(n.Since.UnixNano())/1e9, "neighbor", n.Address)
		}
		emit("map646_bgp_session_flaps_total", "Times the BGP session left Established.",
			metrics.Counter, float64(n.Flaps), "neighbor", n.Address)
		emit("map646_bgp_prefixes_advertised", "Prefixes advertised to the BGP neighbor.",
			metrics.Gauge, float64(n.Advertised), "neighbor", n.Address)
		emit("map646_bgp_prefix_limit_exceeded_total", "Sessions ended because the BGP neighbor sent more prefixes than max_prefixes allows.",
			metrics.Counter, float64(n.PrefixLimitHits), "neighbor", n.Address)
		emit("map646_bgp_send_hold_timer_expired_total", "Sessions ended because the BGP neighbor accepted no message for send_hold_time (RFC 9687).",
			metrics.Counter, float64(n.SendHoldExpiries), "neighbor", n.Address)
		emit("map646_bgp_prefixes_received", "Prefixes received from the BGP neighbor (ignored: the speaker imports nothing).",
			metrics.Gauge, float64(n.Received), "neighbor", n.Address)
	}
}
