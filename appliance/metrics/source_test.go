package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeSource is an announcer status with series of its own.
type fakeSource struct {
	up    bool
	sent  uint64
	links []string
}

func (f fakeSource) Collect(emit Emit) {
	emit("map646_fake_up", "1 while the fake announcer announces.", Gauge, Bool(f.up))
	for _, l := range f.links {
		emit("map646_fake_sent_total", "Messages the fake announcer sent.", Counter, float64(f.sent), "link", l, "kind", "hello")
	}
}

// badSource emits a label name without its value.
type badSource struct{}

func (badSource) Collect(emit Emit) {
	emit("map646_bad", "Half a label.", Gauge, 1, "link")
}

func TestCollectorAnnouncerSources(t *testing.T) {
	src := fakeSource{up: true, sent: 7, links: []string{"eth1", "eth0"}}
	c := NewCollector(func() Stats {
		s := sample()
		s.Announcer = []Status{
			{Name: "plain", Status: map[string]int{"x": 1}}, // not a Source: JSON only
			{Name: "fake", Status: src},
		}
		return s
	})
	want := `
# HELP map646_fake_up 1 while the fake announcer announces.
# TYPE map646_fake_up gauge
map646_fake_up 1
# HELP map646_fake_sent_total Messages the fake announcer sent.
# TYPE map646_fake_sent_total counter
map646_fake_sent_total{kind="hello",link="eth0"} 7
map646_fake_sent_total{kind="hello",link="eth1"} 7
# HELP map646_mappings Explicit address mappings (RFC 7757) in the running configuration.
# TYPE map646_mappings gauge
map646_mappings 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "map646_fake_up", "map646_fake_sent_total", "map646_mappings"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
	// The statuses are read per scrape: a reload that drops the announcer
	// drops its series.
	if n := testutil.CollectAndCount(NewCollector(sample), "map646_fake_up", "map646_fake_sent_total"); n != 0 {
		t.Errorf("%d fake series without the announcer", n)
	}
}

func TestCollectorBadSourceIsAnError(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(func() Stats { return Stats{Announcer: []Status{{Name: "bad", Status: badSource{}}}} }))
	mfs, err := reg.Gather()
	if err == nil || !strings.Contains(err.Error(), "map646_bad") {
		t.Errorf("gather error = %v, want one naming map646_bad", err)
	}
	// The translator's own series are still there.
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "map646_mappings"
	}
	if !found {
		t.Error("translator series lost to a bad announcer series")
	}
}
