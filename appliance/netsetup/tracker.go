package netsetup

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Tracker applies wanted state through a Kernel and remembers what it
// changed so that Teardown can undo exactly that, newest first. It is safe
// for concurrent use.
type Tracker struct {
	k Kernel

	mu      sync.Mutex
	routes  map[Route]struct{}
	addrs   map[Addr]struct{}
	links   map[string]linkState // state before our first change
	linkOrd []string
	sysctls map[string]string // key -> value before our first change
	sysOrd  []string
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
		addrs:   map[Addr]struct{}{},
		links:   map[string]linkState{},
		sysctls: map[string]string{},
	}
}

// Sysctl sets a sysctl, remembering the value it had before the first
// change so that Teardown restores it.
func (t *Tracker) Sysctl(key, value string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, err := t.k.Sysctl(key, value)
	if err != nil {
		return err
	}
	if _, seen := t.sysctls[key]; !seen && old != value {
		t.sysctls[key] = old
		t.sysOrd = append(t.sysOrd, key)
	}
	return nil
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
func (t *Tracker) SyncRoutes(want []Route) (added, removed int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, add, del := diffRoutes(t.routes, want)
	if len(add) > 0 {
		if err := t.k.ReplaceRoutes(add); err != nil {
			// Recorded all the same: the kernel may hold part of the
			// batch, and Teardown must remove it (deleting a route that
			// is not there is not an error).
			for _, r := range add {
				t.routes[r] = struct{}{}
			}
			return 0, 0, err
		}
	}
	if len(del) > 0 {
		if err := t.k.DelRoutes(del); err != nil {
			for _, r := range add {
				t.routes[r] = struct{}{}
			}
			return len(add), 0, err
		}
	}
	t.routes = w
	return len(add), len(del), nil
}

// RouteCount is the number of routes installed by this tracker.
func (t *Tracker) RouteCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.routes)
}

// Routes returns the routes currently installed by this tracker, sorted.
func (t *Tracker) Routes() []Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	rs := slices.Collect(maps.Keys(t.routes))
	SortRoutes(rs)
	return rs
}

// Addrs returns the addresses currently installed by this tracker.
func (t *Tracker) Addrs() []Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Collect(maps.Keys(t.addrs))
}

// Teardown removes the routes and addresses, restores the links and
// sysctls, in the reverse order of setting up. It goes on past errors and
// returns them all; the tracker is empty afterwards.
func (t *Tracker) Teardown() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	if len(t.routes) > 0 {
		rs := slices.Collect(maps.Keys(t.routes))
		SortRoutes(rs)
		if err := t.k.DelRoutes(rs); err != nil {
			errs = append(errs, err)
		}
		clear(t.routes)
	}
	for a := range t.addrs {
		if err := t.k.DelAddr(a.Dev, a.Prefix); err != nil {
			errs = append(errs, fmt.Errorf("address %v: %w", a, err))
		}
	}
	clear(t.addrs)
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
		if _, err := t.k.Sysctl(key, t.sysctls[key]); err != nil {
			errs = append(errs, err)
		}
	}
	clear(t.sysctls)
	t.sysOrd = nil
	return errors.Join(errs...)
}
