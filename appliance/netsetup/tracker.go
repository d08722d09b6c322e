package netsetup

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Tracker applies wanted state through a Kernel and remembers what it
// changed so that Teardown can undo exactly that, newest first. It is safe
// for concurrent use.
type Tracker struct {
	k Kernel

	mu     sync.Mutex
	routes map[Route]struct{}
	// shapes are the routes' fields other than Dst of every route
	// installed since the last Teardown (a few: the tun, a blackhole,
	// the route blocks' gateways), for OwnedAt; one whose routes are
	// all gone only costs a lookup.
	shapes  map[Route]struct{}
	foreign []Route // wanted main-table routes that were there before us
	rules   []Rule  // in the order they were added
	addrs   map[Addr]struct{}
	links   map[string]linkState // state before our first change
	linkOrd []string
	sysctls map[string]string // key -> value before our first change
	sysOrd  []string
	feats   map[string]map[string]bool // link -> feature -> state before our first change
	featOrd []string

	// nRoutes and nForeign are len(routes) and len(foreign), readable
	// without mu: a restore or sync of a million routes holds mu for
	// seconds, and the metrics and `map646 stats` must not wait on it.
	nRoutes, nForeign atomic.Int64
}

type linkState struct {
	mtu int
	up  bool
}

// NewTracker returns a tracker that has installed nothing yet.
func NewTracker(k Kernel) *Tracker {
	return &Tracker{
		k:       k,
		routes:  map[Route]struct{}{},
		shapes:  map[Route]struct{}{},
		addrs:   map[Addr]struct{}{},
		links:   map[string]linkState{},
		sysctls: map[string]string{},
		feats:   map[string]map[string]bool{},
	}
}

// Sysctl sets a sysctl, remembering the value it had before the first
// change so that Teardown restores it.
func (t *Tracker) Sysctl(key, value string) error {
	_, err := t.KeepSysctl(key, value)
	return err
}

// KeepSysctl is Sysctl for a sysctl that must keep value while the
// translator runs (forwarding): it returns the value the kernel had, which
// differs from value when someone else changed it since. Teardown restores
// the value before the first change, whoever made the later ones.
func (t *Tracker) KeepSysctl(key, value string) (was string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, err := t.k.Sysctl(key, value)
	if err != nil {
		return old, err
	}
	if _, seen := t.sysctls[key]; !seen && old != value {
		t.sysctls[key] = old
		t.sysOrd = append(t.sysOrd, key)
	}
	return old, nil
}

// Link sets a link's MTU (0 keeps it) and brings it up, remembering its
// previous MTU and state for Teardown. A link that this process created
// and destroys itself (the tun) should be set with ownLink=true: nothing
// is restored for it.
func (t *Tracker) Link(name string, mtu int, ownLink bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	oldMTU, oldUp, err := t.k.Link(name)
	if err != nil {
		return err
	}
	if mtu == oldMTU {
		mtu = 0
	}
	if mtu == 0 && oldUp {
		return nil
	}
	if err := t.k.SetLink(name, mtu, true); err != nil {
		return err
	}
	if _, seen := t.links[name]; !seen && !ownLink {
		t.links[name] = linkState{mtu: oldMTU, up: oldUp}
		t.linkOrd = append(t.linkOrd, name)
	}
	return nil
}

// Features switches netdev features of a link (ethtool -K), remembering
// the state each had before the first change so that Teardown restores it.
// Features the kernel does not know are an error and left alone.
func (t *Tracker) Features(name string, want map[string]bool) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := slices.Sorted(maps.Keys(want))
	old, err := t.k.Features(name, names)
	if err != nil {
		return err
	}
	change := map[string]bool{}
	var unknown []string
	for _, f := range names {
		v, ok := old[f]
		switch {
		case !ok:
			unknown = append(unknown, f)
		case v != want[f]:
			change[f] = want[f]
		}
	}
	if len(change) > 0 {
		// Remember first: a partly applied change is restored too.
		prev := t.feats[name]
		if prev == nil {
			prev = map[string]bool{}
			t.feats[name] = prev
			t.featOrd = append(t.featOrd, name)
		}
		for f := range change {
			if _, seen := prev[f]; !seen {
				prev[f] = old[f]
			}
		}
		if err := t.k.SetFeatures(name, change); err != nil {
			return err
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%s: this kernel has no feature %s", name, strings.Join(unknown, ", "))
	}
	return nil
}

// SyncAddrs makes the set of addresses this tracker installed equal want:
// it adds the new ones first and then removes those no longer wanted.
func (t *Tracker) SyncAddrs(want []Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := make(map[Addr]struct{}, len(want))
	var errs []error
	for _, a := range want {
		w[a] = struct{}{}
		if _, ok := t.addrs[a]; ok {
			continue
		}
		if err := t.k.ReplaceAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
			continue
		}
		t.addrs[a] = struct{}{}
	}
	for _, a := range slices.Collect(maps.Keys(t.addrs)) {
		if _, ok := w[a]; ok {
			continue
		}
		if err := t.k.DelAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
			continue
		}
		delete(t.addrs, a)
	}
	return errors.Join(errs...)
}

// SyncRoutes makes the set of routes this tracker installed equal want,
// touching only the difference: new routes are added before stale ones are
// removed, so a destination that moves between two entries of an
// aggregate never goes unrouted. It returns how many routes it added and
// removed. The kernel sees them in no particular order.
//
// A wanted main-table route whose destination the kernel already routes
// (EEXIST) is someone else's: it is left as it is, never deleted, and
// listed by Foreign until a later sync finds the way free. Routes in other
// tables (the translator's own) replace what is there.
func (t *Tracker) SyncRoutes(want []Route) (added, removed int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.count()
	w, add, del := diffRoutes(t.routes, want)
	var main, own []Route
	for _, r := range add {
		r.Dst = netip.Prefix{}
		t.shapes[r] = struct{}{}
	}
	for _, r := range add {
		if r.Table == 0 {
			main = append(main, r)
		} else {
			own = append(own, r)
		}
	}
	var errs []error
	var existed []Route
	if len(main) > 0 {
		existed, err = t.k.AddRoutes(main)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(own) > 0 {
		if err := t.k.ReplaceRoutes(own); err != nil {
			errs = append(errs, err)
		}
	}
	for _, r := range existed {
		delete(w, r)
	}
	SortRoutes(existed)
	t.foreign = existed
	if len(errs) > 0 {
		// Recorded all the same: the kernel may hold part of the
		// batch, and Teardown must remove it (deleting a route that
		// is not there is not an error).
		for _, r := range add {
			if _, ok := w[r]; ok {
				t.routes[r] = struct{}{}
			}
		}
		return 0, 0, errors.Join(errs...)
	}
	added = len(add) - len(existed)
	if len(del) > 0 {
		if err := t.k.DelRoutes(del); err != nil {
			for _, r := range add {
				if _, ok := w[r]; ok {
					t.routes[r] = struct{}{}
				}
			}
			return added, 0, err
		}
	}
	t.routes = w
	return added, len(del), nil
}

// count publishes the counts of routes and foreign routes. t.mu held.
func (t *Tracker) count() {
	t.nRoutes.Store(int64(len(t.routes)))
	t.nForeign.Store(int64(len(t.foreign)))
}

// ForeignCount is len(Foreign()), without waiting for a sync or restore
// in progress: the count the last one left.
func (t *Tracker) ForeignCount() int { return int(t.nForeign.Load()) }

// Foreign lists the wanted main-table routes that the kernel had before
// this tracker tried to add them (found by the last SyncRoutes), sorted.
func (t *Tracker) Foreign() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.foreign)
}

// Owned reports whether r (as the kernel describes it, with the device it
// resolved) is a route this tracker installed, and returns it as
// installed: r itself, or r without its device (a route block that names
// only a gateway).
func (t *Tracker) Owned(r Route) (Route, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.owned(r)
}

func (t *Tracker) owned(r Route) (Route, bool) {
	if _, ok := t.routes[r]; ok {
		return r, true
	}
	r.Dev = ""
	_, ok := t.routes[r]
	return r, ok
}

// OwnedAt returns the route this tracker installed to dst in table (0:
// main), if any: the one whose place a route replaced in place with
// these took (Change.Replaced). It looks up each shape of route the
// tracker installed, never all its routes (a million).
func (t *Tracker) OwnedAt(dst netip.Prefix, table int) (Route, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ownedAt(dst, table)
}

func (t *Tracker) ownedAt(dst netip.Prefix, table int) (Route, bool) {
	for s := range t.shapes {
		if s.Table != table {
			continue
		}
		s.Dst = dst
		if _, ok := t.routes[s]; ok {
			return s, true
		}
	}
	return Route{}, false
}

// Reinstall puts back, with replace semantics, those of rs this tracker
// still owns (a route deleted by hand).
func (t *Tracker) Reinstall(rs []Route) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var put []Route
	for _, r := range rs {
		if _, ok := t.routes[r]; ok {
			put = append(put, r)
		}
	}
	if len(put) == 0 {
		return nil
	}
	return t.k.ReplaceRoutes(put)
}

// EvictAhead deletes those of as that are ahead of a route this tracker
// still owns at their table and destination (Change.Ahead). Someone
// else's route ahead of nothing of ours (a reload removed ours since) is
// left alone.
func (t *Tracker) EvictAhead(as []AheadRoute) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var del []AheadRoute
	for _, a := range as {
		if _, ok := t.ownedAt(a.Dst, a.Table); ok {
			del = append(del, a)
		}
	}
	if len(del) == 0 {
		return nil
	}
	return t.k.DelRoutesAhead(del)
}

// EvictAllAhead finds, with one dump of each table this tracker has
// routes in, the routes ahead of one of its own (as Change.Ahead
// describes them: at the place of ours and before it, for IPv4; at a
// lower metric, for IPv6, in the translator's table alone, which is
// table), deletes them and returns them: after lost events, none may be
// left ahead of ours unseen, and an IPv4 route of ours behind another
// cannot be replaced (the kernel answers EEXIST while it is not the
// first of its place), so a restore would fail for ever.
//
// A route is ahead of ours only if the dump shows ours behind it (of
// protocol RouteProtocol: a look-alike of another protocol ahead of ours
// is someone else's). One at the place of a route of ours that is gone
// (flushed with its gateway's address, and not put back while the
// gateway is not on-link) is the only route left to its destination:
// deleting it would leave none, on each retry of the failed restore.
func (t *Tracker) EvictAllAhead(table int) ([]AheadRoute, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tables := map[int]bool{}
	for s := range t.shapes {
		tables[s.Table] = true
	}
	var ahead []AheadRoute
	var errs []error
	for _, tb := range slices.Sorted(maps.Keys(tables)) {
		// The kernel dumps the routes of one destination together,
		// in the order it looks them up (ScanRoutes): those before
		// ours at dst are pending until ours goes by.
		var dst netip.Prefix
		var pending []AheadRoute
		behind := false // a route of ours at dst went by
		err := t.k.ScanRoutes(tb, func(a AheadRoute) {
			if a.Dst != dst {
				dst, behind, pending = a.Dst, false, pending[:0]
			}
			if behind {
				return
			}
			if _, ok := t.ownedAt(a.Dst, a.Table); !ok {
				return
			}
			if _, ok := t.owned(a.Route); ok && a.Protocol == RouteProtocol {
				ahead = append(ahead, pending...)
				behind = true
				return
			}
			if a.Dst.Addr().Is4() && a.Metric == 0 || a.Dst.Addr().Is6() && a.Table == table && table != 0 && a.Metric < ipv6Metric {
				pending = append(pending, a)
			}
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(ahead) > 0 {
		errs = append(errs, t.k.DelRoutesAhead(ahead))
	}
	return ahead, errors.Join(errs...)
}

// ReinstallAddrs puts back, with replace semantics, those of as this
// tracker still owns (an address deleted from outside: an interface
// block's address is its servers' next hop).
func (t *Tracker) ReinstallAddrs(as []Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, a := range as {
		if _, ok := t.addrs[a]; !ok {
			continue
		}
		if err := t.k.ReplaceAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// RoutesVia returns the routes this tracker installed whose gateway lies
// in a's subnet: when a is deleted the kernel drops them with it, and
// sends no RTM_DELROUTE for them, so they are put back with a.
func (t *Tracker) RoutesVia(a Addr) []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	subnet := a.Prefix.Masked()
	var rs []Route
	for r := range t.routes {
		if r.Via.IsValid() && subnet.Contains(r.Via) {
			rs = append(rs, r)
		}
	}
	return rs
}

// OwnsAddr reports whether a is an address this tracker installed.
func (t *Tracker) OwnsAddr(a Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.addrs[a]
	return ok
}

// RestoreRules adds again every policy rule this tracker added, in their
// order (a rule that is there already is left as it is): without them
// nothing reaches the translator's table.
func (t *Tracker) RestoreRules() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.restoreRules()
}

func (t *Tracker) restoreRules() error {
	var errs []error
	for _, r := range t.rules {
		if err := t.k.AddRule(r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// MissingRules lists the rules this tracker added that the kernel no
// longer has with protocol RuleProtocol (one dump of the rules; none when
// the tracker has no rules). An identical rule of another protocol does
// not hide one of ours deleted: the kernel keeps both, and ours is the
// one Teardown deletes.
func (t *Tracker) MissingRules() ([]Rule, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.rules) == 0 {
		return nil, nil
	}
	have, err := t.k.OwnRules()
	if err != nil {
		return nil, err
	}
	var missing []Rule
	for _, r := range t.rules {
		if !slices.Contains(have, r.canonical()) {
			missing = append(missing, r.canonical())
		}
	}
	return missing, nil
}

// OwnsRule reports whether r (as the kernel describes it: an
// RTM_DELRULE's rule, of protocol proto) is a policy rule this tracker
// added. Someone else's rule, deleted, is nothing to put back. Every
// rule the tracker holds is of protocol RuleProtocol (Kernel.AddRule
// replaces one it takes over), so an identical rule of another protocol
// (`ip rule add pref 6460 lookup 646 proto boot`), which the kernel keeps
// beside ours, is never ours.
func (t *Tracker) OwnsRule(r Rule, proto uint8) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return proto == RuleProtocol && slices.ContainsFunc(t.rules, func(o Rule) bool { return o.canonical() == r })
}

// Restore puts back, with replace semantics, every address, route and
// policy rule this tracker installed: after a link went down and up the
// kernel has flushed the routes through it (IPv4 ones without telling
// anyone) and IPv6 addresses; after lost events anything may be gone.
func (t *Tracker) Restore() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for a := range t.addrs {
		if err := t.k.ReplaceAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
		}
	}
	if len(t.routes) > 0 {
		rs := slices.Collect(maps.Keys(t.routes))
		SortRoutes(rs)
		if err := t.k.ReplaceRoutes(rs); err != nil {
			errs = append(errs, err)
		}
	}
	if err := t.restoreRules(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// SyncRules makes the rules this tracker added equal want, in want's
// order: new ones are added first, then stale ones removed.
func (t *Tracker) SyncRules(want []Rule) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	var now []Rule
	for _, r := range want {
		if slices.Contains(t.rules, r) {
			now = append(now, r)
			continue
		}
		if err := t.k.AddRule(r); err != nil {
			errs = append(errs, err)
			continue
		}
		now = append(now, r)
	}
	for _, r := range t.rules {
		if slices.Contains(want, r) {
			continue
		}
		if err := t.k.DelRule(r); err != nil {
			errs = append(errs, err)
			now = append(now, r)
		}
	}
	t.rules = now
	return errors.Join(errs...)
}

// RouteCount is the number of routes installed by this tracker, without
// waiting for a sync or restore in progress: the count the last one left.
func (t *Tracker) RouteCount() int { return int(t.nRoutes.Load()) }

// Teardown removes the rules, routes and addresses, restores the links'
// features, the links and the sysctls, in the reverse order of setting up. It goes on past errors and
// returns them all; the tracker is empty afterwards.
func (t *Tracker) Teardown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer t.count()
	var errs []error
	// Rules first: once they are gone, nothing reaches the translator's
	// table, whose routes can then go.
	for i := len(t.rules) - 1; i >= 0; i-- {
		if err := t.k.DelRule(t.rules[i]); err != nil {
			errs = append(errs, err)
		}
	}
	t.rules = nil
	t.foreign = nil
	if len(t.routes) > 0 {
		rs := slices.Collect(maps.Keys(t.routes))
		SortRoutes(rs)
		if err := t.k.DelRoutes(rs); err != nil {
			errs = append(errs, err)
		}
		clear(t.routes)
	}
	clear(t.shapes)
	for a := range t.addrs {
		if err := t.k.DelAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
		}
	}
	clear(t.addrs)
	for i := len(t.featOrd) - 1; i >= 0; i-- {
		name := t.featOrd[i]
		if err := t.k.SetFeatures(name, t.feats[name]); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", name, err))
		}
	}
	clear(t.feats)
	t.featOrd = nil
	for i := len(t.linkOrd) - 1; i >= 0; i-- {
		name := t.linkOrd[i]
		s := t.links[name]
		if err := t.k.SetLink(name, s.mtu, s.up); err != nil {
			errs = append(errs, fmt.Errorf("link %s: %w", name, err))
		}
	}
	clear(t.links)
	t.linkOrd = nil
	for i := len(t.sysOrd) - 1; i >= 0; i-- {
		key := t.sysOrd[i]
		// One of an interface that is gone (the tun) has nothing
		// left to restore.
		if _, err := t.k.Sysctl(key, t.sysctls[key]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	clear(t.sysctls)
	t.sysOrd = nil
	return errors.Join(errs...)
}
