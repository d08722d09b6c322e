package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is the Prometheus type of a series a Source emits.
type Kind int

const (
	Gauge   Kind = iota // a value that goes up and down
	Counter             // a value that only grows (name ends in _total)
)

// Emit adds one series to a scrape. labels are name, value pairs.
type Emit func(name, help string, kind Kind, value float64, labels ...string)

// Source is implemented by an announcer's status value (Status.Status) that
// has series of its own: BGP sessions, router advertisement counters. The
// Collector calls Collect on the snapshot it took for the scrape, so a
// source costs nothing between scrapes and this package needs to know
// nothing of the announcers.
type Source interface {
	Collect(emit Emit)
}

// collectSources sends the series of every announcer whose status is a
// Source. The descriptors are built per scrape: which series exist depends
// on the running configuration (neighbors, interfaces), which is why the
// Collector is unchecked.
func collectSources(ch chan<- prometheus.Metric, statuses []Status) {
	emit := func(name, help string, kind Kind, value float64, labels ...string) {
		if len(labels)%2 != 0 {
			ch <- prometheus.NewInvalidMetric(prometheus.NewDesc(name, help, nil, nil),
				fmt.Errorf("metrics: %s: odd number of label names and values %q", name, labels))
			return
		}
		names := make([]string, 0, len(labels)/2)
		values := make([]string, 0, len(labels)/2)
		for i := 0; i < len(labels); i += 2 {
			names = append(names, labels[i])
			values = append(values, labels[i+1])
		}
		vt := prometheus.GaugeValue
		if kind == Counter {
			vt = prometheus.CounterValue
		}
		m, err := prometheus.NewConstMetric(prometheus.NewDesc(name, help, names, nil), vt, value, values...)
		if err != nil {
			m = prometheus.NewInvalidMetric(prometheus.NewDesc(name, help, names, nil), err)
		}
		ch <- m
	}
	for _, s := range statuses {
		if src, ok := s.Status.(Source); ok {
			src.Collect(emit)
		}
	}
}

// Bool is 1 for true and 0 for false, for 0/1 gauges.
func Bool(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
