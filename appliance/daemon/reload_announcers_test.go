package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/map646/map646/appliance/config"
)

// instanceKind is a kind of announcer whose every New builds a new
// instance, recorded with the settings it was built with; New fails for a
// configuration failIf says no to, as the RA announcer's does once the
// raw socket capability is gone.
type instanceKind struct {
	name     string
	settings func(*config.Config) any
	mu       sync.Mutex
	failIf   func(*config.Config) bool
	built    []*instance
	tries    int
}

type instance struct {
	settings string
	mu       sync.Mutex
	closed   bool
	updates  int
}

func (i *instance) Update(context.Context, Announcement) error {
	i.mu.Lock()
	i.updates++
	i.mu.Unlock()
	return nil
}
func (i *instance) Status() any { return map[string]string{"settings": i.settings} }
func (i *instance) Close(context.Context) error {
	i.mu.Lock()
	i.closed = true
	i.mu.Unlock()
	return nil
}

func (k *instanceKind) kind() AnnouncerKind {
	return AnnouncerKind{Name: k.name, Settings: k.settings, New: func(cfg *config.Config, _ *slog.Logger) (Announcer, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		s := k.settings(cfg)
		if v := reflect.ValueOf(s); !v.IsValid() || v.IsNil() || v.Kind() == reflect.Slice && v.Len() == 0 {
			return nil, nil
		}
		k.tries++
		if k.failIf != nil && k.failIf(cfg) {
			return nil, errors.New("listen ip6:ipv6-icmp: operation not permitted")
		}
		in := &instance{settings: fmt.Sprint(s)}
		k.built = append(k.built, in)
		return in, nil
	}}
}

func (k *instanceKind) setFailIf(f func(*config.Config) bool) {
	k.mu.Lock()
	k.failIf = f
	k.mu.Unlock()
}

// live is the instances not closed.
func (k *instanceKind) live() []*instance {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []*instance
	for _, in := range k.built {
		in.mu.Lock()
		if !in.closed {
			out = append(out, in)
		}
		in.mu.Unlock()
	}
	return out
}

func (k *instanceKind) counts() (built, tries int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.built), k.tries
}

// TestReloadRestartsOnlyTheAnnouncerThatChanged: a reload restarts only the
// announcer whose block changed. One that cannot start with the new block
// costs no other announcer anything; if it ran before it runs again with
// its previous settings; the reload's answer, the announcer's status in
// the stats and map646_announcer_failed say so until a reload starts it
// with the file's settings, and the next reload retries even when the
// file is unchanged. The translator forwards all the while: /healthz,
// map646_datapath_healthy and the stats' healthy say so.
func TestReloadRestartsOnlyTheAnnouncerThatChanged(t *testing.T) {
	bgp := &instanceKind{name: "bgp", settings: func(c *config.Config) any { return c.BGP }}
	ra := &instanceKind{name: "ra", settings: func(c *config.Config) any { return c.RouterAdvertisements }}
	onIface := func(name string) func(*config.Config) bool {
		return func(c *config.Config) bool {
			return slices.ContainsFunc(c.RouterAdvertisements, func(r config.RouterAdvertisement) bool { return r.Interface == name })
		}
	}
	body := withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	h := startWith(t, body, newFakeKernel(), func(o *Options) {
		o.Announcers = []AnnouncerKind{bgp.kind(), ra.kind()}
	})
	defer h.stop()
	speaker := bgp.live()
	if len(speaker) != 1 || len(ra.live()) != 0 {
		t.Fatalf("at start: %d BGP and %d RA announcers running; want 1 and 0", len(speaker), len(ra.live()))
	}
	type state struct {
		healthy  bool
		statuses map[string]string
		metric   bool
	}
	query := func() state {
		t.Helper()
		st, err := QueryStats(h.sock)
		if err != nil {
			t.Fatal(err)
		}
		s := state{healthy: st.Healthy, statuses: map[string]string{}}
		for _, a := range st.Announcer {
			b, _ := json.Marshal(a.Status)
			s.statuses[a.Name] = string(b)
		}
		resp, err := http.Get("http://" + st.MetricsListen + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		s.metric = strings.Contains(string(b), `map646_announcer_failed{announcer="ra"} 1`)
		if strings.Contains(string(b), "map646_datapath_healthy 1\n") != st.Healthy {
			t.Errorf("map646_datapath_healthy disagrees with stats' healthy=%v", st.Healthy)
		}
		resp, err = http.Get("http://" + st.MetricsListen + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode == http.StatusOK) != st.Healthy {
			t.Errorf("/healthz answered %d while stats say healthy=%v", resp.StatusCode, st.Healthy)
		}
		return s
	}
	bgpUntouched := func(when string) {
		t.Helper()
		if live := bgp.live(); len(live) != 1 || live[0] != speaker[0] {
			t.Errorf("%s: BGP announcers running %v, want the first one, never restarted", when, live)
		}
	}

	// A router_advertisement block the process cannot serve.
	ra.setFailIf(onIface("eth9"))
	raBlock := "router_advertisement \"eth9\" {}\n"
	writeConfig(t, h.cfg, body+raBlock)
	_, err := RequestReload(h.sock)
	if err == nil || !strings.Contains(err.Error(), "announcer ra: listen ip6:ipv6-icmp: operation not permitted; not running") {
		t.Errorf("reload adding a failing RA answered %v", err)
	}
	bgpUntouched("RA added and failed")
	if s := query(); !s.healthy || !strings.Contains(s.statuses["ra"], "operation not permitted") || !s.metric || s.statuses["bgp"] == "" {
		t.Errorf("after the failed RA: %+v; want healthy (it forwards), the RA's failure shown and counted, BGP's status", s)
	}
	// The same file again: retried, still failing.
	_, tries := ra.counts()
	res, err := RequestReload(h.sock)
	if _, again := ra.counts(); err == nil || !res.Unchanged || again != tries+1 {
		t.Errorf("same file: %+v, %v, %d attempts after %d; want unchanged, retried, refused", res, err, again, tries)
	}
	// It can be served now: the same file starts it.
	ra.setFailIf(nil)
	if res, err := RequestReload(h.sock); err != nil || !res.Unchanged || len(ra.live()) != 1 {
		t.Errorf("same file once RA can start: %+v, %v, %d RA running", res, err, len(ra.live()))
	}
	if s := query(); !s.healthy || s.metric || strings.Contains(s.statuses["ra"], "error") {
		t.Errorf("after the RA started: %+v; want healthy, no failure", s)
	}
	bgpUntouched("RA started")
	// A later reload that changes nothing of the announcers restarts none.
	firstRA := ra.live()[0]
	writeConfig(t, h.cfg, withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.11")))+raBlock)
	if _, err := RequestReload(h.sock); err != nil || ra.live()[0] != firstRA {
		t.Errorf("mapping-only reload: %v; RA restarted: %v", err, ra.live()[0] != firstRA)
	}
	body = withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))

	// A changed RA block that fails: the previous RA runs again.
	ra.setFailIf(onIface("eth8"))
	writeConfig(t, h.cfg, body+"router_advertisement \"eth8\" {}\n")
	_, err = RequestReload(h.sock)
	if err == nil || !strings.Contains(err.Error(), "running again with its previous settings") {
		t.Errorf("reload changing RA to a failing block answered %v", err)
	}
	if live := ra.live(); len(live) != 1 || !strings.Contains(live[0].settings, "eth9") {
		t.Errorf("RA running after the failed change: %v; want one, with the previous settings (eth9)", live)
	}
	if s := query(); !s.healthy || !s.metric || !strings.Contains(s.statuses["ra"], "eth9") || !strings.Contains(s.statuses["ra"], "operation not permitted") {
		t.Errorf("after the failed change: %+v; want healthy (it forwards), the failure and the running RA's status", s)
	}
	bgpUntouched("RA changed and failed")
	// Changed back: the RA that runs is what the file asks for.
	writeConfig(t, h.cfg, body+raBlock)
	if _, err := RequestReload(h.sock); err != nil || !query().healthy {
		t.Errorf("reload back to the running RA block: %v, healthy %v", err, query().healthy)
	}

	// A BGP change restarts BGP and leaves the RA alone.
	builtRA, _ := ra.counts()
	writeConfig(t, h.cfg, strings.Replace(body, "remote_as = 64500", "remote_as = 64501", 1)+raBlock)
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	if live := bgp.live(); len(live) != 1 || live[0] == speaker[0] || !strings.Contains(live[0].settings, "64501") {
		t.Errorf("BGP after its block changed: %v; want a new speaker", live)
	}
	if n, _ := ra.counts(); n != builtRA {
		t.Errorf("a BGP change built %d RA announcers", n-builtRA)
	}
	// A failed block that is removed again is no failure any more.
	body = strings.Replace(body, "remote_as = 64500", "remote_as = 64501", 1)
	writeConfig(t, h.cfg, body+"router_advertisement \"eth8\" {}\n")
	if _, err := RequestReload(h.sock); err == nil || !query().healthy || !query().metric {
		t.Errorf("reload to a failing RA block again: %v, %+v; want refused, healthy, counted", err, query())
	}
	writeConfig(t, h.cfg, body)
	if _, err := RequestReload(h.sock); err != nil || !query().healthy || len(ra.live()) != 0 || query().statuses["ra"] != "" {
		t.Errorf("reload without RA: %v, %+v, %d RA running", err, query(), len(ra.live()))
	}
	// Every announcer running was told the announcement.
	for _, in := range append(bgp.live(), ra.live()...) {
		in.mu.Lock()
		if in.updates == 0 {
			t.Errorf("announcer %s never updated", in.settings)
		}
		in.mu.Unlock()
	}
}

// TestAnnouncerConfigCopiesEveryField: announcerConfig copies the exported
// fields of config.Config one by one (the table is unexported and must
// stay behind); a field added to Config must be added there too, or an
// announcer built again from its previous configuration would miss it.
func TestAnnouncerConfigCopiesEveryField(t *testing.T) {
	copied := []string{"File", "Digest", "Translator", "Interfaces", "Routes", "Metrics", "Log", "RunAs", "BGP", "RouterAdvertisements", "Warnings"}
	typ := reflect.TypeFor[config.Config]()
	var exported []string
	for i := range typ.NumField() {
		if f := typ.Field(i); f.IsExported() {
			exported = append(exported, f.Name)
		}
	}
	if !slices.Equal(exported, copied) {
		t.Errorf("config.Config's exported fields are %v; announcerConfig copies %v", exported, copied)
	}
	cfg, err := config.Parse([]byte(fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))+"router_advertisement \"eth1\" {}\n"), "a.hcl")
	if err != nil {
		t.Fatal(err)
	}
	c := announcerConfig(cfg)
	if c.Snapshot() != nil || c.Translator.Mappings != nil {
		t.Error("announcerConfig kept the mapping table")
	}
	want := *cfg
	want.Translator.Mappings = nil
	for _, name := range copied {
		if !reflect.DeepEqual(reflect.ValueOf(*c).FieldByName(name).Interface(), reflect.ValueOf(want).FieldByName(name).Interface()) {
			t.Errorf("field %s not copied", name)
		}
	}
}

// TestAnnouncerKindNeedsSettings: a kind without Settings could never be
// compared on reload; the start refuses it instead of guessing, and closes
// the announcers it had built.
func TestAnnouncerKindNeedsSettings(t *testing.T) {
	built := &instanceKind{name: "bgp", settings: func(c *config.Config) any { return c.BGP }}
	cfg, err := config.Parse([]byte(fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))), "a.hcl")
	if err != nil {
		t.Fatal(err)
	}
	noSettings := AnnouncerKind{Name: "ra", New: func(*config.Config, *slog.Logger) (Announcer, error) { return nil, nil }}
	as, err := startAnnouncers(context.Background(), []AnnouncerKind{built.kind(), noSettings}, cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "announcer ra: no Settings") || as != nil {
		t.Errorf("start with a kind without Settings: %v, %v", as, err)
	}
	if n, _ := built.counts(); n != 1 || len(built.live()) != 0 {
		t.Errorf("%d announcers built, %d left running; want the one built closed", n, len(built.live()))
	}
}
