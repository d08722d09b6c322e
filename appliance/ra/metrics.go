package ra

import "github.com/map646/map646/appliance/metrics"

// Statuses is the status of a Set, one per interface.
type Statuses []Status

var _ metrics.Source = Statuses(nil)

// Collect implements metrics.Source: the Prometheus series of every
// interface's advertiser, from this snapshot.
func (ss Statuses) Collect(emit metrics.Emit) {
	for _, s := range ss {
		i := s.Interface
		emit("map646_ra_healthy", "1 while router advertisements on the interface announce the translator (the data path is healthy).",
			metrics.Gauge, metrics.Bool(s.Healthy), "interface", i)
		emit("map646_ra_routes", "Routes (RFC 4191 route information options) advertised on the interface.",
			metrics.Gauge, float64(len(s.Routes)), "interface", i)
		emit("map646_ra_advertisements_sent_total", "Router advertisements sent on the interface, all kinds.",
			metrics.Counter, float64(s.Sent), "interface", i)
		emit("map646_ra_solicited_advertisements_total", "Router advertisements sent in answer to a router solicitation.",
			metrics.Counter, float64(s.Solicited), "interface", i)
		emit("map646_ra_goodbye_advertisements_total", "Router advertisements sent with lifetime 0 to withdraw routes.",
			metrics.Counter, float64(s.Goodbyes), "interface", i)
		emit("map646_ra_solicitations_received_total", "Router solicitations received on the interface.",
			metrics.Counter, float64(s.RSReceived), "interface", i)
		const ignored = "Router solicitations ignored as invalid (RFC 4861 section 6.1.1), by reason: hop_limit (not 255) or invalid (malformed)."
		emit("map646_ra_solicitations_ignored_total", ignored, metrics.Counter, float64(s.RSBadHopLimit), "interface", i, "reason", "hop_limit")
		emit("map646_ra_solicitations_ignored_total", ignored, metrics.Counter, float64(s.RSInvalid), "interface", i, "reason", "invalid")
		emit("map646_ra_solicitations_rate_limited_total", "Valid router solicitations answered by an advertisement already scheduled (RFC 4861 section 6.2.6 rate limit).",
			metrics.Counter, float64(s.RSRateLimited), "interface", i)
		emit("map646_ra_send_errors_total", "Router advertisements that could not be sent.",
			metrics.Counter, float64(s.SendErrors), "interface", i)
		if !s.LastSent.IsZero() {
			emit("map646_ra_last_sent_timestamp_seconds", "When the last router advertisement was sent on the interface.",
				metrics.Gauge, float64(s.LastSent.UnixNano())/1e9, "interface", i)
		}
	}
}
