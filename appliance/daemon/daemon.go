// Package daemon runs the translator as a service: it loads the HCL
// configuration, takes the one-per-network-namespace lock, builds the
// engine, creates the tun, installs routes (aggregated, in their own table
// behind policy rules that let only translated traffic be forwarded) and
// the appliance's addresses, serves the data path, the Prometheus endpoint
// and the control socket, reloads on request, tells announcers (BGP,
// router advertisements) what to announce, and removes everything it
// installed when it stops.
//
// It is healthy only while it can forward: the data path's workers are
// alive, the links it needs are up and its routes are in place. A netlink
// subscription tells it when the kernel undid part of the set-up (a link
// down and up flushes the routes through it; an operator deletes or
// replaces a route), and each health poll reads the forwarding sysctls;
// it puts back what it can and is unhealthy, so that announcers withdraw,
// until it has.
//
// A reload (SIGHUP or `map646 reload`) parses and validates the new file,
// builds the new table, swaps it into the engine atomically and applies
// only the route and address difference; a bad file is refused with its
// diagnostics and the running configuration keeps forwarding.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// DefaultControlSocket is where `map646 stats` and `map646 reload` find
// the running daemon: in DefaultLockDir, the one directory a daemon that
// runs as its own user (the packaged unit's User=map646) needs to write.
const DefaultControlSocket = "/run/map646/map646.sock"

// Options configure Run.
type Options struct {
	ConfigPath string
	// ConfigRoot, if set, confines the configuration and its
	// mappings_file to this directory (a config drive).
	ConfigRoot string
	// Logger receives the daemon's logs; nil builds one on stderr from
	// the configuration's log block.
	Logger *slog.Logger
	// Reload asks for a configuration reload (SIGHUP).
	Reload <-chan struct{}
	// ControlSocket is the Unix socket path for stats and reload
	// requests; "" means DefaultControlSocket.
	ControlSocket string
	// ControlGroup is a group (name or number) whose members may use the
	// control socket besides root and the daemon's user; "" for none.
	ControlGroup string
	// OnReady is called once everything is set up and packets flow.
	OnReady func(ReadyInfo)
	// LockDir is where the per-network-namespace instance lock lives;
	// "" means DefaultLockDir.
	LockDir string
	// User and Group, when set, replace the run_as block's user and group
	// (`map646 run --user/--group`).
	User, Group string
	// KeepPrivileges keeps the process's user and capabilities after
	// set-up (and ignores run_as, with a warning): PID 1 runs the
	// translator in its own process and must still power off, unmount
	// and start the translator again.
	KeepPrivileges bool
	// Announcers are the kinds of announcer the daemon starts, in this
	// order, when their configuration block is present.
	Announcers []AnnouncerKind
	// Version is reported in ReadyInfo, the log and the metrics; "" means
	// the main module's version from the build info, or "dev".
	Version string
	// WithdrawDrain is how long the translator keeps forwarding after it
	// told its announcers to withdraw, before it removes the tun and its
	// routes; 0 means DefaultWithdrawDrain.
	WithdrawDrain time.Duration
	// HealthInterval is how often the data path's health and the links
	// are polled; 0 means DefaultHealthInterval.
	HealthInterval time.Duration
	// DropLogInterval is the shortest time between two log lines about
	// dropped packets (drops are summarised, never logged one by one); 0
	// means DefaultDropLogInterval.
	DropLogInterval time.Duration
	// OnReload, if set, is called with true when a reload starts and with
	// false when it has ended, applied or refused: a service manager is
	// told RELOADING=1 and then READY=1 (sd_notify(3)).
	OnReload func(starting bool)
	// OnHealth, if set, is called with the data path's liveness at every
	// poll (HealthInterval): its links up, routes removed from outside
	// and forwarding sysctls changed from outside put back, its queues
	// forwarding. systemd's watchdog is fed only
	// while it is live, so a translator that stopped forwarding gets
	// restarted. A reload the kernel refused in part, or an announcer
	// that failed to start, leaves it live: a restart cannot fix either.
	OnHealth func(healthy bool)
}

// Defaults of Options.
const (
	DefaultWithdrawDrain   = 500 * time.Millisecond
	DefaultHealthInterval  = time.Second
	DefaultDropLogInterval = 10 * time.Second
)

// withDefaults fills the options left zero.
func (o Options) withDefaults() Options {
	if o.ControlSocket == "" {
		o.ControlSocket = DefaultControlSocket
	}
	if o.LockDir == "" {
		o.LockDir = DefaultLockDir
	}
	if o.Version == "" {
		o.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			o.Version = bi.Main.Version
		}
	}
	if o.WithdrawDrain == 0 {
		o.WithdrawDrain = DefaultWithdrawDrain
	}
	if o.HealthInterval == 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.DropLogInterval == 0 {
		o.DropLogInterval = DefaultDropLogInterval
	}
	return o
}

func (o *Options) reloading(starting bool) {
	if o.OnReload != nil {
		o.OnReload(starting)
	}
}

// ReadyInfo describes the running translator.
type ReadyInfo struct {
	Version, Digest string
	Mappings        int
	Tun             string
	// PreexistingRoutes are wanted routes the kernel already had from
	// someone else: left in place, not replaced, never removed.
	PreexistingRoutes []string
}

// ConfigLoadTimeout bounds reading and checking the configuration (a
// million-line mappings file takes a few seconds); a load still running
// then is abandoned, so a file system that hangs cannot hang the daemon.
const ConfigLoadTimeout = time.Minute

// loadConfig loads the configuration, giving up when ctx ends (SIGTERM
// wins over a reload in progress) or after ConfigLoadTimeout.
func loadConfig(ctx context.Context, opts Options) (*config.Config, error) {
	ctx, cancel := context.WithTimeout(ctx, ConfigLoadTimeout)
	defer cancel()
	return config.LoadContext(ctx, opts.ConfigPath, opts.ConfigRoot)
}

// loadChecking is loadConfig for a reload, which the run loop waits for:
// meanwhile it goes on with the health polls, every HealthInterval as
// serve does, so that a data path that stops forwarding during a long
// load (a large mappings file, a hung file system: up to
// ConfigLoadTimeout) is withdrawn at once instead of announced, and
// reported healthy, until the load ends. Kernel events are handled as
// serve handles them (d.changes): a route, rule or address of ours deleted
// during the load is put back at once, not when it ends. Nothing the load
// changes is in use before it has returned.
func (d *daemon) loadChecking(ctx context.Context) (*config.Config, error) {
	load := d.env.load
	if load == nil {
		load = loadConfig
	}
	type loaded struct {
		cfg *config.Config
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		cfg, err := load(ctx, d.opts)
		done <- loaded{cfg, err}
	}()
	var changed <-chan struct{} // none without a subscription (lifecycle tests)
	if d.changes != nil {
		changed = d.changes.ready
	}
	health := time.NewTicker(d.opts.HealthInterval)
	defer health.Stop()
	for {
		select {
		case r := <-done:
			return r.cfg, r.err
		case <-changed:
			d.noteChanges(d.changes.take())
			d.keepHostAddrs()
			d.restore()
			d.checkHealth(func() { d.announce(ctx) })
		case <-health.C:
			d.pollLinks()
			d.pollRules()
			d.pollSysctls()
			d.keepHostAddrs()
			d.restore()
			d.checkHealth(func() { d.announce(ctx) })
		}
	}
}

// device and datapath are the parts of the stack package the daemon
// uses; the seams let lifecycle tests run without a tun.
type device interface {
	Name() string
	Offloads() string
	Close() error
}

type datapath interface {
	Wait() error
	Healthy() bool
	LinkStats() stack.LinkStats
}

// env is how the daemon reaches the system.
type env struct {
	kernel  func() (netsetup.Kernel, func() error, error)
	openTun func(tun.Config) (device, error)
	// watch subscribes to kernel events, leaving out the route
	// replacements the kernel socket of port ownPort makes (restores).
	watch func(ownPort uint32) (watcher, error)
	// openLink opens the link of the fd and nic modes (translator.link).
	openLink func(config.Translator) (device, error)
	serve    func(ctx context.Context, eng *xlat.Engine, dev device, log *slog.Logger) (datapath, error)
	// dropPrivileges switches the whole process to id and the
	// capabilities keep once it is set up; nil keeps them (the lifecycle
	// tests run the daemon inside the test process).
	dropPrivileges func(id identity, keep []uintptr) error
	// heldCap reports whether the process has a capability in its
	// permitted set (keptCaps); nil: none beyond neededCaps.
	heldCap func(c uintptr) bool
	// load reads the configuration for a reload; nil: loadConfig.
	load func(ctx context.Context, opts Options) (*config.Config, error)
}

// fdLink is the fd mode's device: a descriptor the daemon inherited. It
// stays open when the daemon stops (its owner is whoever handed it over).
type fdLink struct {
	fd, mtu int
	queues  int              // descriptors fd … fd+queues-1; 0 or 1: one
	tap     *stack.TapConfig // the fd carries Ethernet frames; nil: bare IP
	// What the descriptors said (probeFDLink): a tun or tap, the size
	// of their virtio_net_hdr (0: none) and the offloads set on it.
	tun      bool
	vnetHdr  int
	offloads int
}

func (l *fdLink) Name() string {
	switch {
	case l.tap != nil:
		return fmt.Sprintf("fd %d (Ethernet, %s)", l.fd, net.HardwareAddr(l.tap.MAC[:]))
	case l.queues > 1:
		return fmt.Sprintf("fd %d-%d", l.fd, l.fd+l.queues-1)
	}
	return fmt.Sprintf("fd %d", l.fd)
}

// fds are the link's descriptors.
func (l *fdLink) fds() []int {
	fds := []int{l.fd}
	for i := 1; i < l.queues; i++ {
		fds = append(fds, l.fd+i)
	}
	return fds
}
func (l *fdLink) Offloads() string { return tun.OffloadNames(l.offloads) }
func (l *fdLink) Close() error     { return nil }

// nicLink is the NIC mode's device: the NICs the data path opens its
// AF_PACKET sockets on (and closes them itself when it stops).
type nicLink struct{ cfg stack.NICConfig }

func (l *nicLink) Name() string {
	if l.cfg.IPv4 == l.cfg.IPv6 {
		return "nic " + l.cfg.IPv4
	}
	return "nic " + l.cfg.IPv4 + "," + l.cfg.IPv6
}
func (l *nicLink) Offloads() string { return "none" }
func (l *nicLink) Close() error     { return nil }

// queues is the number of queue loops ServeNIC runs: cfg.Queues, each
// reading its index's socket of each NIC.
func (l *nicLink) queues() int { return max(l.cfg.Queues, 1) }

// openLink checks and returns the device of the fd or nic mode.
func openLink(t config.Translator) (device, error) {
	switch t.Link {
	case config.LinkFD:
		l := &fdLink{fd: t.FD.FD, mtu: t.FD.MTU, queues: t.FD.Queues}
		for _, fd := range l.fds() {
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				return nil, fmt.Errorf("translator fd %d: not an open descriptor of this process: %w", fd, err)
			}
		}
		if err := probeFDLink(l, t.FD, t.LinkPos); err != nil {
			return nil, err
		}
		if t.FD.Ethernet {
			mac := t.FD.MAC
			if mac == [6]byte{} {
				mac = stack.TapMAC(t.Prefix, t.FD.FD)
			}
			l.tap = &stack.TapConfig{FD: t.FD.FD, MTU: t.FD.MTU, VnetHdr: l.vnetHdr, MAC: mac, IPv4Gateway: t.FD.IPv4Gateway, IPv6Gateway: t.FD.IPv6Gateway}
		}
		return l, nil
	case config.LinkNIC:
		q := t.NIC.Queues
		if q == 0 {
			q = runtime.NumCPU()
		}
		// MTUs a configuration leaves unset are the NICs', followed
		// (also after a reload that unsets one; a set one stays).
		// SteerPrefix: a flow's two directions on one queue loop.
		return &nicLink{cfg: stack.NICConfig{IPv4: t.NIC.IPv4, IPv6: t.NIC.IPv6, Queues: q, SteerPrefix: t.Prefix,
			FollowIPv4MTU: true, FollowIPv6MTU: true}}, nil
	}
	return nil, fmt.Errorf("unknown link mode %q", t.Link)
}

var systemEnv = env{
	kernel: func() (netsetup.Kernel, func() error, error) {
		nl, err := netsetup.Open()
		if err != nil {
			return nil, nil, err
		}
		return nl, nl.Close, nil
	},
	openTun:  func(c tun.Config) (device, error) { return tun.Open(c) },
	openLink: openLink,
	watch:    func(ownPort uint32) (watcher, error) { return netsetup.Watch(ownPort, PolicyTable) },
	serve: func(ctx context.Context, eng *xlat.Engine, dev device, log *slog.Logger) (datapath, error) {
		switch l := dev.(type) {
		case *fdLink:
			if l.tap != nil {
				return stack.ServeTap(ctx, eng, *l.tap, log)
			}
			return stack.ServeFDQueues(ctx, eng, l.fds(), l.mtu, l.vnetHdr, log)
		case *nicLink:
			return stack.ServeNIC(ctx, eng, l.cfg, log)
		}
		return stack.ServeTun(ctx, eng, dev.(*tun.Device), log)
	},
	dropPrivileges: dropPrivileges,
	heldCap:        heldCap,
}

// xlatConfig is cfg's engine configuration. In NIC mode nothing else
// stands between the translator and the NICs (the kernel does not
// forward): the engine decrements TTL and Hop Limit itself, and unless
// ipv4_mtu and ipv6_mtu say otherwise they are the NICs' MTUs, so that the
// engine answers packets too big for them (RFC 7915 sections 4 and 5):
// they stay unset here, and ServeNIC fills them in (and follows the NICs)
// in every configuration the engine is given, this one and each reload's
// (stack.NICConfig.FollowIPv4MTU). Learnt MTUs leave the TCP MSS clamp as
// the file set it (off without an MTU in the file): RFC 7915 changes no
// TCP option, and every link mode translates the same SYN the same way.
func xlatConfig(cfg *config.Config) (*xlat.Config, error) {
	xc, err := cfg.Xlat()
	if err != nil {
		return nil, err
	}
	if t := cfg.Translator; t.Link == config.LinkNIC || t.Link == config.LinkFD && t.FD.Ethernet {
		// No kernel forwards before or after the translator: it is the
		// router whose hop the TTL counts (RFC 7915 sections 4.1, 5.1).
		xc.Policy.DecrementTTL = true
	}
	if t := cfg.Translator; t.Link == config.LinkFD && t.FD.Ethernet {
		// Both sides are the tap's segment: unless configured, its
		// MTU is each side's, so that the engine answers packets too
		// big for it (RFC 7915 sections 4 and 5).
		if xc.Policy.IPv4MTU == 0 {
			xc.Policy.IPv4MTU = t.FD.MTU
		}
		if xc.Policy.IPv6MTU == 0 {
			xc.Policy.IPv6MTU = t.FD.MTU
		}
	}
	return xc, nil
}

// Run runs the translator until ctx is done, then removes what it
// installed and returns nil. It returns an error if the configuration is
// invalid, if setting up fails (after undoing what it did), or if the data
// path fails.
func Run(ctx context.Context, opts Options) error {
	return run(ctx, opts, systemEnv)
}

// daemon is one running translator.
type daemon struct {
	opts    Options
	env     env
	log     *slog.Logger
	started time.Time
	runAs   config.RunAs // the identity asked for (run_as, or the command line's)
	id      identity     // runAs resolved

	eng     *xlat.Engine
	dev     device
	dp      datapath
	kernel  netsetup.Kernel
	tracker *netsetup.Tracker
	repair  repairState   // run loop only
	host    hostAddrState // run loop only
	changes *changeQueue  // kernel events for the run loop (watchKernel)
	repairs repairCounts
	// ctlClosed counts the control connections the control server
	// closed on its own (controlServer.closed).
	ctlClosed controlClosed

	mu sync.Mutex // guards what reload changes and stats reads
	// cfg is the file last loaded, with running's restart-only settings
	// in place of any it changed (applicable): its mappings, routes and
	// announcers are in use.
	cfg *config.Config
	// running is the configuration whose restart-only settings
	// (restartOnlySettings) are in effect: the one started with, or a
	// later one that left them as they were. Reloads compare against it,
	// so that a setting changed and changed back is not reported as pending.
	running *config.Config
	plan    plan
	// healthy is the translator's health (checkHealth): read without
	// d.mu, so that /healthz answers while a reload or restore holds it.
	healthy atomic.Bool
	anns    []runningAnnouncer
	// annFaults are the kinds of announcer the last reload could not
	// build with the file's settings, with why (reloadAnnouncers): shown
	// in their status in Stats until a reload builds them (Stats.Healthy
	// stays the translator's: it forwards all the same).
	annFaults map[string]string
	reloads   metrics.Reloads
	metrics   string     // bound address of the metrics listener
	reloadMu  sync.Mutex // one reload at a time
}

// run starts the translator step by step, serves until ctx is done or the
// data path fails, and undoes every step, newest first, on the way out,
// whether it fails half-way or stops normally.
func run(ctx context.Context, opts Options, e env) error {
	d, err := newDaemon(ctx, opts.withDefaults(), e)
	if err != nil {
		return err
	}
	var u undoStack
	defer u.run()
	if err := d.setUpKernel(&u); err != nil {
		return err
	}
	setupStart := time.Now()
	dpDone, err := d.startDatapath(&u)
	if err != nil {
		return err
	}
	changes, err := d.watchKernel(&u)
	if err != nil {
		return err
	}
	d.changes = changes
	// Subscribed first, so no change is missed; before the routes into
	// the tun go in, so nothing reaches the host's addresses through it.
	if err := d.refreshHostAddrs(); err != nil {
		return err
	}
	d.mu.Lock()
	d.plan = makePlan(d.cfg, d.dev.Name())
	d.mu.Unlock()
	if err := d.applyPlan(d.plan); err != nil {
		return err
	}
	d.log.Info("translator set up", "tun", d.dev.Name(), "offloads", d.dev.Offloads(), "mappings", entryCount(d.cfg),
		"routes", d.tracker.RouteCount(), "took_ms", time.Since(setupStart).Milliseconds())
	d.warnUnguardedSides(d.cfg)
	d.reportForeign()
	if err := d.startMetrics(&u); err != nil {
		return err
	}
	reloadReq := make(chan chan reloadReply)
	cs, err := listenControl(d.opts.ControlSocket, d.opts.ControlGroup, d, reloadReq, d.log)
	if err != nil {
		return err
	}
	u.add(func() { _ = cs.Close() })
	if err := d.startAnnouncing(ctx, &u); err != nil {
		return err
	}
	if err := d.giveUpPrivileges(); err != nil {
		return err
	}
	// The load's garbage (the mappings file's bytes, the table builder's
	// scratch) is not returned to the system here with debug.FreeOSMemory:
	// it would halve a 1M-mapping daemon's resident memory, but the
	// allocations that follow then fault released pages back in, 1-3 a
	// second against 0.1-0.3 without it (docs/benchmarks.md, "Sparse
	// pings with the 1M table"); resident memory the daemon does not
	// touch costs it nothing measurable.
	d.ready()
	return d.serve(ctx, dpDone, reloadReq, changes)
}

// undoStack holds what undoes each set-up step; run calls them newest
// first.
type undoStack []func()

func (u *undoStack) add(f func()) { *u = append(*u, f) }

// run has a pointer receiver so that `defer u.run()` sees the steps
// added after the defer statement.
func (u *undoStack) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
}

// newDaemon loads the configuration (given up when ctx ends), opens the
// log, resolves the run_as identity and builds the engine; nothing in the
// kernel is touched yet.
func newDaemon(ctx context.Context, opts Options, e env) (*daemon, error) {
	cfg, err := loadConfig(ctx, opts)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		if log, err = NewLogger(os.Stderr, cfg.Log.Level, cfg.Log.Format); err != nil {
			return nil, err
		}
	}
	for _, w := range cfg.Warnings {
		log.Warn(config.FormatDiagnostic(w))
	}
	runAs := cfg.RunAs
	if opts.User != "" {
		runAs.User = opts.User
	}
	if opts.Group != "" {
		runAs.Group = opts.Group
	}
	id, err := resolveIdentity(runAs)
	if err != nil {
		return nil, err
	}
	xc, err := xlatConfig(cfg)
	if err != nil {
		return nil, err
	}
	eng, err := xlat.NewEngine(xc)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	cfg = withoutEntries(cfg)
	return &daemon{opts: opts, env: e, log: log, started: time.Now(), eng: eng, cfg: cfg, running: cfg,
		runAs: runAs, id: id, repair: repairState{down: map[string]bool{}}, host: hostAddrState{file: xc, stale: true}}, nil
}

// withoutEntries returns cfg without Translator.Mappings, the parsed RFC
// 7757 entries, once cfg's snapshot holds the table built from them (the
// table yields them again: Table.All, Config.WriteMappings). The daemon
// keeps a configuration for as long as it runs; the entries are 64 bytes
// each and hold pointers (netip.Addr's zone), so at 1M mappings they were
// 61 MiB of heap that every collection scanned: the one the runtime
// forces every 2 minutes took 100 ms of CPU instead of 7. cfg itself is
// left as it is: a Config is immutable once parsed.
func withoutEntries(cfg *config.Config) *config.Config {
	if cfg.Snapshot() == nil || cfg.Translator.Mappings == nil {
		return cfg
	}
	c := *cfg
	c.Translator.Mappings = nil
	return &c
}

// entryCount is the number of RFC 7757 entries of cfg, whether or not
// withoutEntries dropped their list.
func entryCount(cfg *config.Config) int {
	if s := cfg.Snapshot(); s != nil {
		return s.Table().Len()
	}
	return len(cfg.Translator.Mappings)
}

// setUpKernel takes the namespace's instance lock, opens the kernel
// (netlink) and sets forwarding as the link mode needs it.
func (d *daemon) setUpKernel(u *undoStack) error {
	// One translator per network namespace, decided before anything in
	// the kernel is touched: a second one would attach to the first one's
	// tun, replace its routes and delete them when it exits.
	lock, err := lockInstance(d.opts.LockDir)
	if err != nil {
		return err
	}
	u.add(lock.release)

	k, closeKernel, err := d.env.kernel()
	if err != nil {
		return err
	}
	u.add(func() { _ = closeKernel() })
	d.kernel = k
	d.tracker = netsetup.NewTracker(k)
	u.add(func() {
		if err := d.tracker.Teardown(); err != nil {
			d.log.Error("removing what the translator installed", "err", err)
		}
	})
	// Host mode: the kernel forwards into and out of the tun. NIC mode:
	// the kernel must not forward what the translator reads off the NICs
	// (it sees a copy of every frame). fd mode: whoever handed the
	// descriptor over routes.
	forwarding := forwardingSysctl(d.cfg.Translator.Link)
	if forwarding != "" {
		for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if err := d.tracker.Sysctl(key, forwarding); err != nil {
				return err
			}
		}
	}
	return nil
}

// procsForQueues is the GOMAXPROCS for a data path of queues queues (tun
// queues in host mode, packet sockets in NIC mode; 0: one per CPU) on cpus
// CPUs: one P per CPU as usual, plus one per queue, because a queue's loop
// keeps its P while it waits for the next packet (tun.RawPoll), and the
// rest of the daemon (BGP, metrics, the garbage collector's workers)
// should not have to wait for a preemption to run. 0 (leave it) when
// $GOMAXPROCS (env) is set.
func procsForQueues(cpus, queues int, env string) int {
	if env != "" {
		return 0
	}
	if queues <= 0 {
		queues = cpus
	}
	return cpus + queues
}

// setProcs sets GOMAXPROCS for a data path of queues queues
// (procsForQueues).
func setProcs(queues int) {
	if n := procsForQueues(runtime.NumCPU(), queues, os.Getenv("GOMAXPROCS")); n > 0 {
		runtime.GOMAXPROCS(n)
	}
}

// tunLoopQueues is how many queues of the inherited link dev run host
// mode's queue loop, which keeps a P while it waits (procsForQueues): the
// descriptors of a tun (stack.ServeFDQueues); 0 for a tap or sockets,
// whose loops block in poll.
func tunLoopQueues(dev device) int {
	if l, ok := dev.(*fdLink); ok && l.tun && l.tap == nil {
		return len(l.fds())
	}
	return 0
}

// startDatapath opens the link (the tun, an inherited fd or the NICs) and
// starts the data path on it. The channel it returns gets the data path's
// end (nil or why it failed).
func (d *daemon) startDatapath(u *undoStack) (chan error, error) {
	var dev device
	var err error
	if t := d.cfg.Translator.Tun; d.cfg.Translator.Link == config.LinkTun {
		// SteerPrefix: both directions of a flow on one queue (a reply is
		// then read by the thread that wrote the request, without a wake-up).
		dev, err = d.env.openTun(tun.Config{Name: t.Name, Queues: t.Queues, MTU: t.MTU, Offload: t.Offload,
			SteerPrefix: d.cfg.Translator.Prefix})
		setProcs(t.Queues)
		if s, ok := dev.(interface{ SteeringErr() error }); ok && err == nil && s.SteeringErr() != nil {
			d.log.Warn("tun queues chosen by the kernel: replies may wake a second queue's thread", "err", s.SteeringErr())
		}
	} else {
		dev, err = d.env.openLink(d.cfg.Translator)
		// An inherited tun's descriptors run host mode's loop
		// (tunLoopQueues), and get a P each as the tun's queues do; so do
		// NIC mode's queue loops, which keep their P while they wait
		// (nicRawWait).
		if q := tunLoopQueues(dev); err == nil && q > 0 {
			setProcs(q)
		}
		if l, ok := dev.(*nicLink); ok && err == nil {
			setProcs(l.queues())
		}
	}
	if err != nil {
		return nil, err
	}
	d.dev = dev
	u.add(func() { _ = dev.Close() })

	dpCtx, stopDatapath := context.WithCancel(context.Background())
	dp, err := d.env.serve(dpCtx, d.eng, dev, d.log)
	if err != nil {
		stopDatapath()
		return nil, err
	}
	d.dp = dp
	setDropLog(dp, d.cfg.Log)
	setMappingCounters(dp, d.cfg.Translator, d.eng.Config().Map.Table())
	dpDone := make(chan error, 1)
	go func() { dpDone <- dp.Wait() }()
	u.add(func() {
		stopDatapath()
		_ = dev.Close()
		if err := <-dpDone; err != nil {
			d.log.Error("data path", "err", err)
		}
	})
	return dpDone, nil
}

// kernelPort is the netlink port of the kernel's route socket
// (netsetup.Netlink.PortID), 0 for another Kernel.
func (d *daemon) kernelPort() uint32 {
	if n, ok := d.kernel.(interface{ PortID() uint32 }); ok {
		return n.PortID()
	}
	return 0
}

// watchKernel subscribes to link, address and route changes. It runs
// before the routes go in, so that nothing the kernel removes after they
// are installed goes unnoticed.
func (d *daemon) watchKernel(u *undoStack) (*changeQueue, error) {
	w, err := d.env.watch(d.kernelPort())
	if err != nil {
		return nil, fmt.Errorf("watching links and routes: %w", err)
	}
	k := &kernelWatch{w: w, stop: make(chan struct{})}
	changes := newChangeQueue()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		d.followKernel(k, changes)
	}()
	u.add(func() { k.close(); <-watchDone })
	return changes, nil
}

// kernelWatch is the netlink subscription in use, which followKernel
// replaces when it fails, and the stop that ends it.
type kernelWatch struct {
	mu      sync.Mutex
	w       watcher
	stopped bool
	stop    chan struct{}
}

// close ends the subscription and followKernel.
func (k *kernelWatch) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped {
		k.stopped = true
		close(k.stop)
		_ = k.w.Close()
	}
}

// followKernel hands the subscription's changes to the run loop until
// close. A subscription that fails (a read error other than the kernel's
// dropped events, which come as Lost) is replaced, with the restore's
// backoff: meanwhile the run loop is told to read the host's addresses
// again at every attempt (the health poll reads the links itself), and
// once subscribed again that events were lost, so that everything missed
// is put back.
func (d *daemon) followKernel(k *kernelWatch, changes *changeQueue) {
	var buf []netsetup.Change
	k.mu.Lock()
	w := k.w
	k.mu.Unlock()
	for {
		cs, err := w.Read(buf[:0])
		if err == nil {
			changes.push(cs)
			buf = cs
			continue
		}
		k.mu.Lock()
		stopped := k.stopped
		k.mu.Unlock()
		if stopped {
			return
		}
		d.log.Warn("the netlink subscription failed: subscribing again; meanwhile links and host addresses are polled", "err", err)
		_ = w.Close()
		if w = d.resubscribe(k, changes); w == nil {
			return
		}
		d.log.Info("netlink subscription restored")
		changes.push([]netsetup.Change{{Lost: true}})
	}
}

// resubscribe subscribes again until it works (the new watcher, made
// k's) or k is closed (nil), with a pause from HealthInterval doubling up
// to maxRestoreBackoff.
func (d *daemon) resubscribe(k *kernelWatch, changes *changeQueue) watcher {
	var pause time.Duration
	for {
		changes.push([]netsetup.Change{{Addrs: true}})
		pause = min(max(2*pause, d.opts.HealthInterval), maxRestoreBackoff)
		select {
		case <-k.stop:
			return nil
		case <-time.After(pause):
		}
		w, err := d.env.watch(d.kernelPort())
		if err != nil {
			d.log.Debug("subscribing to netlink again", "err", err)
			continue
		}
		k.mu.Lock()
		if k.stopped {
			k.mu.Unlock()
			_ = w.Close()
			return nil
		}
		k.w = w
		k.mu.Unlock()
		return w
	}
}

// startMetrics serves the metrics block's listener, if there is one.
func (d *daemon) startMetrics(u *undoStack) error {
	listen := d.cfg.Metrics.Listen
	if listen == "" {
		return nil
	}
	ms, err := metrics.Listen(listen, d.Stats, d.healthy.Load, d.log, metrics.NewMappingCollector(d.metricsTopMappings))
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", listen, err)
	}
	u.add(func() { _ = ms.Close() })
	d.mu.Lock() // a scrape may already be running
	d.metrics = ms.Addr().String()
	d.mu.Unlock()
	d.log.Info("metrics", "listen", ms.Addr().String())
	return nil
}

// startAnnouncing takes the first health reading and starts the
// announcers (BGP, router advertisements), which announce the prefixes
// while the translator is healthy. On the way out they withdraw, and the
// translator keeps translating for opts.WithdrawDrain while that spreads.
func (d *daemon) startAnnouncing(ctx context.Context, u *undoStack) error {
	d.pollLinks()
	healthy := d.liveness() == nil
	anns, err := startAnnouncers(ctx, d.opts.Announcers, d.cfg, d.log)
	if err != nil {
		return err
	}
	d.healthy.Store(healthy)
	d.mu.Lock() // stats requests may already be running
	d.anns = anns
	d.mu.Unlock()
	// Announcers close before the routes go (undone newest first).
	u.add(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.mu.Lock()
		as := d.anns
		d.anns = nil
		d.mu.Unlock()
		closeAnnouncers(cctx, as, d.log)
		if len(as) > 0 {
			// Keep translating while the withdrawal spreads: routers
			// and servers still send through this translator until they
			// have processed it. Tearing the tun down at once lost
			// packets in the failover experiment.
			time.Sleep(d.opts.WithdrawDrain)
		}
	})
	d.announce(ctx)
	return nil
}

// giveUpPrivileges runs once everything is set up: from then on the
// translator needs only what reloads, restores and the stop do
// (keptCaps), and none of root's other powers.
func (d *daemon) giveUpPrivileges() error {
	if d.opts.KeepPrivileges && d.id.set {
		d.log.Warn("run_as ignored: this process keeps its privileges", "user", d.runAs.User)
	}
	if d.env.dropPrivileges == nil || d.opts.KeepPrivileges {
		return nil
	}
	keep := keptCaps(d.cfg, d.env.heldCap)
	if err := d.env.dropPrivileges(d.id, keep); err != nil {
		if d.id.set || !errors.Is(err, errCgoThreads) {
			return fmt.Errorf("dropping privileges: %w", err)
		}
		d.log.Warn("running with every capability it was started with", "err", err)
		return nil
	}
	d.log.Info("privileges dropped", "uid", os.Getuid(), "gid", os.Getgid(), "capabilities", capNames(keep))
	return nil
}

// ready says so in the log and to opts.OnReady.
func (d *daemon) ready() {
	cfg, name := d.cfg, d.dev.Name()
	d.log.Info("ready", "version", d.opts.Version, "digest", cfg.Digest, "mappings", entryCount(cfg), "tun", name)
	if d.opts.OnReady == nil {
		return
	}
	var foreign []string
	for _, r := range d.tracker.Foreign() {
		foreign = append(foreign, r.String())
	}
	d.opts.OnReady(ReadyInfo{Version: d.opts.Version, Digest: cfg.Digest, Mappings: entryCount(cfg), Tun: name,
		PreexistingRoutes: foreign})
}

// serve is the run loop: reloads, kernel changes and health checks,
// periodic drop logs, until ctx is done (nil) or the data path ends (its
// error).
func (d *daemon) serve(ctx context.Context, dpDone chan error, reloadReq <-chan chan reloadReply, changes *changeQueue) error {
	opts := d.opts
	health := time.NewTicker(opts.HealthInterval)
	defer health.Stop()
	drops := time.NewTicker(opts.DropLogInterval)
	defer drops.Stop()
	var lastDrops xlat.Totals
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping")
			// Unhealthy from now on: /healthz and the gauge say so
			// while the announcers withdraw and the drain runs.
			d.healthy.Store(false)
			return nil
		case err := <-dpDone:
			dpDone <- err // for the data path's undo step
			// Nothing forwards any more: unhealthy for /healthz and
			// the gauge during the withdrawal, and for the watchdog.
			d.healthy.Store(false)
			if opts.OnHealth != nil {
				opts.OnHealth(false)
			}
			if err == nil {
				err = errors.New("stopped")
			}
			return fmt.Errorf("data path: %w", err)
		case <-opts.Reload:
			opts.reloading(true)
			_, _ = d.reload(ctx)
			opts.reloading(false)
		case reply := <-reloadReq:
			opts.reloading(true)
			res, err := d.reload(ctx)
			opts.reloading(false)
			reply <- reloadReply{res, err}
		case <-changes.ready:
			d.noteChanges(changes.take())
			d.keepHostAddrs()
			d.restore()
			d.checkHealth(func() { d.announce(ctx) })
		case <-health.C:
			d.pollLinks()
			d.pollRules()
			d.pollSysctls()
			d.keepHostAddrs()
			d.restore()
			d.checkHealth(func() { d.announce(ctx) })
		case <-drops.C:
			lastDrops = d.logDrops(lastDrops)
		}
	}
}

// warnUnguardedSides warns when cfg names no interface of a side
// (unguardedSides): the tun then takes the other family from it, and a
// neighbour there can have packets translated from addresses it does not
// own (a mapped server's, as IPv4 from its public address).
func (d *daemon) warnUnguardedSides(cfg *config.Config) {
	if s := unguardedSides(cfg); len(s) > 0 {
		v4, v6 := cfg.Sides()
		d.log.Warn("the translator accepts "+strings.Join(s, " and ")+": no interface is known to face only one side; name them in tun { ipv4_interfaces, ipv6_interfaces } or give interface blocks addresses of one family",
			"ipv4_side", v4, "ipv6_side", v6)
	}
}

// forwardingFeatures are the netdev features an appliance NIC gets for
// forwarding: GRO (which NIC drivers turn on by default, veths and some
// virtual NICs do not) merges a TCP stream's segments into super-packets,
// and UDP GRO forwarding (off by default) merges a forwarded UDP flow's
// datagrams into UDP super-packets (USO). The translator takes both from
// its tun (TUN_F_TSO4/6, TUN_F_USO4/6) or its AF_PACKET sockets (virtio
// net headers) and translates each in one go; the kernel segments again on
// the way out.
var forwardingFeatures = map[string]bool{netsetup.FeatureGRO: true, netsetup.FeatureUDPGROForwarding: true}

// applyPlan brings links, addresses and routes to what p asks for.
// Addresses go first so that gateways of route blocks are reachable.
func (d *daemon) applyPlan(p plan) error {
	var errs []error
	d.repair.setUp = map[string]bool{}
	for _, ifc := range p.links {
		if err := d.tracker.Link(ifc.Name, ifc.MTU, false); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.Name, err))
			continue
		}
		d.repair.setUp[ifc.Name] = true
		// A NIC that cannot merge still forwards, packet by packet.
		if err := d.tracker.Features(ifc.Name, forwardingFeatures); err != nil {
			d.log.Warn("interface left without GRO forwarding", "interface", ifc.Name, "err", err)
		}
	}
	if err := d.tracker.SyncAddrs(p.addrs); err != nil {
		errs = append(errs, err)
	}
	added, removed, err := d.tracker.SyncRoutes(p.routes)
	if err != nil {
		errs = append(errs, err)
	}
	if added > 0 || removed > 0 {
		d.log.Debug("routes", "added", added, "removed", removed)
	}
	// Rules after the routes: once they are in, the policy table is
	// complete.
	if err := d.tracker.SyncRules(p.rules); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// reportForeign logs the wanted routes that the kernel already had from
// someone else: they are left as they are (and so may send the traffic
// elsewhere) and never deleted.
func (d *daemon) reportForeign() {
	fs := d.tracker.Foreign()
	for i, r := range fs {
		if i == 20 {
			d.log.Warn("more routes already present", "count", len(fs)-i)
			break
		}
		d.log.Warn("route already present in the kernel: left as it is, not replaced and not removed at stop", "route", r.String())
	}
}

// announce sends the current announcement to every announcer.
func (d *daemon) announce(ctx context.Context) {
	d.mu.Lock()
	a := d.plan.ann
	a.Healthy = d.healthy.Load()
	as := d.anns
	d.mu.Unlock()
	for _, r := range as {
		if err := r.a.Update(ctx, a); err != nil {
			d.log.Warn("announcer update", "announcer", r.name, "err", err)
		}
	}
}

// ReloadResult says what a successful reload changed.
type ReloadResult struct {
	// Digest is that of the configuration running: the file just loaded
	// unless some of its settings wait for a restart. Then it stays the
	// digest of the file those settings come from, and PendingDigest is
	// the loaded file's (whose mappings, routes and announcers are in use
	// already, and which runs in full from the next start).
	Digest        string   `json:"digest"`
	PendingDigest string   `json:"pending_digest,omitempty"`
	Mappings      int      `json:"mappings"`
	RoutesAdded   int      `json:"routes_added"`
	RoutesRemoved int      `json:"routes_removed"`
	NeedsRestart  []string `json:"needs_restart,omitempty"` // settings that differ from the running ones and take effect only at the next start
	Unchanged     bool     `json:"unchanged"`
	// InUse: the loaded file is in use (its mappings, routes and
	// announcers) even when the reload answers an error: then part of
	// it has not taken effect yet (a route the kernel refused, an
	// announcer that could not start), which the error names.
	InUse          bool  `json:"in_use,omitempty"`
	DurationMillis int64 `json:"duration_ms"`
}

// digests returns the running and the pending configuration digest.
func digests(running, loaded *config.Config) (digest, pending string) {
	if running.Digest == loaded.Digest {
		return running.Digest, ""
	}
	return running.Digest, loaded.Digest
}

// reload loads the configuration file again and switches to it. On any
// error before the engine swap the running configuration is untouched.
func (d *daemon) reload(ctx context.Context) (ReloadResult, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	start := time.Now()
	res, err := d.doReload(ctx)
	res.DurationMillis = time.Since(start).Milliseconds()
	d.mu.Lock()
	if err != nil {
		d.reloads.Failed++
		d.reloads.LastError = err.Error()
	} else {
		d.reloads.OK++
		d.reloads.Last = time.Now()
		d.reloads.LastError = ""
	}
	d.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		d.log.Info("reload abandoned: stopping", "file", d.opts.ConfigPath)
	} else if err != nil && res.InUse {
		d.log.Error("reloaded, but part of the configuration has not taken effect", "file", d.opts.ConfigPath, "digest", res.Digest, "err", err)
	} else if err != nil {
		d.log.Error("reload refused; the running configuration stays", "file", d.opts.ConfigPath, "err", err)
	} else {
		d.log.Info("reloaded", "digest", res.Digest, "pending_digest", res.PendingDigest, "mappings", res.Mappings, "routes_added", res.RoutesAdded,
			"routes_removed", res.RoutesRemoved, "took_ms", res.DurationMillis)
		for _, s := range res.NeedsRestart {
			d.log.Warn("changed setting takes effect at the next start", "setting", s)
		}
	}
	// A refused file may have cost a lot of transient memory (the HCL
	// parser allocates up to ~1 KiB per byte of hostile input); a good
	// one leaves the old table behind. Return it to the system now,
	// once the outcome is recorded; not when stopping (an abandoned load
	// is still running, and a full collection would delay the stop).
	if ctx.Err() == nil {
		debug.FreeOSMemory()
	}
	return res, err
}

func (d *daemon) doReload(ctx context.Context) (ReloadResult, error) {
	cfg, err := d.loadChecking(ctx)
	if err != nil {
		return ReloadResult{}, err
	}
	for _, w := range cfg.Warnings {
		d.log.Warn(config.FormatDiagnostic(w))
	}
	d.mu.Lock()
	old, running := d.cfg, d.running
	d.mu.Unlock()
	cfg, needsRestart := applicable(running, cfg)
	res := ReloadResult{Mappings: entryCount(cfg), NeedsRestart: needsRestart}
	if cfg.Digest == old.Digest {
		res.Unchanged, res.InUse = true, true
		res.Digest, res.PendingDigest = digests(running, old)
		return res, d.retryRefused(ctx)
	}
	xc, err := xlatConfig(cfg)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err // stopping: keep what runs, the cleanup removes it
	}
	if err := d.eng.Reload(d.withHostAddrs(xc)); err != nil {
		return res, fmt.Errorf("engine: %w", err)
	}
	d.host.file = xc
	cfg = withoutEntries(cfg)
	setDropLog(d.dp, cfg.Log)
	setMappingCounters(d.dp, cfg.Translator, xc.Map.Table())
	// The engine translates with the new table from here on: routes to
	// new mappings are added, then routes to removed ones deleted.
	p := makePlan(cfg, d.dev.Name())
	d.warnUnguardedSides(cfg)
	added, removed, kerr := d.syncKernel(p, true)
	if kerr == nil && d.repair.resync {
		// The difference went in, but what the kernel refused before
		// may still be wanted (the tracker counts it as its own): it
		// is put in again, so that the refusal ends only when the
		// kernel holds the whole plan.
		kerr = d.retryRoutes(p.prefixRoutes(), false)
	}
	res.RoutesAdded, res.RoutesRemoved = added, removed
	d.reportForeign()
	var errs []error
	if kerr != nil {
		errs = append(errs, kerr)
	}
	d.mu.Lock()
	d.cfg = cfg
	if len(res.NeedsRestart) == 0 {
		d.running = cfg // every setting of the file is in effect
	}
	res.Digest, res.PendingDigest = digests(d.running, cfg)
	res.InUse = true
	d.plan = p
	d.mu.Unlock()
	d.forgetUnwatched(d.watchedLinks())
	switch {
	case kerr != nil:
		d.kernelRefused(kerr)
	case d.repair.resync:
		// This reload's file is all in: whatever an earlier one had
		// refused is no longer wanted or has gone in now.
		d.kernelTookAll()
	}
	d.checkHealth(func() {}) // announced below, with the new plan
	if _, err := d.reloadAnnouncers(ctx, old, cfg); err != nil {
		errs = append(errs, err)
	}
	d.announce(ctx)
	if len(errs) > 0 {
		return res, fmt.Errorf("new configuration in use, but: %w", errors.Join(errs...))
	}
	return res, nil
}

// retryRefused is a reload of the file in use: what the kernel refused
// of it is tried again at once, instead of at the end of the backoff, and
// the answer says whether it still refuses.
func (d *daemon) retryRefused(ctx context.Context) error {
	var errs []error
	if d.repair.resync {
		d.repair.retryAt = time.Time{}
		d.restore()
		d.checkHealth(func() { d.announce(ctx) })
		if d.repair.resync {
			errs = append(errs, d.refusedFault())
		}
	}
	d.mu.Lock()
	cfg, failed := d.cfg, len(d.annFaults) > 0
	d.mu.Unlock()
	if failed {
		restarted, err := d.reloadAnnouncers(ctx, cfg, cfg)
		if restarted {
			d.announce(ctx)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("configuration unchanged, but %w", errors.Join(errs...))
	}
	return nil
}

// syncKernel brings the routes, policy rules, links and addresses to what
// p asks for, by difference, new routes before stale ones go; it returns
// how many routes it added and removed, and every refusal of the kernel.
// reload: p replaces the plan in use, and the routes it added in a batch
// the kernel refused become unsure (repairState.unsure).
func (d *daemon) syncKernel(p plan, reload bool) (added, removed int, err error) {
	var errs []error
	added, removed, err = d.tracker.SyncRoutes(p.routes)
	if err != nil {
		errs = append(errs, err)
	}
	if reload && (err != nil || len(d.repair.unsure) > 0) {
		d.mu.Lock()
		old := d.plan.routes
		d.mu.Unlock()
		d.repair.unsure = unsureRoutes(d.repair.unsure, old, p.routes, err != nil)
	}
	if err := d.tracker.SyncRules(p.rules); err != nil {
		errs = append(errs, err)
	}
	setUp := map[string]bool{}
	for _, ifc := range p.links {
		if err := d.tracker.Link(ifc.Name, ifc.MTU, false); err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", ifc.Name, err))
			if d.repair.setUp[ifc.Name] {
				setUp[ifc.Name] = true // it was forwarding: a link down
			}
			continue
		}
		setUp[ifc.Name] = true
	}
	d.repair.setUp = setUp
	if err := d.tracker.SyncAddrs(p.addrs); err != nil {
		errs = append(errs, err)
	}
	return added, removed, errors.Join(errs...)
}

// setDropLog applies log.drops to a data path that has a drop log
// (*stack.Datapath).
func setDropLog(dp datapath, l config.Log) {
	if dl, ok := dp.(interface{ SetDropLog(perSecond int) }); ok {
		rate := 0
		if l.Drops {
			rate = l.DropsPerSecond
		}
		dl.SetDropLog(rate)
	}
}

// restartOnlySettings are the settings that cannot change while the
// translator runs: the link is open (the tun with its name, queues, MTU
// and offloads; whether its routes and policy rules exist goes with it,
// since forwarding was set for it at start; not its interface sides), the metrics socket bound,
// the logger built, the user switched. It is the one list both the
// reload's answer (NeedsRestart) and what the reload applies are made
// from: a setting listed here keeps its running value until the next
// start, whatever the file now says.
var restartOnlySettings = []struct {
	name string
	same func(running, loaded *config.Config) bool
	keep func(dst, running *config.Config) // sets dst's setting to running's
}{
	{"translator.tun", // its interface sides are policy rules, which a reload changes
		func(r, l *config.Config) bool {
			return reflect.DeepEqual(tunDevice(r.Translator.Tun), tunDevice(l.Translator.Tun))
		},
		func(d, r *config.Config) {
			t := tunDevice(r.Translator.Tun)
			t.IPv4Interfaces, t.IPv6Interfaces = d.Translator.Tun.IPv4Interfaces, d.Translator.Tun.IPv6Interfaces
			d.Translator.Tun = t
		}},
	{"translator link (fd, nic)",
		func(r, l *config.Config) bool {
			return r.Translator.Link == l.Translator.Link && r.Translator.FD == l.Translator.FD && r.Translator.NIC == l.Translator.NIC
		},
		func(d, r *config.Config) {
			d.Translator.Link, d.Translator.FD, d.Translator.NIC, d.Translator.LinkPos =
				r.Translator.Link, r.Translator.FD, r.Translator.NIC, r.Translator.LinkPos
		}},
	{"metrics.listen", // mapping_top changes at once
		func(r, l *config.Config) bool { return r.Metrics.Listen == l.Metrics.Listen },
		func(d, r *config.Config) { d.Metrics.Listen = r.Metrics.Listen }},
	{"log", // log.drops and drops_per_second change at once
		func(r, l *config.Config) bool { return r.Log.Level == l.Log.Level && r.Log.Format == l.Log.Format },
		func(d, r *config.Config) { d.Log.Level, d.Log.Format = r.Log.Level, r.Log.Format }},
	{"run_as",
		func(r, l *config.Config) bool { return r.RunAs == l.RunAs },
		func(d, r *config.Config) { d.RunAs = r.RunAs }},
}

// applicable is what a reload of loaded can put in effect while running
// runs: loaded with every restart-only setting that differs kept as
// running has it, and the names of those settings. Nothing a reload
// builds (the engine configuration, the kernel plan, the announcers)
// may act on a setting that has not taken effect: a tun whose routes
// and policy rules went while forwarding stays on would black-hole the
// prefixes and let the host route untranslated traffic natively. The
// result keeps loaded's Digest (the file's; the pending one).
func applicable(running, loaded *config.Config) (*config.Config, []string) {
	var names []string
	c := loaded
	for _, set := range restartOnlySettings {
		if set.same(running, loaded) {
			continue
		}
		if c == loaded {
			cp := *loaded
			c = &cp
		}
		set.keep(c, running)
		names = append(names, set.name)
	}
	return c, names
}

// tunDevice is t without what a reload can change (the interface sides).
func tunDevice(t config.Tun) config.Tun {
	t.IPv4Interfaces, t.IPv6Interfaces = nil, nil
	return t
}

// Stats is a snapshot of the running translator (metrics and `map646
// stats`). Safe for concurrent use. The announcers' statuses are asked
// for without d.mu held: a BGP speaker's waits on GoBGP's loop, and a
// wait there under d.mu would stall the run loop's health checks,
// restores and reloads with it.
func (d *daemon) Stats() metrics.Stats {
	d.mu.Lock()
	cfg := d.cfg
	digest, pending := digests(d.running, cfg)
	s := metrics.Stats{
		Version:       d.opts.Version,
		Digest:        digest,
		PendingDigest: pending,
		Config:        cfg.File,
		Started:       d.started,
		Mappings:      entryCount(cfg),
		Tun:           d.dev.Name(),
		Offloads:      d.dev.Offloads(),
		Healthy:       d.healthy.Load(), // forwarding; an announcer's failure shows in Announcer
		Reloads:       d.reloads,
		MetricsListen: d.metrics,
	}
	anns, faults := d.anns, d.annFaults // replaced, never changed in place
	d.mu.Unlock()
	s.Announcer = announcerStatuses(d.opts.Announcers, anns, faults)
	s.Routes = d.tracker.RouteCount()
	s.RoutesPreexisting = d.tracker.ForeignCount()
	d.repairs.visit(func(what string, n uint64) { s.Repairs = append(s.Repairs, metrics.Count{Kind: what, Value: n}) })
	d.ctlClosed.visit(func(why string, n uint64) {
		s.ControlClosed = append(s.ControlClosed, metrics.Count{Kind: why, Value: n})
	})
	t := d.eng.Totals()
	fillTotals(&s, &t)
	ls := d.dp.LinkStats()
	stack.VisitLinkStats(&ls, func(name string, v uint64) {
		s.Link = append(s.Link, metrics.Count{Kind: name, Value: v})
	})
	return s
}

// fillTotals copies the engine's counters into s.
func fillTotals(s *metrics.Stats, t *xlat.Totals) {
	t.Visit(func(metric string, labels [][2]string, v uint64) {
		c := metrics.Count{Value: v}
		for _, l := range labels {
			switch l[0] {
			case "dir":
				c.Dir = l[1]
			default:
				c.Kind = l[1]
			}
		}
		switch metric {
		case "packets":
			s.Packets = append(s.Packets, c)
		case "bytes":
			s.Bytes = append(s.Bytes, c)
		case "drops":
			s.Drops = append(s.Drops, c)
		case "emitted":
			s.Emitted = v
		case "hairpinned":
			s.Hairpinned = v
		case "rate_limited":
			s.RateLimited = v
		}
	})
}

// logDrops writes one line summarising the packets dropped since prev, if
// any, and returns the current totals.
func (d *daemon) logDrops(prev xlat.Totals) xlat.Totals {
	cur := d.eng.Totals()
	var attrs []any
	var total uint64
	for dir := range xlat.NumDirs {
		for r := xlat.ReasonNone + 1; r < xlat.NumReasons; r++ {
			if n := cur.Drops[dir][r] - prev.Drops[dir][r]; n > 0 {
				attrs = append(attrs, dir.String()+"_"+r.String(), n)
				total += n
			}
		}
	}
	if total > 0 {
		d.log.Warn("packets dropped", append([]any{"total", total, "interval", d.opts.DropLogInterval.String()}, attrs...)...)
	}
	return cur
}
