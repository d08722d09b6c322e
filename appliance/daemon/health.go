package daemon

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/map646/map646/appliance/netsetup"
)

// watcher is the netlink subscription the daemon repairs its set-up from
// (*netsetup.Watcher; tests use a fake).
type watcher interface {
	Read(cs []netsetup.Change) ([]netsetup.Change, error)
	Close() error
}

// changeQueue hands kernel events from the watcher's goroutine to the run
// loop without ever blocking the watcher (the kernel would drop events)
// and without losing any: past maxPendingChanges they collapse into one
// Lost, which makes the loop restore everything.
type changeQueue struct {
	mu    sync.Mutex
	cs    []netsetup.Change
	ready chan struct{} // one token while cs is not empty
}

const maxPendingChanges = 4096

func newChangeQueue() *changeQueue { return &changeQueue{ready: make(chan struct{}, 1)} }

func (q *changeQueue) push(cs []netsetup.Change) {
	if len(cs) == 0 {
		return
	}
	q.mu.Lock()
	if len(q.cs)+len(cs) > maxPendingChanges {
		q.cs = append(q.cs[:0], netsetup.Change{Lost: true})
	} else {
		q.cs = append(q.cs, cs...)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *changeQueue) take() []netsetup.Change {
	q.mu.Lock()
	defer q.mu.Unlock()
	cs := q.cs
	q.cs = nil
	return cs
}

// repairState is what the daemon knows about the kernel side of its data
// path: links it needs that are down, and whether putting back what the
// kernel removed worked. Only the run loop touches it.
type repairState struct {
	down       map[string]bool // watched links seen down
	restoreErr error           // the last restore failed: not healthy
	full       bool            // everything must be put back (link up again, lost events)
	// resync: the kernel refused part of what a reload asked for (a
	// route, rule, address or link): the whole plan in use is applied
	// again, with the restore's backoff, until it takes it; restoreErr
	// says why meanwhile.
	resync bool
	// prefixRefused: while resync, the routes that carry the announced
	// prefixes (into the tun; NIC mode's blackhole) could not all be put
	// in: traffic to an announced prefix may be black-holed, so the
	// announcements withdraw. A refused route block or interface alone
	// leaves them announced (the prefixes still forward).
	prefixRefused bool
	missing       []netsetup.Route
	// missingAddrs are addresses of ours deleted from outside (an
	// interface block's address is its servers' next hop); rules: a
	// policy rule was deleted (or may have been), without which
	// nothing reaches the translator's table.
	missingAddrs []netsetup.Addr
	rules        bool
	retryAt      time.Time     // after a failed restore, when to try again
	backoff      time.Duration // doubles per failure, up to maxRestoreBackoff
}

// maxRestoreBackoff bounds the wait between two attempts at a restore
// that keeps failing: each attempt replaces every route the daemon owns,
// which for a million routes takes seconds of a core.
const maxRestoreBackoff = 30 * time.Second

// watchedLinks are the links the data path needs up: the tun, or in NIC
// mode the NICs themselves, and the appliance's own interfaces. Neither an
// inherited fd nor the NIC link is watched by its device name: "fd 3" is
// no interface of this namespace (a tap's interface may be in another),
// nor is "nic eth0,eth1", and looking them up would read as a link down
// for ever.
func (d *daemon) watchedLinks() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var names []string
	switch l := d.dev.(type) {
	case *fdLink:
	case *nicLink:
		names = append(names, l.cfg.IPv4)
		if l.cfg.IPv6 != l.cfg.IPv4 {
			names = append(names, l.cfg.IPv6)
		}
	default:
		names = append(names, d.dev.Name())
	}
	for _, l := range d.plan.links {
		if !slices.Contains(names, l.Name) {
			names = append(names, l.Name)
		}
	}
	return names
}

// noteChanges records kernel events: a watched link that went down, one
// that came up again (its routes, and IPv6 addresses, are gone: restore
// everything), a route of ours that was deleted, an IPv4 address added
// or removed (refreshHostAddrs), an address of ours deleted, a policy
// rule deleted (ours are put back: RTM_DELRULE is not decoded).
func (d *daemon) noteChanges(cs []netsetup.Change) {
	links := d.watchedLinks()
	for _, c := range cs {
		if c.Deleted.Prefix.IsValid() && d.tracker.OwnsAddr(c.Deleted) {
			d.log.Warn("an address of the translator was deleted: restoring it", "addr", c.Deleted.String())
			d.repair.missingAddrs = append(d.repair.missingAddrs, c.Deleted)
		}
		switch {
		case c.Rule:
			d.repair.rules = true
		case c.Lost:
			d.repair.full = true
			d.host.stale = true
		case c.Addrs:
			d.host.stale = true
		case c.Link != "":
			if !slices.Contains(links, c.Link) {
				continue
			}
			if !c.Up {
				if !d.repair.down[c.Link] {
					d.log.Warn("link down: the translator cannot forward through it", "link", c.Link)
				}
				d.repair.down[c.Link] = true
			} else if d.repair.down[c.Link] {
				delete(d.repair.down, c.Link)
				d.log.Info("link up again: restoring its routes and addresses", "link", c.Link)
				d.repair.full = true
			}
		case c.Route.Dst.IsValid():
			if r, ok := d.tracker.Owned(c.Route); ok {
				d.log.Warn("a route of the translator was deleted: restoring it", "route", r.String())
				d.repair.missing = append(d.repair.missing, r)
			}
		}
	}
}

// pollLinks reads the state of the watched links, for events the
// subscription may have missed.
func (d *daemon) pollLinks() {
	var cs []netsetup.Change
	for _, name := range d.watchedLinks() {
		_, up, err := d.kernel.Link(name)
		cs = append(cs, netsetup.Change{Link: name, Up: up && err == nil})
	}
	d.noteChanges(cs)
}

// pollRules looks for policy rules of ours deleted without an event the
// subscription delivered (one rule dump per health check); a failed dump
// puts them all back, which is harmless. While a failed restore waits
// for its retry there is nothing to do: the retry puts back everything.
func (d *daemon) pollRules() {
	if d.repair.restoreErr != nil {
		return // the pending retry restores everything, rules too
	}
	missing, err := d.tracker.MissingRules()
	if err != nil {
		d.repair.rules = true
		return
	}
	if len(missing) > 0 {
		d.log.Warn("policy rules of the translator are missing: restoring them", "rules", fmt.Sprint(missing))
		d.repair.rules = true
	}
}

// partial reports whether some things deleted from outside are to be
// put back, short of a full restore.
func (r *repairState) partial() bool {
	return len(r.missing) > 0 || len(r.missingAddrs) > 0 || r.rules
}

// restore puts back what the kernel removed, unless a link it needs is
// down (the kernel refuses routes through a down link; they are restored
// when it comes back up).
func (d *daemon) restore() {
	if len(d.repair.down) > 0 {
		return
	}
	if !d.repair.full && !d.repair.partial() && d.repair.restoreErr == nil {
		return
	}
	if !d.repair.full && !d.repair.partial() && time.Now().Before(d.repair.retryAt) {
		return // a retry of a failed restore, not yet due
	}
	var err error
	switch {
	case d.repair.resync:
		err = d.resync()
		if err != nil {
			d.checkPrefixRoutes()
		}
	case d.repair.full || d.repair.restoreErr != nil:
		err = d.tracker.Restore()
	default:
		// Addresses first: a route through a gateway needs the
		// address that makes the gateway on-link.
		err = d.tracker.ReinstallAddrs(d.repair.missingAddrs)
		err = errors.Join(err, d.tracker.Reinstall(d.repair.missing))
		if d.repair.rules {
			err = errors.Join(err, d.tracker.RestoreRules())
		}
	}
	d.repair.full, d.repair.missing, d.repair.missingAddrs, d.repair.rules = false, nil, nil, false
	if err != nil {
		if d.repair.restoreErr == nil {
			d.log.Error("cannot restore the translator's routes: unhealthy until it can", "err", err)
		}
		d.repairFailed(err)
		return
	}
	if !d.repair.resync && d.repair.restoreErr != nil {
		d.log.Info("routes restored")
	}
	d.kernelTookAll()
}

// kernelTookAll records that the kernel holds everything the plan in use
// asks for (a restore or a full resync succeeded): whatever it refused
// before is in now, and the restore's backoff starts afresh.
func (d *daemon) kernelTookAll() {
	if d.repair.resync {
		d.log.Info("the kernel took the configuration in use")
	}
	d.repair.restoreErr = nil
	d.repair.resync = false
	d.repair.prefixRefused = false
	d.repair.backoff = 0
	d.repair.retryAt = time.Time{}
}

// repairFailed records a failed attempt at putting the kernel state back
// (err, which keeps the daemon unhealthy) and when to try again: the pause
// doubles per failure, from HealthInterval up to maxRestoreBackoff.
func (d *daemon) repairFailed(err error) {
	d.repair.restoreErr = err
	d.repair.backoff = min(max(2*d.repair.backoff, d.opts.HealthInterval), maxRestoreBackoff)
	d.repair.retryAt = time.Now().Add(d.repair.backoff)
}

// kernelRefused is a reload's kernel changes failing in part (err): the
// configuration is in use by the engine, so the kernel must follow it.
// The whole plan is applied again with the restore's backoff until the
// kernel takes it, without another reload. Announcers withdraw only if
// the routes of the announced prefixes themselves are refused (an
// announced prefix whose route is missing is a black hole); a refused
// route block (a gateway not on-link) or interface (a missing device)
// leaves the prefixes forwarding and announced. Either way the watchdog
// is still fed (checkHealth): a restart would meet the same refusal.
func (d *daemon) kernelRefused(err error) {
	d.log.Error("the kernel refused part of the new configuration: retrying until it takes it", "err", err)
	d.repair.resync = true
	d.repairFailed(err)
	d.checkPrefixRoutes()
}

// checkPrefixRoutes sets repair.prefixRefused: whether the kernel refuses
// the routes that carry the announced prefixes (put in again, with
// replace semantics, on their own, so that a refused route block in the
// same batch does not count against them).
func (d *daemon) checkPrefixRoutes() {
	d.mu.Lock()
	rs := d.plan.prefixRoutes()
	d.mu.Unlock()
	err := d.tracker.Reinstall(rs)
	if err != nil && !d.repair.prefixRefused {
		d.log.Error("the kernel refuses the routes of the announced prefixes: withdrawing them", "err", err)
	}
	d.repair.prefixRefused = err != nil
}

// resync applies the plan in use again, whole (repairState.resync). The
// difference alone would not do: the tracker counts the routes of a batch
// the kernel refused as its own (some of it may be in), so Restore
// replaces every route and address it owns afterwards.
func (d *daemon) resync() error {
	d.mu.Lock()
	p := d.plan
	d.mu.Unlock()
	_, _, err := d.syncKernel(p)
	return errors.Join(err, d.tracker.Restore())
}

// forwardingFault says why the kernel side cannot forward, or nil: a
// link the data path needs is down, or routes removed from outside could
// not be put back. A configuration the kernel refused (repair.resync) is
// not one: the translator forwards what the kernel took, and restarting
// cannot make the kernel take the rest.
func (d *daemon) forwardingFault() error {
	if len(d.repair.down) > 0 {
		var names []string
		for n := range d.repair.down {
			names = append(names, n)
		}
		slices.Sort(names)
		return fmt.Errorf("link down: %v", names)
	}
	if d.repair.restoreErr != nil && !d.repair.resync {
		return fmt.Errorf("routes not restored: %w", d.repair.restoreErr)
	}
	return nil
}

// refusedFault says what the kernel refuses of the configuration in use,
// or nil.
func (d *daemon) refusedFault() error {
	if d.repair.resync && d.repair.restoreErr != nil {
		return fmt.Errorf("the kernel refused part of the configuration in use: %w", d.repair.restoreErr)
	}
	return nil
}

// liveness is the data path's health, which feeds the service manager's
// watchdog (Options.OnHealth): its links up, routes removed from outside
// put back, its workers forwarding.
func (d *daemon) liveness() error {
	if err := d.forwardingFault(); err != nil {
		return err
	}
	return dataPathFault(d.dp)
}

// checkHealth sets the daemon's health and tells the announcers when it
// changed, so that BGP and router advertisements withdraw. Healthy is
// liveness, and the announced prefixes' routes in place (a refused
// reload whose prefix routes are missing withdraws them); the watchdog
// hook is given liveness alone.
func (d *daemon) checkHealth(announce func()) {
	fault := d.liveness()
	if d.opts.OnHealth != nil {
		d.opts.OnHealth(fault == nil)
	}
	if fault == nil && d.repair.prefixRefused {
		fault = d.refusedFault()
	}
	h := fault == nil
	d.mu.Lock()
	changed := h != d.healthy
	d.healthy = h
	d.mu.Unlock()
	if !changed {
		return
	}
	if h {
		d.log.Info("healthy again")
	} else {
		d.log.Warn("unhealthy: withdrawing announcements", "why", fault.Error())
	}
	announce()
}

// dataPathFault says why dp is not forwarding, nil if it is: its Check's
// error where it has one (stack.Datapath: a queue stuck or ended, a queue
// attached to an inherited tun that nobody here reads), so that the
// warning that withdraws the announcements names the cause.
func dataPathFault(dp datapath) error {
	if c, ok := dp.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			return fmt.Errorf("data path: %w", err)
		}
		return nil
	}
	if !dp.Healthy() {
		return errors.New("data path workers not forwarding")
	}
	return nil
}
