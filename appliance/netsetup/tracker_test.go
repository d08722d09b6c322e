package netsetup

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeKernel records calls and keeps the state a kernel would.
type fakeKernel struct {
	log      []string
	links    map[string]linkState
	addrs    map[Addr]bool
	routes   map[Route]bool
	sysctls  map[string]string
	rules    []Rule
	failAdd  map[netip.Prefix]bool // ReplaceRoutes and AddRoutes fail for these
	failRule error                 // AddRule and Rules fail with it
	feats    map[string]map[string]bool
}

func newFake() *fakeKernel {
	return &fakeKernel{
		links:   map[string]linkState{"eth0": {1500, false}, "map646": {1500, false}},
		addrs:   map[Addr]bool{},
		routes:  map[Route]bool{},
		sysctls: map[string]string{"net.ipv4.conf.all.forwarding": "0", "net.ipv6.conf.all.forwarding": "1"},
		feats:   map[string]map[string]bool{"eth0": {FeatureGRO: false, FeatureUDPGROForwarding: false}},
	}
}

func (f *fakeKernel) Link(name string) (int, bool, error) {
	s, ok := f.links[name]
	if !ok {
		return 0, false, fmt.Errorf("link %s: no such device", name)
	}
	return s.mtu, s.up, nil
}
func (f *fakeKernel) SetLink(name string, mtu int, up bool) error {
	s := f.links[name]
	if mtu > 0 {
		s.mtu = mtu
	}
	s.up = up
	f.links[name] = s
	f.log = append(f.log, fmt.Sprintf("link %s mtu=%d up=%v", name, mtu, up))
	return nil
}
func (f *fakeKernel) ReplaceAddr(dev string, p netip.Prefix) error {
	f.addrs[Addr{dev, p}] = true
	f.log = append(f.log, "addr+ "+p.String())
	return nil
}
func (f *fakeKernel) HostAddrs() ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for a := range f.addrs {
		if a.Prefix.Addr().Is4() {
			ps = append(ps, a.Prefix)
		}
	}
	return ps, nil
}
func (f *fakeKernel) DelAddr(dev string, p netip.Prefix) error {
	delete(f.addrs, Addr{dev, p})
	f.log = append(f.log, "addr- "+p.String())
	return nil
}
func (f *fakeKernel) ReplaceRoutes(rs []Route) error {
	var errs []error
	for _, r := range rs {
		if f.failAdd[r.Dst] {
			errs = append(errs, fmt.Errorf("route %v: invalid argument", r))
			continue
		}
		f.routes[r] = true
	}
	f.log = append(f.log, fmt.Sprintf("routes+ %d", len(rs)))
	return errors.Join(errs...)
}
func (f *fakeKernel) AddRoutes(rs []Route) ([]Route, error) {
	var errs []error
	var existed []Route
next:
	for _, r := range rs {
		if f.failAdd[r.Dst] {
			errs = append(errs, fmt.Errorf("route %v: invalid argument", r))
			continue
		}
		for h := range f.routes { // one key per table and destination, as the kernel's
			if h.Dst == r.Dst && h.Table == r.Table {
				existed = append(existed, r)
				continue next
			}
		}
		f.routes[r] = true
	}
	f.log = append(f.log, fmt.Sprintf("routes+excl %d", len(rs)))
	return existed, errors.Join(errs...)
}
func (f *fakeKernel) OwnRules() ([]Rule, error) {
	if f.failRule != nil {
		return nil, f.failRule
	}
	return slices.Clone(f.rules), nil
}
func (f *fakeKernel) AddRule(r Rule) error {
	if f.failRule != nil {
		return fmt.Errorf("rule %v: %w", r, f.failRule)
	}
	if !slices.Contains(f.rules, r) {
		f.rules = append(f.rules, r)
	}
	f.log = append(f.log, "rule+ "+r.String())
	return nil
}
func (f *fakeKernel) DelRule(r Rule) error {
	f.rules = slices.DeleteFunc(f.rules, func(x Rule) bool { return x == r })
	f.log = append(f.log, "rule- "+r.String())
	return nil
}
func (f *fakeKernel) DelRoutes(rs []Route) error {
	for _, r := range rs {
		delete(f.routes, r)
	}
	f.log = append(f.log, fmt.Sprintf("routes- %d", len(rs)))
	return nil
}
func (f *fakeKernel) ScanRoutes(table int, each func(AheadRoute)) error { return nil }
func (f *fakeKernel) DelRoutesAhead(as []AheadRoute) error {
	f.log = append(f.log, fmt.Sprintf("routes-ahead %v", as))
	return nil
}
func (f *fakeKernel) Sysctl(key, value string) (string, error) {
	old, ok := f.sysctls[key]
	if !ok {
		return "", fmt.Errorf("sysctl %s: %w", key, fs.ErrNotExist)
	}
	f.sysctls[key] = value
	f.log = append(f.log, "sysctl "+key+"="+value)
	return old, nil
}

func (f *fakeKernel) Features(dev string, names []string) (map[string]bool, error) {
	have, ok := f.feats[dev]
	if !ok {
		return nil, fmt.Errorf("link %s: no such device", dev)
	}
	res := map[string]bool{}
	for _, n := range names {
		if v, ok := have[n]; ok {
			res[n] = v
		}
	}
	return res, nil
}
func (f *fakeKernel) SetFeatures(dev string, want map[string]bool) error {
	for _, n := range slices.Sorted(maps.Keys(want)) {
		f.feats[dev][n] = want[n]
		f.log = append(f.log, fmt.Sprintf("feature %s %s=%v", dev, n, want[n]))
	}
	return nil
}

func rt(dst string) Route { return Route{Dst: netip.MustParsePrefix(dst), Dev: "map646"} }

// sortedDiff is diffRoutes on lists, with sorted results.
func sortedDiff(have, want []Route) (add, del []Route) {
	h := make(map[Route]struct{}, len(have))
	for _, r := range have {
		h[r] = struct{}{}
	}
	_, add, del = diffRoutes(h, want)
	SortRoutes(add)
	SortRoutes(del)
	return add, del
}

func TestDiffRoutes(t *testing.T) {
	a, b, c := rt("198.51.100.0/24"), rt("2001:db8:64::/96"), rt("203.0.113.0/25")
	via := Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("203.0.113.14")}
	for _, tc := range []struct {
		name          string
		have, want    []Route
		wantAdd, wDel []Route
	}{
		{"empty", nil, nil, nil, nil},
		{"initial", nil, []Route{b, a}, []Route{a, b}, nil},
		{"same", []Route{a, b}, []Route{b, a}, nil, nil},
		{"add and remove", []Route{a, b}, []Route{b, c, via}, []Route{via, c}, []Route{a}},
		{"everything gone", []Route{a, via}, nil, nil, []Route{via, a}},
		{"duplicates collapse", nil, []Route{a, a, a}, []Route{a}, nil},
		{"same dst other dev", []Route{a}, []Route{{Dst: a.Dst, Dev: "eth0"}}, []Route{{Dst: a.Dst, Dev: "eth0"}}, []Route{a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			add, del := sortedDiff(tc.have, tc.want)
			if !reflect.DeepEqual(add, tc.wantAdd) || !reflect.DeepEqual(del, tc.wDel) {
				t.Errorf("diffRoutes = add %v del %v, want add %v del %v", add, del, tc.wantAdd, tc.wDel)
			}
		})
	}
}

func TestTrackerSyncRoutesAppliesOnlyTheDifference(t *testing.T) {
	k := newFake()
	tr := NewTracker(k)
	a, b, c := rt("198.51.100.0/24"), rt("2001:db8:64::/96"), rt("203.0.113.0/25")
	if n, m, err := tr.SyncRoutes([]Route{a, b}); err != nil || n != 2 || m != 0 {
		t.Fatalf("first sync: %d %d %v", n, m, err)
	}
	k.log = nil
	if n, m, err := tr.SyncRoutes([]Route{b, c}); err != nil || n != 1 || m != 1 {
		t.Fatalf("second sync: %d %d %v", n, m, err)
	}
	// Adds before deletes: a destination never goes unrouted.
	if want := []string{"routes+excl 1", "routes- 1"}; !slices.Equal(k.log, want) {
		t.Errorf("kernel calls %v, want %v", k.log, want)
	}
	if !k.routes[b] || !k.routes[c] || k.routes[a] {
		t.Errorf("kernel routes %v", k.routes)
	}
	k.log = nil
	if n, m, err := tr.SyncRoutes([]Route{c, b}); err != nil || n != 0 || m != 0 || len(k.log) != 0 {
		t.Errorf("unchanged sync touched the kernel: %d %d %v %v", n, m, err, k.log)
	}
	got := slices.Collect(maps.Keys(tr.routes))
	SortRoutes(got)
	if !reflect.DeepEqual(got, []Route{c, b}) {
		t.Errorf("installed routes %v", got)
	}
}

func TestTrackerPartlyFailedBatchIsStillTornDown(t *testing.T) {
	k := newFake()
	k.failAdd = map[netip.Prefix]bool{netip.MustParsePrefix("203.0.113.0/25"): true}
	tr := NewTracker(k)
	_, _, err := tr.SyncRoutes([]Route{rt("198.51.100.0/24"), rt("203.0.113.0/25")})
	if err == nil || !strings.Contains(err.Error(), "203.0.113.0/25") {
		t.Fatalf("error %v should name the failed route", err)
	}
	// The part of the batch that went in must still be removed at the end.
	if !k.routes[rt("198.51.100.0/24")] {
		t.Fatal("the good route was not installed")
	}
	if err := tr.Teardown(); err != nil {
		t.Fatal(err)
	}
	if len(k.routes) != 0 {
		t.Errorf("teardown after a partly failed batch left %v", k.routes)
	}
}

func TestTrackerTeardownUndoesEverythingInReverse(t *testing.T) {
	k := newFake()
	tr := NewTracker(k)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tr.Sysctl("net.ipv4.conf.all.forwarding", "1"))
	must(tr.Sysctl("net.ipv6.conf.all.forwarding", "1")) // unchanged: nothing to restore
	must(tr.Link("eth0", 1520, false))
	must(tr.Link("map646", 1500, true))
	must(tr.Features("eth0", map[string]bool{FeatureGRO: true, FeatureUDPGROForwarding: true}))
	must(tr.Features("eth0", map[string]bool{FeatureGRO: true})) // already on: nothing new to restore
	must(tr.SyncAddrs([]Addr{{"eth0", netip.MustParsePrefix("2001:db8:ffff::1/64")}, {"eth0", netip.MustParsePrefix("203.0.113.1/28")}}))
	_, _, err := tr.SyncRoutes([]Route{rt("198.51.100.0/24"), {Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("203.0.113.14")}})
	must(err)
	must(tr.SyncRules([]Rule{{Family: 4, Priority: 1, Iif: "lo", Table: 254}, {Family: 6, Priority: 2, Table: 646}}))
	if !k.links["eth0"].up || k.links["eth0"].mtu != 1520 || !k.links["map646"].up {
		t.Fatalf("links not set up: %v", k.links)
	}
	// Reload: one address goes away.
	must(tr.SyncAddrs([]Addr{{"eth0", netip.MustParsePrefix("203.0.113.1/28")}}))
	if len(k.addrs) != 1 {
		t.Fatalf("addresses after sync: %v", k.addrs)
	}
	k.log = nil
	must(tr.Teardown())
	want := []string{
		"rule- ipv6 2: lookup 646",
		"rule- ipv4 1: iif lo lookup 254",
		"routes- 2",
		"addr- 203.0.113.1/28",
		"feature eth0 rx-gro=false",
		"feature eth0 rx-udp-gro-forwarding=false",
		"link eth0 mtu=1500 up=false",
		"sysctl net.ipv4.conf.all.forwarding=0",
	}
	if !slices.Equal(k.log, want) {
		t.Errorf("teardown calls\n%v\nwant\n%v", strings.Join(k.log, "\n"), strings.Join(want, "\n"))
	}
	if len(k.routes) != 0 || len(k.addrs) != 0 || k.sysctls["net.ipv6.conf.all.forwarding"] != "1" {
		t.Errorf("left behind: routes %v addrs %v sysctls %v", k.routes, k.addrs, k.sysctls)
	}
	k.log = nil
	must(tr.Teardown())
	if len(k.log) != 0 {
		t.Errorf("a second teardown touched the kernel: %v", k.log)
	}
}

// TestTrackerFeatures checks that only features that differ are switched,
// that a feature the kernel does not know is an error that does not stop
// the others, and that Teardown restores just what was switched.
func TestTrackerFeatures(t *testing.T) {
	k := newFake()
	k.feats["eth0"][FeatureGRO] = true // a NIC driver's default
	tr := NewTracker(k)
	err := tr.Features("eth0", map[string]bool{FeatureGRO: true, FeatureUDPGROForwarding: true, "rx-warp-drive": true})
	if err == nil || !strings.Contains(err.Error(), "rx-warp-drive") {
		t.Errorf("unknown feature: err %v, want one naming it", err)
	}
	if want := []string{"feature eth0 rx-udp-gro-forwarding=true"}; !slices.Equal(k.log, want) {
		t.Errorf("calls %v, want %v", k.log, want)
	}
	if err := tr.Features("eth9", map[string]bool{FeatureGRO: true}); err == nil {
		t.Error("a missing link gave no error")
	}
	k.log = nil
	if err := tr.Teardown(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"feature eth0 rx-udp-gro-forwarding=false"}; !slices.Equal(k.log, want) {
		t.Errorf("teardown calls %v, want %v", k.log, want)
	}
	if !k.feats["eth0"][FeatureGRO] {
		t.Error("teardown switched off GRO, which was on before")
	}
}

func TestTrackerLinkAlreadyRightIsLeftAlone(t *testing.T) {
	k := newFake()
	k.links["eth0"] = linkState{1500, true}
	tr := NewTracker(k)
	if err := tr.Link("eth0", 1500, false); err != nil {
		t.Fatal(err)
	}
	if err := tr.Link("eth9", 1500, false); err == nil {
		t.Error("a missing link gave no error")
	}
	if err := tr.Teardown(); err != nil || len(k.log) != 0 {
		t.Errorf("touched the kernel: %v %v", k.log, err)
	}
}

// nopKernel accepts everything and keeps nothing: it isolates the
// tracker's own cost.
type nopKernel struct{ fakeKernel }

func (nopKernel) ReplaceRoutes([]Route) error { return nil }
func (nopKernel) DelRoutes([]Route) error     { return nil }

// BenchmarkTrackerSyncMillion is the user-space part of installing 1M
// routes (diff, sort, bookkeeping) and of a reload that changes 1% of
// them; one op is one full sync.
func BenchmarkTrackerSyncMillion(b *testing.B) {
	all := make([]Route, 1<<20)
	for i := range all {
		all[i] = Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 15), byte(i >> 7), byte(i << 1)}), 32), Dev: "map646"}
	}
	changed := append([]Route(nil), all[len(all)/100:]...)
	b.Run("install", func(b *testing.B) {
		for b.Loop() {
			tr := NewTracker(&nopKernel{})
			if _, _, err := tr.SyncRoutes(all); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reload-1pct", func(b *testing.B) {
		tr := NewTracker(&nopKernel{})
		if _, _, err := tr.SyncRoutes(all); err != nil {
			b.Fatal(err)
		}
		next := [2][]Route{changed, all}
		i := 0
		for b.Loop() {
			if _, _, err := tr.SyncRoutes(next[i%2]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// TestTrackerLeavesForeignRoutesAlone: a main-table route that was there
// before is neither replaced nor deleted at teardown, and is reported; one
// in the translator's own table is replaced and owned.
func TestTrackerLeavesForeignRoutesAlone(t *testing.T) {
	k := newFake()
	theirs := Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.99")}
	k.routes[theirs] = true
	leftover := Route{Dst: netip.MustParsePrefix("2001:db8:64::/96"), Dev: "map646", Table: 646} // a crashed run's
	k.routes[leftover] = true
	tr := NewTracker(k)
	ours := Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.14")}
	tun := rt("198.51.100.0/24")
	tun.Table = 646
	added, _, err := tr.SyncRoutes([]Route{ours, tun, leftover})
	if err != nil {
		t.Fatal(err)
	}
	if added != 2 || !slices.Equal(tr.Foreign(), []Route{ours}) {
		t.Errorf("added %d, foreign %v; want 2 and %v", added, tr.Foreign(), ours)
	}
	if k.routes[ours] || !k.routes[theirs] {
		t.Errorf("the existing route was replaced: %v", k.routes)
	}
	owns := func(r Route) bool { _, ok := tr.Owned(r); return ok }
	resolved := Route{Dst: ours.Dst, Via: ours.Via, Dev: "eth0"} // as the kernel reports a gateway route
	gw := Route{Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("203.0.113.14")}
	if _, _, err := tr.SyncRoutes([]Route{ours, tun, leftover, gw}); err != nil {
		t.Fatal(err)
	}
	if owns(ours) || owns(resolved) || !owns(leftover) || !owns(tun) || !owns(Route{Dst: gw.Dst, Via: gw.Via, Dev: "eth0"}) {
		t.Errorf("Owned: ours %v leftover %v tun %v", owns(ours), owns(leftover), owns(tun))
	}
	delete(k.routes, tun)
	if err := tr.Reinstall([]Route{tun, ours}); err != nil || !k.routes[tun] || k.routes[ours] {
		t.Errorf("Reinstall: %v %v", err, k.routes)
	}
	// Restore puts back what the kernel flushed, and only that.
	delete(k.routes, tun)
	if err := tr.Restore(); err != nil {
		t.Fatal(err)
	}
	if !k.routes[tun] || k.routes[ours] {
		t.Errorf("after Restore: %v", k.routes)
	}
	if err := tr.Teardown(); err != nil {
		t.Fatal(err)
	}
	if len(k.routes) != 1 || !k.routes[theirs] {
		t.Errorf("after teardown: %v; want only %v", k.routes, theirs)
	}
	// Once the other route is gone, the next sync installs ours.
	delete(k.routes, theirs)
	if added, _, err := tr.SyncRoutes([]Route{ours}); err != nil || added != 1 || len(tr.Foreign()) != 0 {
		t.Errorf("second sync: added %d foreign %v err %v", added, tr.Foreign(), err)
	}
}

// TestTrackerPutsBackRulesAndAddresses: rules and addresses deleted from
// outside are found (MissingRules) and put back (RestoreRules, Restore,
// ReinstallAddrs); an address no longer ours is left deleted.
func TestTrackerPutsBackRulesAndAddresses(t *testing.T) {
	const rtprotBoot = 3 // RTPROT_BOOT: `ip rule add ... proto boot`
	k := newFake()
	tr := NewTracker(k)
	rules := []Rule{
		{Family: 4, Priority: 6460, Table: 646},
		{Family: 4, Priority: 6463, Unreachable: true},
		{Family: 6, Priority: 6460, Table: 646},
	}
	if err := tr.SyncRules(rules); err != nil {
		t.Fatal(err)
	}
	if m, err := tr.MissingRules(); err != nil || len(m) != 0 {
		t.Fatalf("nothing deleted: missing %v, %v", m, err)
	}
	// An RTM_DELRULE's rule is ours only if every field matches and it
	// is of our protocol: every rule the tracker holds is (AddRule
	// replaces one it takes over).
	for _, c := range []struct {
		r     Rule
		proto uint8
		ours  bool
	}{
		{Rule{Family: 4, Priority: 6460, Table: 646}, RuleProtocol, true},
		{Rule{Family: 4, Priority: 6463, Unreachable: true}, RuleProtocol, true},
		{Rule{Family: 6, Priority: 6460, Table: 646}, RuleProtocol, true},
		{Rule{Family: 6, Priority: 6463, Unreachable: true}, RuleProtocol, false},
		{Rule{Family: 4, Priority: 6460, Table: 647}, RuleProtocol, false},
		{Rule{Family: 4, Priority: 6461, Table: 646}, RuleProtocol, false},
		{Rule{Family: 4, Priority: 6460, Iif: "lo", Table: 646}, RuleProtocol, false},
		{Rule{Family: 4, Priority: 6463, Table: 646}, RuleProtocol, false},
		// An identical rule of someone else's (proto boot, or none),
		// deleted: not ours.
		{Rule{Family: 4, Priority: 6460, Table: 646}, rtprotBoot, false},
		{Rule{Family: 6, Priority: 6460, Table: 646}, 0, false},
	} {
		if got := tr.OwnsRule(c.r, c.proto); got != c.ours {
			t.Errorf("OwnsRule(%v, proto %d) = %v, want %v", c.r, c.proto, got, c.ours)
		}
	}
	k.rules = slices.Delete(k.rules, 0, 2) // ip rule flush (IPv4)
	if m, err := tr.MissingRules(); err != nil || !slices.Equal(m, rules[:2]) {
		t.Fatalf("after deleting the IPv4 rules: missing %v, %v", m, err)
	}
	if err := tr.RestoreRules(); err != nil {
		t.Fatal(err)
	}
	if m, err := tr.MissingRules(); err != nil || len(m) != 0 || len(k.rules) != 3 {
		t.Fatalf("after RestoreRules: missing %v, %v; kernel %v", m, err, k.rules)
	}
	k.rules = nil
	if err := tr.Restore(); err != nil || len(k.rules) != 3 {
		t.Fatalf("Restore: %v; kernel rules %v", err, k.rules)
	}
	k.rules = nil
	k.failRule = errors.New("operation not permitted")
	if err := tr.RestoreRules(); err == nil {
		t.Error("RestoreRules hid the kernel's refusal")
	}
	if err := tr.Restore(); err == nil {
		t.Error("Restore hid the kernel's refusal of the rules")
	}
	if _, err := tr.MissingRules(); err == nil {
		t.Error("MissingRules hid a failed dump")
	}
	k.failRule = nil

	mine := Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("2001:db8:6::1/64")}
	if err := tr.SyncAddrs([]Addr{mine}); err != nil {
		t.Fatal(err)
	}
	gone := Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("192.0.2.1/24")}
	if !tr.OwnsAddr(mine) || tr.OwnsAddr(gone) {
		t.Errorf("OwnsAddr(%v)=%v OwnsAddr(%v)=%v", mine, tr.OwnsAddr(mine), gone, tr.OwnsAddr(gone))
	}
	delete(k.addrs, mine)
	if err := tr.ReinstallAddrs([]Addr{mine, gone}); err != nil {
		t.Fatal(err)
	}
	if !k.addrs[mine] || k.addrs[gone] {
		t.Errorf("after ReinstallAddrs: %v; want only %v", k.addrs, mine)
	}
}

// TestTrackerOwnedAt: the route of the tracker's at a destination and
// table, whatever its device, gateway or type, found without a scan; a
// destination or table not its own finds none.
func TestTrackerOwnedAt(t *testing.T) {
	tr := NewTracker(newFake())
	tun := Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "map646", Table: 646}
	bh := Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Blackhole: true}
	gw := Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.14")}
	if _, _, err := tr.SyncRoutes([]Route{tun, bh, gw}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dst   string
		table int
		want  Route
		ok    bool
	}{
		{"198.51.100.10/32", 646, tun, true},
		{"198.51.100.0/24", 0, bh, true},
		{"192.0.2.0/24", 0, gw, true},
		{"198.51.100.10/32", 0, Route{}, false},
		{"198.51.100.11/32", 646, Route{}, false},
		{"2001:db8:64::/96", 646, Route{}, false},
	} {
		got, ok := tr.OwnedAt(netip.MustParsePrefix(c.dst), c.table)
		if got != c.want || ok != c.ok {
			t.Errorf("OwnedAt(%s, %d) = %v, %v; want %v, %v", c.dst, c.table, got, ok, c.want, c.ok)
		}
	}
	if err := tr.Teardown(); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.OwnedAt(tun.Dst, 646); ok {
		t.Error("owned after Teardown")
	}
}

// TestTrackerKeepSysctl: KeepSysctl reports the value someone else set
// and puts its own back; Teardown restores the value before the
// tracker's first change, whoever changed it since.
func TestTrackerKeepSysctl(t *testing.T) {
	k := newFake()
	k.sysctls["net.ipv4.ip_forward"] = "0"
	tr := NewTracker(k)
	for _, c := range []struct{ outside, was string }{{"", "0"}, {"", "1"}, {"0", "0"}, {"1", "1"}} {
		if c.outside != "" {
			k.sysctls["net.ipv4.ip_forward"] = c.outside
		}
		was, err := tr.KeepSysctl("net.ipv4.ip_forward", "1")
		if err != nil || was != c.was || k.sysctls["net.ipv4.ip_forward"] != "1" {
			t.Fatalf("after %q from outside: was %q, %v, now %q; want was %q, now 1", c.outside, was, err, k.sysctls["net.ipv4.ip_forward"], c.was)
		}
	}
	// The tun's, put back once, is gone with the tun at Teardown: not
	// an error.
	k.sysctls["net/ipv4/conf/tun0/forwarding"] = "0"
	if _, err := tr.KeepSysctl("net/ipv4/conf/tun0/forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	delete(k.sysctls, "net/ipv4/conf/tun0/forwarding")
	if err := tr.Teardown(); err != nil || k.sysctls["net.ipv4.ip_forward"] != "0" {
		t.Errorf("after Teardown: %q, %v; want 0", k.sysctls["net.ipv4.ip_forward"], err)
	}
}

// slowKernel is a kernel whose ReplaceRoutes (a restore's) waits for
// release, as a million routes keep the kernel busy for seconds.
type slowKernel struct {
	*fakeKernel
	entered, release chan struct{}
}

func (k slowKernel) ReplaceRoutes(rs []Route) error {
	k.entered <- struct{}{}
	<-k.release
	return k.fakeKernel.ReplaceRoutes(rs)
}

// TestCountsReadableDuringRestore: RouteCount and ForeignCount answer
// while a restore holds the tracker (the metrics and `map646 stats`
// read them), with the counts the last sync left.
func TestCountsReadableDuringRestore(t *testing.T) {
	f := newFake()
	taken := Route{Dst: netip.MustParsePrefix("203.0.113.0/24"), Dev: "eth0"}
	f.routes[taken] = true
	k := slowKernel{f, make(chan struct{}), make(chan struct{})}
	tr := NewTracker(k)
	if _, _, err := tr.SyncRoutes([]Route{
		{Dst: netip.MustParsePrefix("192.0.2.0/24"), Dev: "map646"},
		{Dst: netip.MustParsePrefix("198.51.100.0/24"), Dev: "map646"},
		{Dst: taken.Dst, Dev: "map646"},
	}); err != nil {
		t.Fatal(err)
	}
	restored := make(chan error, 1)
	go func() { restored <- tr.Restore() }()
	<-k.entered // Restore holds the tracker from here
	counted := make(chan [2]int, 1)
	go func() { counted <- [2]int{tr.RouteCount(), tr.ForeignCount()} }()
	select {
	case c := <-counted:
		if c != [2]int{2, 1} {
			t.Errorf("during a restore: %d routes, %d foreign, want 2, 1", c[0], c[1])
		}
	case <-time.After(2 * time.Second):
		t.Error("RouteCount and ForeignCount wait for the restore")
	}
	close(k.release)
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
	if err := tr.Teardown(); err != nil {
		t.Fatal(err)
	}
	if n, m := tr.RouteCount(), tr.ForeignCount(); n != 0 || m != 0 {
		t.Errorf("after Teardown: %d routes, %d foreign, want 0, 0", n, m)
	}
}
