package daemon

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"

	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
	"golang.org/x/sys/unix"
)

// fakeKernel keeps routes, addresses and sysctls like a kernel would and
// logs each call, so tests can see order and content.
type fakeKernel struct {
	mu      sync.Mutex
	log     []string
	routes  map[netsetup.Route]bool
	addrs   map[netsetup.Addr]bool
	sysctls map[string]string
	links   map[string][2]int // mtu, up
	rules   []netsetup.Rule
	failAdd bool // ReplaceRoutes fails (a restore that cannot work)
	// failRule makes AddRule fail (a rule that cannot be put back).
	failRule bool
	failed   int // ReplaceRoutes calls that failed
	// failSysctl makes Sysctl fail to change a value (read-only).
	failSysctl bool
	hostReads  int // HostAddrs calls
	// readSysctlErr, if set, is what reading any sysctl fails with.
	readSysctlErr error
	// holdSysctls are values someone sets again right after every
	// change (an operator's configuration manager), by key.
	holdSysctls map[string]string
	ruleAdds    int // AddRule calls
	// refuse, if set, names routes the kernel will not take (a gateway
	// not on-link): ReplaceRoutes and AddRoutes put in the rest of the
	// batch and fail naming the first refused one.
	refuse func(netsetup.Route) bool
	feats  map[string]map[string]bool
	// ahead are routes of someone else's the kernel prefers to others
	// at their destination (ip route prepend), as ScanRoutes lists them.
	ahead []netsetup.AheadRoute
	// host are addresses of the host's other interfaces (HostAddrs
	// lists them besides those added with ReplaceAddr); hostErr makes
	// HostAddrs fail.
	host    []netip.Prefix
	hostErr error
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{
		routes:  map[netsetup.Route]bool{},
		addrs:   map[netsetup.Addr]bool{},
		sysctls: map[string]string{"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0", "net/ipv4/conf/dmtest0/forwarding": "1"},
		links:   map[string][2]int{"eth0": {1500, 0}, "dmtest0": {1500, 1}},
		feats:   map[string]map[string]bool{"eth0": {netsetup.FeatureGRO: false, netsetup.FeatureUDPGROForwarding: false}},
	}
}

func (k *fakeKernel) record(s string) { k.mu.Lock(); k.log = append(k.log, s); k.mu.Unlock() }
func (k *fakeKernel) Link(name string) (int, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.links[name]
	if !ok {
		return 0, false, fmt.Errorf("no such link %s", name)
	}
	return l[0], l[1] == 1, nil
}
func (k *fakeKernel) SetLink(name string, mtu int, up bool) error {
	k.mu.Lock()
	l := k.links[name]
	if mtu > 0 {
		l[0] = mtu
	}
	l[1] = map[bool]int{true: 1}[up]
	k.links[name] = l
	k.mu.Unlock()
	k.record(fmt.Sprintf("link %s %d %v", name, mtu, up))
	return nil
}
func (k *fakeKernel) ReplaceAddr(dev string, p netip.Prefix) error {
	k.mu.Lock()
	k.addrs[netsetup.Addr{Dev: dev, Prefix: p}] = true
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) HostAddrs() ([]netip.Prefix, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.hostReads++
	if k.hostErr != nil {
		return nil, k.hostErr
	}
	ps := slices.Clone(k.host)
	for a := range k.addrs {
		if a.Prefix.Addr().Is4() {
			ps = append(ps, a.Prefix)
		}
	}
	return ps, nil
}
func (k *fakeKernel) DelAddr(dev string, p netip.Prefix) error {
	k.mu.Lock()
	delete(k.addrs, netsetup.Addr{Dev: dev, Prefix: p})
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) ReplaceRoutes(rs []netsetup.Route) error {
	k.mu.Lock()
	if k.failAdd {
		k.failed++
		k.mu.Unlock()
		return fmt.Errorf("route %v: network is down", rs[0])
	}
	var err error
	for _, r := range rs {
		if k.refuse != nil && k.refuse(r) {
			err = cmp.Or(err, fmt.Errorf("route %v: nexthop has invalid gateway", r))
			continue
		}
		k.routes[r] = true
	}
	k.mu.Unlock()
	k.record(fmt.Sprintf("routes+ %v", rs))
	return err
}
func (k *fakeKernel) AddRoutes(rs []netsetup.Route) ([]netsetup.Route, error) {
	k.mu.Lock()
	var existed []netsetup.Route
	var err error
next:
	for _, r := range rs {
		if k.refuse != nil && k.refuse(r) {
			err = cmp.Or(err, fmt.Errorf("route %v: nexthop has invalid gateway", r))
			continue
		}
		for h := range k.routes {
			if h.Dst == r.Dst && h.Table == r.Table {
				existed = append(existed, r)
				continue next
			}
		}
		k.routes[r] = true
	}
	k.mu.Unlock()
	k.record(fmt.Sprintf("routes+ %v", rs))
	return existed, err
}
func (k *fakeKernel) OwnRules() ([]netsetup.Rule, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.rules), nil
}
func (k *fakeKernel) AddRule(r netsetup.Rule) error {
	k.mu.Lock()
	k.ruleAdds++
	if k.failRule {
		k.mu.Unlock()
		return fmt.Errorf("rule %v: operation not permitted", r)
	}
	if !slices.Contains(k.rules, r) {
		k.rules = append(k.rules, r)
	}
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) DelRule(r netsetup.Rule) error {
	k.mu.Lock()
	k.rules = slices.DeleteFunc(k.rules, func(x netsetup.Rule) bool { return x == r })
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) DelRoutes(rs []netsetup.Route) error {
	k.mu.Lock()
	for _, r := range rs {
		delete(k.routes, r)
	}
	k.mu.Unlock()
	k.record(fmt.Sprintf("routes- %v", rs))
	return nil
}

// ScanRoutes hands over the routes of table as the kernel dumps them,
// those of one destination together: the routes put ahead of others
// (k.ahead), then the daemon's own (of protocol RouteProtocol).
func (k *fakeKernel) ScanRoutes(table int, each func(netsetup.AheadRoute)) error {
	k.mu.Lock()
	rs := slices.Clone(k.ahead)
	for r := range k.routes {
		rs = append(rs, netsetup.AheadRoute{Route: r, Protocol: netsetup.RouteProtocol, Type: 1})
	}
	k.mu.Unlock()
	slices.SortStableFunc(rs, func(a, b netsetup.AheadRoute) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	for _, a := range rs {
		if a.Table == table {
			each(a)
		}
	}
	return nil
}
func (k *fakeKernel) DelRoutesAhead(as []netsetup.AheadRoute) error {
	k.mu.Lock()
	k.ahead = slices.DeleteFunc(k.ahead, func(a netsetup.AheadRoute) bool { return slices.Contains(as, a) })
	k.mu.Unlock()
	k.record(fmt.Sprintf("routes-ahead %v", as))
	return nil
}
func (k *fakeKernel) aheadNow() []netsetup.AheadRoute {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.ahead)
}
func (k *fakeKernel) Sysctl(key, v string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.readSysctlErr != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, k.readSysctlErr)
	}
	old, ok := k.sysctls[key]
	if !ok {
		return "", fmt.Errorf("no sysctl %s: %w", key, fs.ErrNotExist)
	}
	if k.failSysctl && old != v {
		return old, fmt.Errorf("sysctl %s=%s: %w", key, v, unix.EPERM)
	}
	k.sysctls[key] = v
	if h, ok := k.holdSysctls[key]; ok {
		k.sysctls[key] = h
	}
	return old, nil
}
func (k *fakeKernel) Features(dev string, names []string) (map[string]bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	have, ok := k.feats[dev]
	if !ok {
		return nil, fmt.Errorf("no such link %s", dev)
	}
	res := map[string]bool{}
	for _, n := range names {
		if v, ok := have[n]; ok {
			res[n] = v
		}
	}
	return res, nil
}
func (k *fakeKernel) SetFeatures(dev string, want map[string]bool) error {
	k.mu.Lock()
	for n, v := range want {
		k.feats[dev][n] = v
	}
	k.mu.Unlock()
	return nil
}
func (k *fakeKernel) feature(dev, name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.feats[dev][name]
}
func (k *fakeKernel) routeSet() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var s []string
	for r := range k.routes {
		s = append(s, r.String())
	}
	slices.Sort(s)
	return s
}

// fakeWatcher hands the daemon the kernel events a test sends.
type fakeWatcher struct {
	events chan []netsetup.Change
	fail   chan error // Read returns the error sent (a netlink socket that failed)
	closed chan struct{}
	once   sync.Once
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{events: make(chan []netsetup.Change), fail: make(chan error), closed: make(chan struct{})}
}
func (w *fakeWatcher) Read(cs []netsetup.Change) ([]netsetup.Change, error) {
	select {
	case e := <-w.events:
		return append(cs, e...), nil
	case err := <-w.fail:
		return cs, err
	case <-w.closed:
		return cs, fmt.Errorf("closed")
	}
}
func (w *fakeWatcher) Close() error { w.once.Do(func() { close(w.closed) }); return nil }

type fakeDevice struct {
	name     string
	closed   atomic.Bool
	closedAt atomic.Pointer[time.Time]
}

func (d *fakeDevice) Name() string     { return d.name }
func (d *fakeDevice) Offloads() string { return "none" }

// fakeSteeringErr is what every fakeDevice's SteeringErr returns.
var fakeSteeringErr error

func (d *fakeDevice) SteeringErr() error { return fakeSteeringErr }
func (d *fakeDevice) Close() error {
	now := time.Now()
	d.closedAt.CompareAndSwap(nil, &now)
	d.closed.Store(true)
	return nil
}

type fakeDatapath struct {
	ctx     context.Context
	healthy atomic.Bool
	checks  atomic.Int64 // calls of Healthy: the daemon's health polls
	fail    chan error
	dropLog atomic.Int64 // the rate last set by SetDropLog; -1 never set
}

func (p *fakeDatapath) SetDropLog(perSecond int) { p.dropLog.Store(int64(perSecond)) }

// The real data path has the drop log setDropLog looks for.
var _ interface{ SetDropLog(perSecond int) } = (*stack.Datapath)(nil)

func (p *fakeDatapath) Wait() error {
	select {
	case <-p.ctx.Done():
		return nil
	case err := <-p.fail:
		return err
	}
}
func (p *fakeDatapath) Healthy() bool {
	p.checks.Add(1)
	return p.healthy.Load()
}
func (p *fakeDatapath) LinkStats() stack.LinkStats {
	return stack.LinkStats{Reads: 7, Panics: 2, NotIP: 1, LinkChatter: 3, DropLogSuppressed: 4}
}

// fakeAnnouncer records what it is told, in order, with the kernel's
// routes at the time of Close.
type fakeAnnouncer struct {
	// statusHold, write-locked by a test, holds Status (and nothing
	// else) as GoBGP's ListPeer holds a BGP speaker's while its loop is
	// stuck.
	statusHold    sync.RWMutex
	mu            sync.Mutex
	updates       []Announcement
	closed        bool
	routesAtClose []string
	closedAt      time.Time
	k             *fakeKernel
}

func (a *fakeAnnouncer) Update(_ context.Context, x Announcement) error {
	a.mu.Lock()
	a.updates = append(a.updates, x)
	a.mu.Unlock()
	return nil
}
func (a *fakeAnnouncer) Status() any {
	a.statusHold.RLock()
	a.statusHold.RUnlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	return fakeAnnouncerStatus{Session: "established", Updates: len(a.updates)}
}

// fakeAnnouncerStatus has series of its own, as the BGP and RA statuses do.
type fakeAnnouncerStatus struct {
	Session string `json:"session"`
	Updates int    `json:"updates"`
}

func (s fakeAnnouncerStatus) Collect(emit metrics.Emit) {
	emit("map646_fake_announcer_established", "1 while the fake session is up.", metrics.Gauge, metrics.Bool(s.Session == "established"))
	emit("map646_fake_announcer_updates_total", "Announcements the fake announcer was given.", metrics.Counter, float64(s.Updates))
}
func (a *fakeAnnouncer) Close(context.Context) error {
	a.mu.Lock()
	a.closed = true
	a.closedAt = time.Now()
	a.routesAtClose = a.k.routeSet()
	a.mu.Unlock()
	return nil
}
func (a *fakeAnnouncer) snapshot() ([]Announcement, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.updates), a.closed
}

// currentAnn is the fake announcer of the test that is running.
var currentAnn atomic.Pointer[fakeAnnouncer]

// fakeKind starts the test's fake announcer when the configuration has a
// bgp block.
var fakeKind = AnnouncerKind{Name: "fake", New: func(cfg *config.Config, _ *slog.Logger) (Announcer, error) {
	if cfg.BGP == nil {
		return nil, nil
	}
	return currentAnn.Load(), nil
}, Settings: func(cfg *config.Config) any { return cfg.BGP }}

// testHealthInterval is the harness's Options.HealthInterval.
const testHealthInterval = 10 * time.Millisecond

const baseConfig = `
translator {
  prefix = "2001:db8:64::/96"
%s
  tun {
    name = "dmtest0"
    queues = 1
  }
}
bgp {
  local_as = 64512
  router_id = "203.0.113.1"
  neighbor "203.0.113.14" { remote_as = 64500 }
}
interface "eth0" {
  addresses = ["203.0.113.1/28"]
  mtu = 1520
}
route {
  to = "192.0.2.0/24"
  via = "203.0.113.14"
}
`

func mappingBlocks(v4s ...string) string {
	var b strings.Builder
	for _, s := range v4s {
		a := netip.MustParseAddr(s).As4()
		fmt.Fprintf(&b, "  mapping {\n    ipv4 = %q\n    ipv6 = \"2001:db8:6::%d\"\n  }\n", s, a[3])
	}
	return b.String()
}

type harness struct {
	t         *testing.T
	k         *fakeKernel
	w         *fakeWatcher
	dev       *fakeDevice
	dp        atomic.Pointer[fakeDatapath]
	eng       atomic.Pointer[xlat.Engine] // the engine handed to the data path
	ann       *fakeAnnouncer
	cfg       string
	sock      string
	lockDir   string
	readyInfo ReadyInfo
	// drops records the calls to dropPrivileges: the identity, the
	// capabilities kept and the routes installed at that moment.
	drops  []droppedPrivileges
	reload chan struct{}
	ready  chan ReadyInfo
	done   chan error
	cancel context.CancelFunc

	hooksMu sync.Mutex
	hooks   []string // OnReload and OnHealth calls, in order

	// watchMu guards resubs (the watchers handed out after the first,
	// h.w) and watchErr (what subscribing again fails with).
	watchMu  sync.Mutex
	resubs   []*fakeWatcher
	watchErr error

	// load, when set, reads the configuration for reloads.
	load atomic.Pointer[func(context.Context, Options) (*config.Config, error)]
}

// subscribe is the harness's env.watch: h.w first, then a new watcher
// per call (unless watchErr).
func (h *harness) subscribe(uint32) (watcher, error) {
	h.watchMu.Lock()
	defer h.watchMu.Unlock()
	select {
	case <-h.w.closed:
	default:
		return h.w, nil
	}
	if h.watchErr != nil {
		return nil, h.watchErr
	}
	w := newFakeWatcher()
	h.resubs = append(h.resubs, w)
	return w, nil
}

func (h *harness) hook(s string) {
	h.hooksMu.Lock()
	h.hooks = append(h.hooks, s)
	h.hooksMu.Unlock()
}

func (h *harness) hookCalls() []string {
	h.hooksMu.Lock()
	defer h.hooksMu.Unlock()
	return slices.Clone(h.hooks)
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, cfgBody string) *harness {
	t.Helper()
	return startWithKernel(t, cfgBody, newFakeKernel())
}

// startWithKernel is start with a kernel that may hold routes already.
func startWithKernel(t *testing.T, cfgBody string, k *fakeKernel) *harness {
	t.Helper()
	return startWith(t, cfgBody, k, func(*Options) {})
}

type droppedPrivileges struct {
	id     identity
	keep   []uintptr
	routes int
}

// startWith is startWithKernel with options changed by opt.
func startWith(t *testing.T, cfgBody string, k *fakeKernel, opt func(*Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{
		t:       t,
		k:       k,
		w:       newFakeWatcher(),
		dev:     &fakeDevice{name: "dmtest0"},
		cfg:     filepath.Join(dir, "map646.hcl"),
		sock:    filepath.Join(dir, "ctl.sock"),
		lockDir: filepath.Join(dir, "lock"),
		reload:  make(chan struct{}),
		ready:   make(chan ReadyInfo, 1),
		done:    make(chan error, 1),
	}
	h.ann = &fakeAnnouncer{k: h.k}
	currentAnn.Store(h.ann)
	writeConfig(t, h.cfg, cfgBody)
	e := env{
		kernel: func() (netsetup.Kernel, func() error, error) { return h.k, func() error { return nil }, nil },
		watch:  h.subscribe,
		openTun: func(c tun.Config) (device, error) {
			if c.Name != "dmtest0" || c.Queues != 1 || c.SteerPrefix != netip.MustParsePrefix("2001:db8:64::/96") {
				return nil, fmt.Errorf("unexpected tun config %+v", c)
			}
			return h.dev, nil
		},
		serve: func(ctx context.Context, eng *xlat.Engine, dev device, log *slog.Logger) (datapath, error) {
			p := &fakeDatapath{ctx: ctx, fail: make(chan error, 1)}
			p.healthy.Store(true)
			p.dropLog.Store(-1)
			h.dp.Store(p)
			h.eng.Store(eng)
			return p, nil
		},
		dropPrivileges: func(id identity, keep []uintptr) error {
			h.drops = append(h.drops, droppedPrivileges{id, keep, len(h.k.routeSet())})
			return nil
		},
		load: func(ctx context.Context, o Options) (*config.Config, error) {
			if f := h.load.Load(); f != nil {
				return (*f)(ctx, o)
			}
			return loadConfig(ctx, o)
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	opts := Options{
		ConfigPath:     h.cfg,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
		Reload:         h.reload,
		ControlSocket:  h.sock,
		LockDir:        h.lockDir,
		OnReady:        func(r ReadyInfo) { h.ready <- r },
		Announcers:     []AnnouncerKind{fakeKind},
		HealthInterval: testHealthInterval,
		OnReload:       func(starting bool) { h.hook(fmt.Sprint("reload ", starting)) },
		OnHealth:       func(healthy bool) { h.hook(fmt.Sprint("health ", healthy)) },
	}
	opt(&opts)
	go func() { h.done <- run(ctx, opts, e) }()
	select {
	case r := <-h.ready:
		h.readyInfo = r
		if r.Tun != "dmtest0" || r.Digest == "" {
			t.Fatalf("ReadyInfo %+v", r)
		}
	case err := <-h.done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready within 10 s")
	}
	return h
}

func (h *harness) stop() error {
	h.cancel()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		h.t.Fatal("Run did not return within 10 s of cancel")
		return nil
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLifecycleInstallsAggregatedRoutesAndRemovesEverything(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.11", "198.51.100.20")))
	want := []string{
		"192.0.2.0/24 via 203.0.113.14",
		"198.51.100.10/31 dev dmtest0 table 646", // .10 and .11 aggregated
		"198.51.100.20/32 dev dmtest0 table 646",
		"2001:db8:64::/96 dev dmtest0 table 646",
	}
	if got := h.k.routeSet(); !slices.Equal(got, want) {
		t.Errorf("routes\n%v\nwant\n%v", got, want)
	}
	if h.k.sysctls["net.ipv4.ip_forward"] != "1" || h.k.sysctls["net.ipv6.conf.all.forwarding"] != "1" {
		t.Errorf("forwarding off: %v", h.k.sysctls)
	}
	if !h.k.addrs[netsetup.Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("203.0.113.1/28")}] {
		t.Errorf("interface address missing: %v", h.k.addrs)
	}
	if l := h.k.links["eth0"]; l != [2]int{1520, 1} {
		t.Errorf("eth0 = %v, want mtu 1520 up", l)
	}
	if !h.k.feature("eth0", netsetup.FeatureGRO) || !h.k.feature("eth0", netsetup.FeatureUDPGROForwarding) {
		t.Errorf("eth0 features %v, want GRO and UDP GRO forwarding on", h.k.feats["eth0"])
	}
	ups, _ := h.ann.snapshot()
	if len(ups) != 1 || !ups[0].Healthy ||
		!slices.Equal(ups[0].IPv4, []netip.Prefix{netip.MustParsePrefix("198.51.100.10/31"), netip.MustParsePrefix("198.51.100.20/32")}) ||
		!slices.Equal(ups[0].IPv6, []netip.Prefix{netip.MustParsePrefix("2001:db8:64::/96")}) {
		t.Errorf("announcements at start: %+v", ups)
	}

	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mappings != 3 || st.Tun != "dmtest0" || !st.Healthy || st.Routes != 4 || len(st.Announcer) != 1 || st.Announcer[0].Name != "fake" {
		t.Errorf("stats %+v", st)
	}
	if len(st.Packets) != int(xlat.NumDirs)*int(xlat.NumProtos) || len(st.Drops) == 0 {
		t.Errorf("stats counters: %d packets, %d drops", len(st.Packets), len(st.Drops))
	}

	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := h.k.routeSet(); len(got) != 0 {
		t.Errorf("routes left after stop: %v", got)
	}
	if len(h.k.addrs) != 0 || h.k.sysctls["net.ipv4.ip_forward"] != "0" || h.k.links["eth0"] != [2]int{1500, 0} ||
		h.k.feature("eth0", netsetup.FeatureGRO) || h.k.feature("eth0", netsetup.FeatureUDPGROForwarding) {
		t.Errorf("left after stop: addrs %v sysctls %v eth0 %v features %v", h.k.addrs, h.k.sysctls, h.k.links["eth0"], h.k.feats["eth0"])
	}
	if !h.dev.closed.Load() {
		t.Error("tun not closed")
	}
	_, closed := h.ann.snapshot()
	if !closed || len(h.ann.routesAtClose) != 4 {
		t.Errorf("announcer closed=%v with routes %v at the time: it must close before routes go", closed, h.ann.routesAtClose)
	}
	if at := h.dev.closedAt.Load(); at == nil {
		t.Error("tun never closed")
	} else if at.Sub(h.ann.closedAt) < DefaultWithdrawDrain {
		t.Errorf("tun closed %v after the announcers withdrew; want at least %v of draining", at.Sub(h.ann.closedAt), DefaultWithdrawDrain)
	}
	if _, err := os.Stat(h.sock); !os.IsNotExist(err) {
		t.Errorf("control socket left: %v", err)
	}
}

func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.20")))
	defer h.stop()
	h.k.mu.Lock()
	h.k.log = nil
	h.k.mu.Unlock()

	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.30")))
	res, err := RequestReload(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if res.RoutesAdded != 1 || res.RoutesRemoved != 1 || res.Mappings != 2 || res.Unchanged {
		t.Errorf("reload result %+v", res)
	}
	h.k.mu.Lock()
	calls := slices.Clone(h.k.log)
	h.k.mu.Unlock()
	want := []string{"routes+ [198.51.100.30/32 dev dmtest0 table 646]", "routes- [198.51.100.20/32 dev dmtest0 table 646]"}
	if !slices.Equal(calls, want) {
		t.Errorf("kernel calls on reload\n%v\nwant\n%v", calls, want)
	}
	ups, _ := h.ann.snapshot()
	if last := ups[len(ups)-1]; len(ups) != 2 || !slices.Contains(last.IPv4, netip.MustParsePrefix("198.51.100.30/32")) {
		t.Errorf("announcements after reload: %+v", ups)
	}

	// The same file again: nothing to do.
	if res, err := RequestReload(h.sock); err != nil || !res.Unchanged {
		t.Errorf("unchanged reload: %+v %v", res, err)
	}

	// SIGHUP path.
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.30", "198.51.100.40")))
	h.reload <- struct{}{}
	waitFor(t, "SIGHUP reload", func() bool { return slices.Contains(h.k.routeSet(), "198.51.100.40/32 dev dmtest0 table 646") })
	// The route is in before the reload has ended and been counted.
	waitFor(t, "the SIGHUP reload counted", func() bool {
		st, err := QueryStats(h.sock)
		return err == nil && st.Reloads.OK+st.Reloads.Failed == 3
	})
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reloads.OK != 3 || st.Reloads.Failed != 0 || st.Mappings != 3 {
		t.Errorf("reload counters %+v mappings %d", st.Reloads, st.Mappings)
	}
}

func TestBadReloadKeepsTheRunningConfiguration(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	before := h.k.routeSet()
	stBefore, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}

	for _, bad := range []struct{ name, body, wantPos string }{
		{"syntax", "translator {\n  prefix = \n}\n", ":2:"},
		{"bad mapping", fmt.Sprintf(baseConfig, "  mapping {\n    ipv4 = \"198.51.100.300\"\n    ipv6 = \"2001:db8:6::1\"\n  }\n"), ":5:"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			writeConfig(t, h.cfg, bad.body)
			res, err := RequestReload(h.sock)
			if err == nil || res == nil || res.InUse {
				t.Fatalf("a bad file: %+v, %v; want refused, not in use", res, err)
			}
			if !strings.Contains(err.Error(), h.cfg+bad.wantPos) {
				t.Errorf("error %q does not point at %s%s", err, h.cfg, bad.wantPos)
			}
			if got := h.k.routeSet(); !slices.Equal(got, before) {
				t.Errorf("routes changed by a refused reload: %v", got)
			}
		})
	}
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reloads.Failed != 2 || st.Digest != stBefore.Digest || st.Mappings != 1 || st.Reloads.LastError == "" {
		t.Errorf("after refused reloads: %+v digest %s", st.Reloads, st.Digest)
	}
}

func TestHealthChangesAreAnnounced(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	dp := h.dp.Load()
	dp.healthy.Store(false)
	waitFor(t, "an unhealthy announcement", func() bool {
		ups, _ := h.ann.snapshot()
		return len(ups) == 2 && !ups[1].Healthy
	})
	dp.healthy.Store(true)
	waitFor(t, "a healthy announcement", func() bool {
		ups, _ := h.ann.snapshot()
		return len(ups) == 3 && ups[2].Healthy
	})
	// Two more polls that see no change: the first one's announcement,
	// had it made one, is recorded before the second poll runs.
	polled := dp.checks.Load()
	waitFor(t, "two more health polls", func() bool { return dp.checks.Load() >= polled+2 })
	if ups, _ := h.ann.snapshot(); len(ups) != 3 {
		t.Errorf("announcements without a health change: %d", len(ups))
	}
}

// reloadHeldInLoad starts a reload whose load of the file waits until
// release is closed (a large mappings file, a file system that hangs),
// and returns once the load has begun.
func (h *harness) reloadHeldInLoad(t *testing.T) (release chan struct{}) {
	t.Helper()
	entered, release := make(chan struct{}), make(chan struct{})
	slow := func(ctx context.Context, o Options) (*config.Config, error) {
		close(entered)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return loadConfig(ctx, o)
	}
	h.load.Store(&slow)
	h.reload <- struct{}{}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the reload did not start loading")
	}
	return release
}

// TestHealthIsCheckedDuringASlowReload: while a reload's load is still
// running (a large mappings file, a file system that hangs: up to
// ConfigLoadTimeout), the health polls go on, and a data path that stops
// forwarding is withdrawn at once, not once the load is over. Before,
// the run loop waited for the load and announced the dead data path as
// healthy meanwhile.
func TestHealthIsCheckedDuringASlowReload(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.20")))
	release := h.reloadHeldInLoad(t)
	h.dp.Load().healthy.Store(false)
	waitFor(t, "an unhealthy announcement while the reload loads", func() bool {
		ups, _ := h.ann.snapshot()
		return len(ups) == 2 && !ups[1].Healthy
	})
	if st, err := QueryStats(h.sock); err != nil || st.Healthy {
		t.Errorf("stats while loading: healthy %v, err %v", st.Healthy, err)
	}
	h.dp.Load().healthy.Store(true)
	close(release)
	waitFor(t, "the reload", func() bool { return slices.Contains(h.k.routeSet(), "198.51.100.20/32 dev dmtest0 table 646") })
	waitFor(t, "a healthy announcement with the new mapping", func() bool {
		ups, _ := h.ann.snapshot()
		last := ups[len(ups)-1]
		return last.Healthy && slices.Contains(last.IPv4, netip.MustParsePrefix("198.51.100.20/32"))
	})
}

// TestRouteDeletedDuringASlowReloadIsPutBack: while a reload's file
// loads, kernel events are handled as the run loop handles them: a route
// of the translator deleted meanwhile is put back at once, not once the
// load is over (until then it stayed deleted, and the daemon healthy and
// announcing a prefix without its route).
func TestRouteDeletedDuringASlowReloadIsPutBack(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	release := h.reloadHeldInLoad(t)
	const route = "198.51.100.10/32 dev dmtest0 table 646"
	r := netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "dmtest0", Table: 646}
	if err := h.k.DelRoutes([]netsetup.Route{r}); err != nil {
		t.Fatal(err)
	}
	h.w.events <- []netsetup.Change{{Route: r}}
	// The load waits for release: the route is back while it runs.
	waitFor(t, "the route back while the reload still loads", func() bool { return slices.Contains(h.k.routeSet(), route) })
	close(release)
}

// TestServiceManagerHooks: OnHealth reports every health poll's outcome
// (the CLI feeds systemd's watchdog only on true), and OnReload brackets
// each reload, from SIGHUP or the control socket, applied or refused.
func TestServiceManagerHooks(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	count := func(s string) int {
		n := 0
		for _, c := range h.hookCalls() {
			if c == s {
				n++
			}
		}
		return n
	}
	waitFor(t, "a healthy poll", func() bool { return count("health true") > 0 })
	dp := h.dp.Load()
	dp.healthy.Store(false)
	waitFor(t, "an unhealthy poll", func() bool { return count("health false") > 0 })
	dp.healthy.Store(true)

	// Only reload calls from here: health polls go on in between.
	reloads := func() []string {
		var r []string
		for _, c := range h.hookCalls() {
			if strings.HasPrefix(c, "reload ") {
				r = append(r, c)
			}
		}
		return r
	}
	h.reload <- struct{}{}
	waitFor(t, "a SIGHUP reload's end", func() bool { return len(reloads()) == 2 })
	writeConfig(t, h.cfg, "translator {\n")
	if _, err := RequestReload(h.sock); err == nil {
		t.Error("a broken file was accepted")
	}
	if got := reloads(); !slices.Equal(got, []string{"reload true", "reload false", "reload true", "reload false"}) {
		t.Errorf("reload hooks %q", got)
	}
}

func TestDatapathFailureStopsRunAndCleansUp(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	h.dp.Load().fail <- fmt.Errorf("queue 0: read: input/output error")
	select {
	case err := <-h.done:
		if err == nil || !strings.Contains(err.Error(), "input/output error") {
			t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run went on after the data path failed")
	}
	if got := h.k.routeSet(); len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}
}

func TestSecondDaemonOnTheSameSocketIsRefused(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	d := &daemon{}
	_, err := listenControl(h.sock, "", d, nil, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "another map646 is running") {
		t.Errorf("second listener: %v", err)
	}
}

// TestSecondDaemonInTheNamespaceIsRefusedBeforeTouchingAnything: a second
// Run in the same network namespace (its own control socket, so that only
// the instance lock can stop it) fails at once, never reaching the kernel,
// and the first keeps its routes.
func TestSecondDaemonInTheNamespaceIsRefusedBeforeTouchingAnything(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	before := h.k.routeSet()
	touched := false
	e := env{kernel: func() (netsetup.Kernel, func() error, error) { touched = true; return nil, nil, fmt.Errorf("no") }}
	start := time.Now()
	err := run(context.Background(), Options{ConfigPath: h.cfg, ControlSocket: h.sock + "2", LockDir: h.lockDir,
		Logger: slog.New(slog.DiscardHandler)}, e)
	if err == nil || !strings.Contains(err.Error(), "another map646 (pid ") || !strings.Contains(err.Error(), "network namespace") {
		t.Errorf("second run: %v", err)
	}
	if touched {
		t.Error("the second run reached the kernel")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("second run took %v to refuse", took)
	}
	if got := h.k.routeSet(); !slices.Equal(got, before) {
		t.Errorf("routes changed: %v, were %v", got, before)
	}
	// Once the first stops, the lock is free for the next one.
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	l, err := lockInstance(h.lockDir)
	if err != nil {
		t.Fatalf("lock after the first stopped: %v", err)
	}
	l.release()
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // left by a killed daemon
		t.Fatal(err)
	}
	cs, err := listenControl(sock, "", &daemon{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cs.Close()
}

func TestInvalidConfigFailsBeforeTouchingTheSystem(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bad.hcl")
	writeConfig(t, p, "translator {\n  prefix = \"2001:db8:64::/97\"\n}\n")
	touched := false
	e := env{kernel: func() (netsetup.Kernel, func() error, error) { touched = true; return nil, nil, fmt.Errorf("no") }}
	err := run(context.Background(), Options{ConfigPath: p, Logger: slog.New(slog.DiscardHandler)}, e)
	if err == nil || !strings.Contains(err.Error(), p+":2:") || touched {
		t.Errorf("Run = %v (touched kernel: %v)", err, touched)
	}
}

// withMetrics adds a metrics block on a free loopback port to cfg.
func withMetrics(t *testing.T, cfg string) string {
	t.Helper()
	// The configuration refuses port 0; take a free port from the kernel.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return strings.Replace(cfg, "bgp {", "metrics {\n  listen = \""+addr+"\"\n}\nbgp {", 1)
}

func TestMetricsEndpointServesTheDaemonsCounters(t *testing.T) {
	h := start(t, withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))))
	defer h.stop()
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.MetricsListen == "" {
		t.Fatal("stats do not say where metrics are served")
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + st.MetricsListen + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	updates, _ := h.ann.snapshot()
	for _, want := range []string{
		"map646_mappings 1\n",
		"map646_routes 3\n",
		"map646_routes_preexisting 0\n",
		`map646_link_events_total{counter="reads"} 7`,
		`map646_link_events_total{counter="panics"} 2`,
		`map646_link_events_total{counter="not_ip"} 1`,
		`map646_link_events_total{counter="link_chatter"} 3`,
		`map646_link_events_total{counter="drop_log_suppressed"} 4`,
		`map646_config_info{digest="` + st.Digest + `"`,
		`map646_packets_total{direction="4to6",protocol="udp"} 0`,
		`map646_drops_total{direction="6to4",reason="dst_unmapped"} 0`,
		`map646_config_reloads_total{result="failure"} 0`,
		// The announcer's status, handed over as it is, brings its series.
		"map646_fake_announcer_established 1\n",
		fmt.Sprintf("map646_fake_announcer_updates_total %d\n", len(updates)),
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics (%d) lacks %q", code, want)
		}
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	h.dp.Load().healthy.Store(false)
	waitFor(t, "/healthz to turn 503", func() bool { c, _ := get("/healthz"); return c == http.StatusServiceUnavailable })
}

func TestNewLogger(t *testing.T) {
	var b strings.Builder
	l, err := NewLogger(&b, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if s := b.String(); strings.Contains(s, "hidden") || !strings.Contains(s, `"msg":"shown"`) {
		t.Errorf("json warn logger wrote %q", s)
	}
	if _, err := NewLogger(&b, "loud", "text"); err == nil {
		t.Error("bad level accepted")
	}
	if _, err := NewLogger(&b, "info", "xml"); err == nil {
		t.Error("bad format accepted")
	}
}

// TestIdleControlClientDoesNotHoldShutdown: a client that connected and
// said nothing must not delay the daemon's exit.
func TestIdleControlClientDoesNotHoldShutdown(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	c, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The server accepts connections in order on one goroutine: once it
	// has answered a later connection, it has taken c.
	if _, err := QueryStats(h.sock); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("stopping took %v with an idle control client", d)
	}
}

// TestDropsAreSummarisedNotLoggedPerPacket: many drops make one line per
// interval with counts by direction and reason; no drops, no line.
func TestDropsAreSummarisedNotLoggedPerPacket(t *testing.T) {
	c := parse(t, `translator {
  prefix = "2001:db8:64::/96"
}`)
	xc, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	eng, err := xlat.NewEngine(xc)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	d := &daemon{eng: eng, log: slog.New(slog.NewTextHandler(&logs, nil))}
	w := eng.NewWorker()
	buf := make([]byte, xlat.Headroom+64)
	for range 1000 {
		buf[xlat.Headroom] = 0x50 // IP version 5
		w.Process(buf, xlat.Headroom, len(buf), nil, nil)
	}
	prev := d.logDrops(xlat.Totals{})
	if n := strings.Count(logs.String(), "\n"); n != 1 || !strings.Contains(logs.String(), "total=1000") {
		t.Errorf("%d log lines for 1000 drops:\n%s", n, logs.String())
	}
	logs.Reset()
	d.logDrops(prev)
	if logs.Len() != 0 {
		t.Errorf("logged without new drops: %s", logs.String())
	}
}

// TestKernelUndoingTheSetUpIsRepairedOrReported: the tun going down makes
// the daemon unhealthy (announcers withdraw); when it comes back up, the
// routes the kernel flushed are put back and it is healthy again. A route
// deleted by hand is restored; one that cannot be restored keeps the
// daemon unhealthy until it can.
func TestKernelUndoingTheSetUpIsRepairedOrReported(t *testing.T) {
	h := start(t, withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))))
	defer h.stop()
	want := h.k.routeSet()
	healthy := func() bool {
		st, err := QueryStats(h.sock)
		return err == nil && st.Healthy
	}
	lastAnn := func() (int, bool) {
		ups, _ := h.ann.snapshot()
		return len(ups), ups[len(ups)-1].Healthy
	}
	setLink := func(up bool) {
		h.k.mu.Lock()
		l := h.k.links["dmtest0"]
		l[1] = map[bool]int{true: 1}[up]
		h.k.links["dmtest0"] = l
		if !up { // the kernel flushes the routes through a link that goes down
			for r := range h.k.routes {
				if r.Dev == "dmtest0" {
					delete(h.k.routes, r)
				}
			}
		}
		h.k.mu.Unlock()
		h.w.events <- []netsetup.Change{{Link: "dmtest0", Up: up}}
	}

	// ip link set tun down
	setLink(false)
	waitFor(t, "unhealthy after the tun went down", func() bool { return !healthy() })
	waitFor(t, "a withdrawing announcement", func() bool { _, ok := lastAnn(); return !ok })
	// ip link set tun up
	setLink(true)
	waitFor(t, "healthy after the tun came back", healthy)
	if got := h.k.routeSet(); !slices.Equal(got, want) {
		t.Errorf("routes after the tun came back\n%v\nwant\n%v", got, want)
	}
	if _, ok := lastAnn(); !ok {
		t.Error("the last announcement still withdraws")
	}

	// ip route del 198.51.100.10 table 646
	gone := netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "dmtest0", Table: PolicyTable}
	h.k.mu.Lock()
	delete(h.k.routes, gone)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Route: gone}}
	waitFor(t, "the deleted route back", func() bool { return slices.Equal(h.k.routeSet(), want) })
	// A route that is not ours going away changes nothing.
	h.w.events <- []netsetup.Change{{Route: netsetup.Route{Dst: netip.MustParsePrefix("192.0.2.128/25"), Dev: "eth0"}}}

	// The route cannot be put back: unhealthy, and it says so.
	h.k.mu.Lock()
	h.k.failAdd = true
	delete(h.k.routes, gone)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Route: gone}}
	waitFor(t, "unhealthy while the route cannot be restored", func() bool { return !healthy() })
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/healthz": "unhealthy", "/metrics": "map646_datapath_healthy 0\n"} {
		resp, err := http.Get("http://" + st.MetricsListen + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(b), want) || (path == "/healthz" && resp.StatusCode != http.StatusServiceUnavailable) {
			t.Errorf("%s answered %d %q while the routes are missing; want %q", path, resp.StatusCode, b, want)
		}
	}
	// Retried, with a growing pause (each retry replaces every route),
	// until it works.
	time.Sleep(60 * testHealthInterval)
	h.k.mu.Lock()
	h.k.failAdd = false
	tries := h.k.failed
	h.k.mu.Unlock()
	if tries < 2 || tries > 10 {
		t.Errorf("%d restore attempts in 60 health intervals; want a few, backing off", tries)
	}
	waitFor(t, "healthy once the route could be restored", healthy)
	if got := h.k.routeSet(); !slices.Equal(got, want) {
		t.Errorf("routes after the retry\n%v\nwant\n%v", got, want)
	}
}

// TestDeletedRulesAndAddressesArePutBack: a policy rule deleted from
// outside is put back, whether an RTM_DELRULE reports it or the health
// check's rule dump finds it missing; one that cannot be put back keeps
// the daemon unhealthy until it can. An interface block's address
// deleted from outside is put back; someone else's is left deleted.
func TestDeletedRulesAndAddressesArePutBack(t *testing.T) {
	h := start(t, withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))))
	defer h.stop()
	healthy := func() bool {
		st, err := QueryStats(h.sock)
		return err == nil && st.Healthy
	}
	rules := func() []netsetup.Rule {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return slices.Clone(h.k.rules)
	}
	want := rules()
	if len(want) == 0 {
		t.Fatal("host mode installed no policy rules")
	}
	setRules := func(rs []netsetup.Rule) {
		h.k.mu.Lock()
		h.k.rules = rs
		h.k.mu.Unlock()
	}
	sameRules := func() bool {
		got := rules()
		return len(got) == len(want) && !slices.ContainsFunc(want, func(r netsetup.Rule) bool { return !slices.Contains(got, r) })
	}

	ruleAdds := func() int {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.ruleAdds
	}
	// Someone else's rules deleted (the watcher reports only what a
	// Rule says entirely; these differ from ours in one field each):
	// nothing is put back, ours being all there.
	before := ruleAdds()
	ours := want[0]
	var othersRules []netsetup.Change
	for range 4 {
		othersRules = append(othersRules, netsetup.Change{Rule: ours})
	}
	othersRules[0].Rule.Priority++
	othersRules[1].Rule.Table++
	othersRules[2].Rule.Iif = "eth0"
	othersRules[3].Rule.Priority = RulePriority + 3 // our unreachable's, with a lookup
	for _, c := range othersRules {
		if slices.Contains(want, c.Rule) {
			t.Fatalf("set-up: %v is one of ours", c.Rule)
		}
	}
	h.w.events <- othersRules
	time.Sleep(5 * testHealthInterval)
	if n := ruleAdds() - before; n != 0 {
		t.Errorf("%d rules added after someone else's rules were deleted; want none", n)
	}
	// ip rule del pref 6460, reported.
	setRules(slices.Clone(want[1:]))
	h.w.events <- []netsetup.Change{{Rule: ours}}
	waitFor(t, "the deleted rule back after RTM_DELRULE", sameRules)
	// ip rule flush with the event lost to another reader's view: the
	// health check's dump finds them missing.
	setRules(nil)
	waitFor(t, "the rules back after a health check", sameRules)

	// The rules cannot be put back: unhealthy, until they can.
	h.k.mu.Lock()
	h.k.failRule = true
	h.k.rules = nil
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Rule: ours}}
	waitFor(t, "unhealthy while the rules cannot be restored", func() bool { return !healthy() })
	h.k.mu.Lock()
	h.k.failRule = false
	h.k.mu.Unlock()
	waitFor(t, "healthy once the rules could be restored", healthy)
	if !sameRules() {
		t.Errorf("rules after the retry %v, want %v", rules(), want)
	}

	// ip addr del 203.0.113.1/28 dev eth0: the servers' next hop.
	mine := netsetup.Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("203.0.113.1/28")}
	theirs := netsetup.Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("192.0.2.7/24")}
	h.k.mu.Lock()
	if !h.k.addrs[mine] {
		h.k.mu.Unlock()
		t.Fatalf("the interface block's address was not installed: %v", h.k.addrs)
	}
	delete(h.k.addrs, mine)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Deleted: theirs, Addrs: true}, {Deleted: mine, Addrs: true}}
	waitFor(t, "the deleted address back", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.addrs[mine]
	})
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	if h.k.addrs[theirs] {
		t.Errorf("someone else's deleted address was put in: %v", h.k.addrs)
	}
}

// TestChangeQueueNeverBlocksNorLoses: events pile up without blocking the
// watcher; too many collapse into one Lost, which restores everything.
func TestChangeQueueNeverBlocksNorLoses(t *testing.T) {
	q := newChangeQueue()
	q.push([]netsetup.Change{{Link: "a"}})
	q.push([]netsetup.Change{{Link: "b"}})
	<-q.ready
	if got := q.take(); len(got) != 2 || got[0].Link != "a" || got[1].Link != "b" {
		t.Errorf("take = %+v", got)
	}
	select {
	case <-q.ready:
		t.Error("a token without changes")
	default:
	}
	for range maxPendingChanges + 1 {
		q.push([]netsetup.Change{{Link: "x"}})
	}
	<-q.ready
	if got := q.take(); len(got) != 1 || !got[0].Lost {
		t.Errorf("after an overflow: %d changes, first %+v", len(got), got[0])
	}
}

// TestLostEventsRestoreEverything: when the kernel dropped events, routes
// it removed without a word are put back.
func TestLostEventsRestoreEverything(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.20")))
	defer h.stop()
	want := h.k.routeSet()
	h.k.mu.Lock()
	clear(h.k.routes)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Lost: true}}
	waitFor(t, "every route back", func() bool { return slices.Equal(h.k.routeSet(), want) })
}

// TestRoutesAheadOfOursAreDeleted: a route put ahead of one of ours
// (Change.Ahead) is deleted, and one ahead of nothing of ours is not;
// after lost events, those the tables hold ahead of ours are found and
// deleted too, and only those.
func TestRoutesAheadOfOursAreDeleted(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.20")))
	defer h.stop()
	ahead := func(dst string) netsetup.AheadRoute {
		return netsetup.AheadRoute{Route: netsetup.Route{Dst: netip.MustParsePrefix(dst), Table: PolicyTable, Blackhole: true}, Protocol: 3, Type: 6}
	}
	ten, twenty, other := ahead("198.51.100.10/32"), ahead("198.51.100.20/32"), ahead("198.51.100.99/32")
	h.k.mu.Lock()
	h.k.ahead = []netsetup.AheadRoute{ten, other}
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Ahead: ten}, {Ahead: other}}
	waitFor(t, "the route ahead of ours deleted", func() bool { return slices.Equal(h.k.aheadNow(), []netsetup.AheadRoute{other}) })
	h.k.mu.Lock()
	h.k.ahead = []netsetup.AheadRoute{twenty, other}
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Lost: true}}
	waitFor(t, "the route ahead of ours found and deleted", func() bool { return slices.Equal(h.k.aheadNow(), []netsetup.AheadRoute{other}) })
	waitFor(t, "both deletions counted", func() bool { return repairCount(h, "route") == 2 })

	// Ours to .20 gone, and refused when put back (its gateway not
	// on-link): someone else's route at its place is the only route
	// left to .20, ahead of nothing, and stays through the retries
	// (review H8: it was deleted on each one).
	h.k.mu.Lock()
	var ours20 netsetup.Route
	for r := range h.k.routes {
		if r.Dst == twenty.Dst && r.Table == PolicyTable {
			ours20 = r
		}
	}
	delete(h.k.routes, ours20)
	h.k.refuse = func(r netsetup.Route) bool { return r == ours20 }
	alone := netsetup.AheadRoute{Route: netsetup.Route{Dst: twenty.Dst, Dev: "eth0", Table: PolicyTable}, Protocol: 3, Type: 1}
	h.k.ahead = []netsetup.AheadRoute{alone, other}
	restores := 0
	for _, l := range h.k.log {
		if strings.HasPrefix(l, "routes+") {
			restores++
		}
	}
	h.k.mu.Unlock()
	if !ours20.Dst.IsValid() {
		t.Fatal("no route of the daemon's to 198.51.100.20/32")
	}
	h.w.events <- []netsetup.Change{{Lost: true}}
	waitFor(t, "two restores tried", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		n := 0
		for _, l := range h.k.log {
			if strings.HasPrefix(l, "routes+") {
				n++
			}
		}
		return n >= restores+2
	})
	if got := h.k.aheadNow(); !slices.Equal(got, []netsetup.AheadRoute{alone, other}) {
		t.Errorf("after the restores, the routes of others are %v; want %v kept", got, []netsetup.AheadRoute{alone, other})
	}
	if n := repairCount(h, "route"); n != 2 {
		t.Errorf("%d route repairs counted; want still 2", n)
	}
}

// TestRoutesOfOthersAreReportedAndKept: a route block whose destination
// the kernel already routes is neither replaced nor removed at stop, and
// the ready info, the stats and the log say so.
func TestRoutesOfOthersAreReportedAndKept(t *testing.T) {
	k := newFakeKernel()
	theirs := netsetup.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.99")}
	k.routes[theirs] = true
	h := startWithKernel(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k)
	if got := h.readyInfo.PreexistingRoutes; !slices.Equal(got, []string{"192.0.2.0/24 via 203.0.113.14"}) {
		t.Errorf("ready info: preexisting %v", got)
	}
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.RoutesPreexisting != 1 || st.Routes != 2 {
		t.Errorf("stats: %d preexisting, %d routes; want 1 and 2", st.RoutesPreexisting, st.Routes)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if got := h.k.routeSet(); !slices.Equal(got, []string{theirs.String()}) {
		t.Errorf("after stop: %v; want only %v", got, theirs)
	}
}

// TestReloadReportsAgainstTheRunningSettings: the tun and log settings
// are changed by one reload (pending a restart) and changed back by the
// next, which must then report nothing pending; the digest reported is
// that of the configuration running, with the loaded one as pending.
func TestReloadReportsAgainstTheRunningSettings(t *testing.T) {
	base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	h := start(t, base)
	defer h.stop()
	startDigest := h.readyInfo.Digest

	changed := strings.Replace(base, "queues = 1", "queues = 2", 1) + "log {\n  level = \"debug\"\n}\nrun_as {\n  user = \"nobody\"\n}\n"
	changed = strings.Replace(changed, mappingBlocks("198.51.100.10"), mappingBlocks("198.51.100.10", "198.51.100.20"), 1)
	writeConfig(t, h.cfg, changed)
	res, err := RequestReload(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.NeedsRestart, []string{"translator.tun", "log", "run_as"}) || res.Digest != startDigest ||
		res.PendingDigest == "" || res.PendingDigest == startDigest || res.Mappings != 2 || res.RoutesAdded != 1 {
		t.Errorf("changing tun and log: %+v; want both pending, digest %s running", res, startDigest)
	}
	pending := res.PendingDigest
	st, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Digest != startDigest || st.PendingDigest != pending || st.Mappings != 2 {
		t.Errorf("stats after a pending change: digest %s pending %s mappings %d", st.Digest, st.PendingDigest, st.Mappings)
	}

	// The same file again: still pending.
	if res, err := RequestReload(h.sock); err != nil || !res.Unchanged || len(res.NeedsRestart) != 3 || res.PendingDigest != pending {
		t.Errorf("unchanged reload while settings are pending: %+v %v", res, err)
	}

	// Back to the running tun and log, keeping the new mapping.
	reverted := strings.Replace(base, mappingBlocks("198.51.100.10"), mappingBlocks("198.51.100.10", "198.51.100.20"), 1)
	writeConfig(t, h.cfg, reverted)
	res, err = RequestReload(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.NeedsRestart) != 0 || res.PendingDigest != "" || res.Digest == startDigest || res.Digest == pending {
		t.Errorf("reverting tun and log: %+v; want nothing pending and the reverted file's digest", res)
	}
	st, err = QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Digest != res.Digest || st.PendingDigest != "" {
		t.Errorf("stats after reverting: digest %s pending %s, want %s and none", st.Digest, st.PendingDigest, res.Digest)
	}

	// Reverting to the very file started with reports its digest.
	writeConfig(t, h.cfg, base)
	if res, err := RequestReload(h.sock); err != nil || res.Digest != startDigest || len(res.NeedsRestart) != 0 {
		t.Errorf("back to the start file: %+v %v", res, err)
	}
}

// TestJoolSettingsChangeOnReload: traffic_class, tos, mtu_plateaus and
// the ICMP rate limit reach the running engine, and a reload changes them
// at once (nothing waits for a restart).
func TestJoolSettingsChangeOnReload(t *testing.T) {
	base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	h := start(t, base)
	defer h.stop()
	pol := func() xlat.Policy { return h.eng.Load().Config().Policy }
	if p := pol(); p.TrafficClass != (xlat.TOS{}) || p.TypeOfService != (xlat.TOS{}) || p.MTUPlateaus != nil || p.ICMPRate != 100 || p.ICMPBurst != 100 {
		t.Errorf("defaults: %+v", p)
	}
	changed := strings.Replace(base, `prefix = "2001:db8:64::/96"`, `prefix = "2001:db8:64::/96"
  traffic_class = "zero"
  tos = 46
  mtu_plateaus = [9000, 1500, 1400]
  icmp_errors_per_second = 20
  icmp_errors_burst = 5`, 1)
	writeConfig(t, h.cfg, changed)
	res, err := RequestReload(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.NeedsRestart) != 0 {
		t.Errorf("needs a restart: %v", res.NeedsRestart)
	}
	p := pol()
	if p.TrafficClass != (xlat.TOS{Reset: true}) || p.TypeOfService != (xlat.TOS{Reset: true, DSCP: 46}) ||
		!slices.Equal(p.MTUPlateaus, []int{9000, 1500, 1400}) || p.ICMPRate != 20 || p.ICMPBurst != 5 {
		t.Errorf("after reload: %+v", p)
	}
}

// TestPrivilegesDroppedOnceSetUp: the daemon gives up its privileges once,
// after the routes are in and before it says it is ready, keeping
// CAP_NET_ADMIN (the test config's BGP speaker only dials out); with
// KeepPrivileges (PID 1) it keeps them; an unknown run_as user stops the
// start before anything is set up.
func TestPrivilegesDroppedOnceSetUp(t *testing.T) {
	body := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	h := start(t, body)
	if len(h.drops) != 1 || h.drops[0].id.set || !slices.Equal(h.drops[0].keep, []uintptr{unix.CAP_NET_ADMIN}) || h.drops[0].routes == 0 {
		t.Errorf("privileges dropped %+v; want once, after the routes, keeping CAP_NET_ADMIN", h.drops)
	}
	h.stop()

	h = startWith(t, body+"run_as {\n  user = \"nobody\"\n}\n", newFakeKernel(), func(o *Options) { o.Group = "0" })
	if len(h.drops) != 1 || h.drops[0].id != (identity{set: true, uid: 65534, gid: 0, name: "nobody"}) {
		t.Errorf("run_as nobody with --group 0: %+v", h.drops)
	}
	h.stop()

	h = startWith(t, body+"run_as {\n  user = \"nobody\"\n}\n", newFakeKernel(), func(o *Options) { o.KeepPrivileges = true })
	if len(h.drops) != 0 {
		t.Errorf("KeepPrivileges: privileges dropped %+v", h.drops)
	}
	h.stop()

	dir := t.TempDir()
	p := filepath.Join(dir, "map646.hcl")
	writeConfig(t, p, body+"run_as {\n  user = \"fo-no-such-user\"\n}\n")
	touched := false
	e := env{kernel: func() (netsetup.Kernel, func() error, error) { touched = true; return nil, nil, fmt.Errorf("no") }}
	err := run(context.Background(), Options{ConfigPath: p, LockDir: filepath.Join(dir, "lock"), ControlSocket: filepath.Join(dir, "s"),
		Logger: slog.New(slog.DiscardHandler)}, e)
	if err == nil || !strings.Contains(err.Error(), "fo-no-such-user") || touched {
		t.Errorf("unknown user: err %v, kernel touched %v", err, touched)
	}
}

// TestDropLogFollowsTheConfig: log.drops sets the data path's drop log at
// start and on every reload, without a restart; the log level still needs
// one.
func TestDropLogFollowsTheConfig(t *testing.T) {
	body := func(log string) string {
		return fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")) + log
	}
	h := start(t, body(""))
	if got := h.dp.Load().dropLog.Load(); got != 0 {
		t.Errorf("drop log %d at start without log.drops, want 0 (off)", got)
	}
	for _, tc := range []struct {
		log         string
		rate        int64
		needRestart bool
	}{
		{"log {\n  drops = true\n}\n", config.DefaultDropsPerSecond, false},
		{"log {\n  drops = true\n  drops_per_second = 3\n}\n", 3, false},
		{"log {\n  drops = false\n  drops_per_second = 3\n}\n", 0, false},
		{"log {\n  drops = true\n  level = \"debug\"\n}\n", config.DefaultDropsPerSecond, true},
	} {
		writeConfig(t, h.cfg, body(tc.log))
		res, err := RequestReload(h.sock)
		if err != nil {
			t.Fatal(err)
		}
		if got := h.dp.Load().dropLog.Load(); got != tc.rate {
			t.Errorf("%q: drop log %d, want %d", tc.log, got, tc.rate)
		}
		if got := slices.Contains(res.NeedsRestart, "log"); got != tc.needRestart {
			t.Errorf("%q: needs restart %v, want %v (%v)", tc.log, got, tc.needRestart, res.NeedsRestart)
		}
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}

	h = start(t, body("log {\n  drops = true\n  drops_per_second = 5\n}\n"))
	defer h.stop()
	if got := h.dp.Load().dropLog.Load(); got != 5 {
		t.Errorf("drop log %d at start with drops_per_second = 5", got)
	}
}

// TestUndoStackRunsNewestFirst: run's deferred undo sees the steps added
// after the defer statement and undoes them newest first (a value
// receiver would have seen none: the daemon then left its routes and
// sysctls behind).
func TestUndoStackRunsNewestFirst(t *testing.T) {
	var got []int
	func() {
		var u undoStack
		defer u.run()
		for i := range 3 {
			u.add(func() { got = append(got, i) })
		}
	}()
	if fmt.Sprint(got) != "[2 1 0]" {
		t.Errorf("undone in order %v, want [2 1 0]", got)
	}
}

// TestUnhealthyWhileWithdrawing: once the data path has ended, or a stop
// has begun, /healthz answers 503 and map646_datapath_healthy is 0 while
// the announcers withdraw and the drain (WithdrawDrain) runs; a data
// path that ended also tells the watchdog hook. Review H10: the flag was
// written only by health checks, so both said healthy until the process
// was gone.
func TestUnhealthyWhileWithdrawing(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(h *harness)
		hook bool // OnHealth(false) expected
	}{
		{"the data path ends", func(h *harness) { h.dp.Load().fail <- fmt.Errorf("queue 0: read: input/output error") }, true},
		{"stop", func(h *harness) { h.cancel() }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := startWith(t, withMetrics(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))), newFakeKernel(),
				func(o *Options) { o.WithdrawDrain = 2 * time.Second })
			st, err := QueryStats(h.sock)
			if err != nil {
				t.Fatal(err)
			}
			get := func(path string) (int, string) {
				resp, err := http.Get("http://" + st.MetricsListen + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, _ := get("/healthz"); code != http.StatusOK {
				t.Fatalf("/healthz before: %d", code)
			}
			h.hooksMu.Lock()
			n := len(h.hooks)
			h.hooksMu.Unlock()
			c.end(h)
			waitFor(t, "the announcers withdrawn", func() bool { _, closed := h.ann.snapshot(); return closed })
			if code, _ := get("/healthz"); code != http.StatusServiceUnavailable {
				t.Errorf("/healthz during the drain: %d", code)
			}
			if _, body := get("/metrics"); !strings.Contains(body, "map646_datapath_healthy 0\n") {
				t.Error("map646_datapath_healthy is not 0 during the drain")
			}
			h.hooksMu.Lock()
			got := slices.Clone(h.hooks[n:])
			h.hooksMu.Unlock()
			if told := slices.Contains(got, "health false"); told != c.hook {
				t.Errorf("watchdog hook calls %q; want health false: %v", got, c.hook)
			}
			select {
			case <-h.done:
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return")
			}
		})
	}
}
