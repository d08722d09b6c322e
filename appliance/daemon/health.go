package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
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
	// unsure are routes of the plan in use that the kernel may not hold:
	// those a reload added in a batch it refused (the tracker counts
	// them as its own, so the difference alone never puts them in
	// again). A retry puts in these alone, not every route the daemon
	// owns (a million for a million mappings), and they stop being
	// unsure once the kernel takes them.
	unsure []netsetup.Route
	// setUp are the plan's interfaces the daemon brought up. One the
	// kernel does not have (a reload naming a missing device) is a
	// refused configuration, retried, not a link down: it was never
	// forwarding, and a restart would fail on it too.
	setUp   map[string]bool
	missing []netsetup.Route
	// missingAddrs are addresses of ours deleted from outside (an
	// interface block's address is its servers' next hop); rules: a
	// policy rule was deleted (or may have been), without which
	// nothing reaches the translator's table.
	missingAddrs []netsetup.Addr
	rules        bool
	// ahead are routes of someone else's that the kernel now prefers
	// to one of ours (netsetup.Change.Ahead), to be deleted.
	ahead []netsetup.AheadRoute
	// sysctlErr: a forwarding sysctl changed from outside could not be
	// put back (pollSysctls): not healthy.
	sysctlErr error
	// sysctlBlindSince is when the forwarding sysctls last became
	// unreadable for want of descriptors or memory (sysctlUnreadable),
	// zero while they can be read (pollSysctls).
	sysctlBlindSince time.Time
	// sysctlWarns rate-limits the warning for a forwarding sysctl
	// someone keeps setting to the other value (pollSysctls puts it
	// back every health interval).
	sysctlWarns repairWarnings
	retryAt     time.Time     // after a failed restore, when to try again
	backoff     time.Duration // doubles per failure, up to maxRestoreBackoff
}

// repairWarnings counts, per key, the repairs in a row (polls that found
// the key changed, with none between that found it right), so that one
// held at another value on purpose (an operator's sysctl.d, a
// configuration manager) warns at the 1st, 2nd, 4th, 8th... repair in a
// row, not at every health interval for ever. The zero value is ready.
type repairWarnings struct {
	inRow  map[string]uint64 // repairs in a row, by key
	warned map[string]uint64 // inRow at the last warning, by key
}

// repaired counts a repair of key and reports whether it is due a
// warning, and how many repairs that warning covers (those since the
// last one, this one included).
func (w *repairWarnings) repaired(key string) (since uint64, due bool) {
	if w.inRow == nil {
		w.inRow, w.warned = map[string]uint64{}, map[string]uint64{}
	}
	w.inRow[key]++
	n := w.inRow[key]
	if n&(n-1) != 0 { // not a power of two
		return 0, false
	}
	since = n - w.warned[key]
	w.warned[key] = n
	return since, true
}

// kept notes that a poll found key right: the next change is a new one,
// warned at once.
func (w *repairWarnings) kept(key string) {
	delete(w.inRow, key)
	delete(w.warned, key)
}

// repairCounts count what the daemon put back after someone else changed
// or removed it (map646_kernel_repairs_total): the run loop adds, Stats
// reads.
type repairCounts struct {
	sysctl, route, rule, addr atomic.Uint64
}

// visit calls f with each count and its label.
func (c *repairCounts) visit(f func(what string, n uint64)) {
	f("sysctl", c.sysctl.Load())
	f("route", c.route.Load())
	f("rule", c.rule.Load())
	f("address", c.addr.Load())
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
// for ever. The plan's interfaces are watched once the daemon brought
// them up (repairState.setUp).
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
		if d.repair.setUp[l.Name] && !slices.Contains(names, l.Name) {
			names = append(names, l.Name)
		}
	}
	return names
}

// noteChanges records kernel events: a watched link that went down, one
// that came up again (its routes, and IPv6 addresses, are gone: restore
// everything), a route of ours that was deleted or replaced by another
// one, an IPv4 address added
// or removed (refreshHostAddrs), an address of ours deleted, a policy
// rule of ours deleted.
func (d *daemon) noteChanges(cs []netsetup.Change) {
	links := d.watchedLinks()
	for _, c := range cs {
		if c.Deleted.Prefix.IsValid() && d.tracker.OwnsAddr(c.Deleted) {
			d.log.Warn("an address of the translator was deleted: restoring it", "addr", c.Deleted.String())
			d.repairs.addr.Add(1)
			d.repair.missingAddrs = append(d.repair.missingAddrs, c.Deleted)
			// The kernel took the routes through a gateway in its
			// subnet with it, without an event for them.
			d.repair.missing = append(d.repair.missing, d.tracker.RoutesVia(c.Deleted)...)
		}
		switch {
		case c.Rule.Family != 0:
			// Only ours: someone else's rule deleted (systemd-networkd,
			// docker, an operator) is none of our business, and a
			// stream of them must not keep the repair path busy.
			if d.tracker.OwnsRule(c.Rule, c.RuleProtocol) {
				d.log.Warn("a policy rule of the translator was deleted: restoring it", "rule", c.Rule.String())
				d.repairs.rule.Add(1)
				d.repair.rules = true
			}
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
		case c.Ahead.Dst.IsValid():
			// Put ahead of ours without replacing it (`ip route
			// prepend`, a lower IPv6 metric in the translator's
			// table): ours is still there, but no packet uses it.
			// Its place, or its table, is the translator's: undone.
			if d.aheadOfOurs(c.Ahead) {
				d.repair.ahead = append(d.repair.ahead, c.Ahead)
			}
		case c.Route.Dst.IsValid() && c.Replaced:
			// Replaced in place (`ip route replace`): no delete
			// came. Ours as it was (someone replaced it with the
			// same, protocol included) needs nothing; anything else
			// in the place of ours (a blackhole, another device, or
			// the same route of another protocol, whose later
			// deletion the watcher does not report) is undone.
			if _, same := d.tracker.Owned(c.Route); same && c.Protocol == netsetup.RouteProtocol {
				continue
			}
			if r, ok := d.tracker.OwnedAt(c.Route.Dst, c.Route.Table); ok {
				d.log.Warn("a route of the translator was replaced: restoring it", "route", r.String(), "by", c.Route.String())
				d.repairs.route.Add(1)
				d.repair.missing = append(d.repair.missing, r)
			}
		case c.Route.Dst.IsValid():
			if r, ok := d.tracker.Owned(c.Route); ok {
				d.log.Warn("a route of the translator was deleted: restoring it", "route", r.String())
				d.repairs.route.Add(1)
				d.repair.missing = append(d.repair.missing, r)
			}
		}
	}
}

// aheadOfOurs logs and counts a as a route repair if it is at the
// destination of a route of ours, in its table (a route put ahead of
// ours, which is, or was, deleted), and reports whether it is.
func (d *daemon) aheadOfOurs(a netsetup.AheadRoute) bool {
	r, ok := d.tracker.OwnedAt(a.Dst, a.Table)
	if ok {
		d.log.Warn("a route was put ahead of one of the translator's: deleting it", "route", r.String(), "ahead", a.String())
		d.repairs.route.Add(1)
	}
	return ok
}

// pollLinks reads the state of the watched links, for events the
// subscription may have missed.
func (d *daemon) pollLinks() {
	links := d.watchedLinks()
	d.forgetUnwatched(links)
	var cs []netsetup.Change
	for _, name := range links {
		_, up, err := d.kernel.Link(name)
		cs = append(cs, netsetup.Change{Link: name, Up: up && err == nil})
	}
	d.noteChanges(cs)
}

// forgetUnwatched drops the links seen down that are no longer watched
// (a reload removed their interface block): neither events nor polls
// cover them any more, so they would keep the daemon unhealthy for ever.
func (d *daemon) forgetUnwatched(watched []string) {
	for n := range d.repair.down {
		if !slices.Contains(watched, n) {
			delete(d.repair.down, n)
			d.log.Info("link no longer needed: no longer waiting for it", "link", n)
		}
	}
}

// pollRules looks for policy rules of ours deleted without an event the
// subscription delivered (one rule dump per health check); a failed dump
// puts them all back, which is harmless. While a failed full restore
// waits for its retry there is nothing to do: the retry puts back
// everything.
func (d *daemon) pollRules() {
	if d.repair.restoreErr != nil && !d.repair.resync {
		// The pending retry is a full restore: rules too. A refusal's
		// retry (resync) adds rules only by difference, so they are
		// looked for then as at any other time.
		return
	}
	missing, err := d.tracker.MissingRules()
	if err != nil {
		d.repair.rules = true
		return
	}
	if len(missing) > 0 {
		d.log.Warn("policy rules of the translator are missing: restoring them", "rules", fmt.Sprint(missing))
		d.repairs.rule.Add(uint64(len(missing)))
		d.repair.rules = true
	}
}

// forwardingSysctl is what the kernel's forwarding must be in link mode
// link ("1" for host mode, "0" for NIC mode), or "" when the daemon
// leaves it alone (fd mode: whoever handed the link over routes).
func forwardingSysctl(link string) string {
	return map[string]string{config.LinkTun: "1", config.LinkNIC: "0"}[link]
}

// heldSysctls are the forwarding sysctls the translator needs at
// forwardingSysctl's value while it runs: IPv4 forwarding (RFC 1812) and
// IPv6 forwarding (RFC 8200 section 1: a router), and IPv4 forwarding of
// each watched link, which the kernel checks on the interface a packet
// came in on (net.ipv4.ip_forward sets them all, but each can be turned
// off alone). Host mode: off, the kernel drops what enters from the tun
// and the interfaces instead of routing it into and out of the tun: a
// black hole. NIC mode: on, the kernel, which sees a copy of every frame
// off the NICs, routes it natively between them, past the mapping table.
// In host mode the IPv4 side's interfaces the configuration names
// (tun.ipv4_interfaces, interface blocks with IPv4 addresses only:
// config.Config.Sides) are held too: IPv4 to the mapped addresses comes
// in there. Other interfaces' are not: which of them IPv4 clients' packets
// arrive on, the configuration does not say, and routes cannot (a default
// route names the way out, not the way in). IPv6 forwarding is decided
// by net.ipv6.conf.all.forwarding alone. Slash keys keep an interface
// name's dots (eth0.100).
func (d *daemon) heldSysctls() []string {
	if forwardingSysctl(d.running.Translator.Link) == "" {
		return nil
	}
	keys := []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"}
	links := d.watchedLinks()
	if d.running.Translator.Link == config.LinkTun {
		d.mu.Lock()
		v4, _ := d.cfg.Sides()
		d.mu.Unlock()
		for _, l := range v4 {
			if !slices.Contains(links, l) {
				links = append(links, l)
			}
		}
	}
	for _, l := range links {
		keys = append(keys, "net/ipv4/conf/"+l+"/forwarding")
	}
	return keys
}

// pollSysctls reads the forwarding sysctls the translator needs (a few
// reads of /proc/sys per health check) and puts back, with a warning,
// any that someone else changed: `sysctl --system` with a hardening
// baseline turns forwarding off, a container runtime turns it on. One
// that cannot be put back keeps the daemon unhealthy (repair.sysctlErr)
// until it can; a restart, which sets them before anything else, would.
// A watched link's that is missing is not an error here: the link down
// is (pollLinks). One that cannot be read for want of descriptors or
// memory is not checked, and no fault until that lasts sysctlBlindLimit.
func (d *daemon) pollSysctls() {
	want := forwardingSysctl(d.running.Translator.Link)
	var errs, blind []error
	for _, key := range d.heldSysctls() {
		was, err := d.tracker.KeepSysctl(key, want)
		switch {
		case err != nil && strings.Contains(key, "/") && errors.Is(err, fs.ErrNotExist):
		case err != nil && was == "" && sysctlUnreadable(err):
			blind = append(blind, err) // read failed: the value is unknown, not wrong
		case err != nil:
			errs = append(errs, err)
		case was != want:
			d.repairs.sysctl.Add(1)
			if since, due := d.repair.sysctlWarns.repaired(key); due {
				d.log.Warn("a forwarding sysctl was changed from outside: putting it back", "sysctl", key, "found", was, "want", want, "repairs_since_last_warning", since)
			}
		default:
			d.repair.sysctlWarns.kept(key)
		}
	}
	if err := d.sysctlsBlind(errors.Join(blind...)); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	switch {
	case err != nil && d.repair.sysctlErr == nil:
		d.log.Error("cannot put the forwarding sysctls back: unhealthy until it can", "err", err)
	case err == nil && d.repair.sysctlErr != nil:
		d.log.Info("forwarding sysctls put back")
	}
	d.repair.sysctlErr = err
}

// sysctlBlindLimit is how long the forwarding sysctls may stay unreadable
// (sysctlUnreadable) before the daemon counts itself unhealthy. A
// moment without descriptors (a burst of clients) says nothing about
// forwarding and must not withdraw prefixes that carry traffic (review
// H4: EMFILE read as a forwarding fault withdrew every prefix). But for
// as long as it lasts, forwarding turned off from outside (a black
// hole) goes unseen, and a process that has lacked descriptors for a
// minute can neither restore routes nor answer its operators: it stops
// claiming health. A variable so that tests need not wait that long.
var sysctlBlindLimit = time.Minute

// sysctlsBlind keeps track of the forwarding sysctls being unreadable
// (err, from this poll; nil if they were read) and says when that has
// lasted sysctlBlindLimit: a fault from then on.
func (d *daemon) sysctlsBlind(err error) error {
	since := &d.repair.sysctlBlindSince
	switch {
	case err == nil:
		if !since.IsZero() {
			d.log.Info("forwarding sysctls readable again", "unreadable_for", time.Since(*since).Round(time.Millisecond).String())
			*since = time.Time{}
		}
		return nil
	case since.IsZero():
		*since = time.Now()
		d.log.Warn("cannot read the forwarding sysctls: not checked until they can be (unhealthy if that lasts)",
			"err", err, "unhealthy_after", sysctlBlindLimit.String())
	}
	if time.Since(*since) < sysctlBlindLimit {
		return nil
	}
	return fmt.Errorf("unreadable for %v: %w", time.Since(*since).Round(time.Second), err)
}

// sysctlUnreadable reports whether a sysctl read failed for want of a
// resource of the process or the system (descriptors, memory), which
// says nothing about the sysctl's value. Other failures (EACCES: the
// daemon may not manage forwarding) are faults at once.
func sysctlUnreadable(err error) bool {
	for _, e := range []error{unix.EMFILE, unix.ENFILE, unix.ENOMEM, unix.ENOBUFS, unix.EINTR, unix.EAGAIN} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// partial reports whether some things deleted from outside are to be
// put back, short of a full restore.
func (r *repairState) partial() bool {
	return len(r.missing) > 0 || len(r.missingAddrs) > 0 || r.rules || len(r.ahead) > 0
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
	// A retry owed (a failed restore, a refusal) waits for its time even
	// when something else was deleted meanwhile: those things alone are
	// put back now, so that a stream of events (a foreign rule deleted
	// every second) cannot make each of them a full restore or a resync,
	// each of which replaces or compares every route (a million).
	due := d.repair.restoreErr == nil || !time.Now().Before(d.repair.retryAt)
	partialOnly := false
	// Routes ahead of ours go first, whatever else is owed: an IPv4
	// route of ours behind another at its place cannot be replaced
	// (the kernel answers EEXIST while it is not the first).
	err := d.tracker.EvictAhead(d.repair.ahead)
	d.repair.ahead = nil
	if d.repair.full || (d.repair.restoreErr != nil && due && !d.repair.resync) {
		// Events were lost, or a restore failed: routes put ahead
		// of ours meanwhile are found by a dump of the tables.
		evicted, evictErr := d.tracker.EvictAllAhead(PolicyTable)
		for _, a := range evicted {
			d.aheadOfOurs(a)
		}
		err = errors.Join(err, evictErr)
	}
	switch {
	case d.repair.resync && (due || d.repair.full):
		if !d.repair.full { // a full restore puts back addresses and rules too
			err = errors.Join(err, d.tracker.ReinstallAddrs(d.repair.missingAddrs))
			if d.repair.rules {
				err = errors.Join(err, d.tracker.RestoreRules())
			}
		}
		err = errors.Join(err, d.resync(d.repair.full, d.repair.missing))
	case d.repair.full || (d.repair.restoreErr != nil && due):
		err = errors.Join(err, d.tracker.Restore())
	default:
		partialOnly = d.repair.restoreErr != nil
		// Addresses first: a route through a gateway needs the
		// address that makes the gateway on-link.
		err = errors.Join(err, d.tracker.ReinstallAddrs(d.repair.missingAddrs))
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
	if partialOnly {
		return // the retry owed is still owed
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
	if d.repair.restoreErr != nil && !d.repair.resync {
		d.repair.full = true // a restore still owed: the first retry does it whole
	}
	d.repair.resync = true
	d.repairFailed(err)
	d.mu.Lock()
	prefix := d.plan.prefixRoutes()
	d.mu.Unlock()
	_ = d.retryRoutes(prefix, true) // its verdict is repair.prefixRefused
}

// retryRoutes puts in again, with replace semantics, the routes the
// kernel may not hold (repairState.unsure), and sets
// repair.prefixRefused: whether it refuses those among them that carry
// the announced prefixes (prefix), which go in a batch of their own so
// that a refused route block does not count against them. The routes not
// unsure the kernel holds: they went in with batches it took whole.
// prefixOnly: only the prefixes' routes are tried (the reload that
// refused the others just did).
func (d *daemon) retryRoutes(prefix []netsetup.Route, prefixOnly bool) error {
	if len(d.repair.unsure) == 0 {
		d.repair.prefixRefused = false
		return nil
	}
	own := make(map[netsetup.Route]bool, len(prefix))
	for _, r := range prefix {
		own[r] = true
	}
	var ps, rest []netsetup.Route
	for _, r := range d.repair.unsure {
		if own[r] {
			ps = append(ps, r)
		} else {
			rest = append(rest, r)
		}
	}
	perr := d.tracker.Reinstall(ps)
	if perr != nil && !d.repair.prefixRefused {
		d.log.Error("the kernel refuses the routes of the announced prefixes: withdrawing them", "err", perr)
	}
	d.repair.prefixRefused = perr != nil
	var rerr error
	if !prefixOnly {
		rerr = d.tracker.Reinstall(rest)
	}
	var still []netsetup.Route
	if perr != nil {
		still = ps
	}
	if rerr != nil || prefixOnly {
		still = append(still, rest...)
	}
	d.repair.unsure = still
	return errors.Join(perr, rerr)
}

// resync applies the plan in use again (repairState.resync): by
// difference (rules, links and addresses the kernel refused are tried
// again, the tracker never counted them as its own), and the routes it
// may not hold put in again (retryRoutes). whole: a link came up again or
// events were lost meanwhile, so every route and address the daemon owns
// is put back first; else missing, routes of ours deleted from outside.
func (d *daemon) resync(whole bool, missing []netsetup.Route) error {
	d.mu.Lock()
	p := d.plan
	d.mu.Unlock()
	_, _, err := d.syncKernel(p, false)
	switch {
	case whole:
		err = errors.Join(err, d.tracker.Restore())
	case len(missing) > 0:
		err = errors.Join(err, d.tracker.Reinstall(missing))
	}
	return errors.Join(err, d.retryRoutes(p.prefixRoutes(), false))
}

// unsureRoutes returns the routes of want the kernel may not hold after
// a reload from the plan's routes old: those of unsure still wanted, and
// if the kernel refused part of the reload's routes (refused), every
// route the reload added.
func unsureRoutes(unsure, old, want []netsetup.Route, refused bool) []netsetup.Route {
	w := make(map[netsetup.Route]bool, len(want))
	for _, r := range want {
		w[r] = true
	}
	var out []netsetup.Route
	for _, r := range unsure {
		if w[r] {
			out = append(out, r)
			w[r] = false // listed
		}
	}
	if !refused {
		return out
	}
	had := make(map[netsetup.Route]bool, len(old))
	for _, r := range old {
		had[r] = true
	}
	for _, r := range want {
		if w[r] && !had[r] {
			out = append(out, r)
			w[r] = false
		}
	}
	return out
}

// forwardingFault says why the kernel side cannot forward, or nil: a
// link the data path needs is down, routes removed from outside could
// not be put back, or forwarding sysctls changed from outside could not. A configuration the kernel refused (repair.resync) is
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
	if d.repair.sysctlErr != nil {
		return fmt.Errorf("forwarding sysctls not as the translator needs them: %w", d.repair.sysctlErr)
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
// and forwarding sysctls changed from outside put back, its workers
// forwarding.
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
	if d.healthy.Swap(h) == h {
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
