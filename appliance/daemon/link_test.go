package daemon

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// TestLinkModes: the fd and nic blocks start the data path on the link
// they name instead of a tun. NIC mode turns kernel forwarding off (and
// restores it), routes nothing into a tun, and leaves the MTUs that
// ipv4_mtu / ipv6_mtu do not set to the NICs (ServeNIC fills them in and
// follows them: a reload keeps what a NIC reported); fd mode leaves forwarding and
// routes to whoever handed the descriptor over. NIC mode adds a P per
// queue loop (it keeps one while it waits; one loop reads an index's
// socket of both NICs), fd mode none.
// MTUs learnt from the NICs
// bound packet sizes but do not turn the TCP MSS clamp on (RFC 7915
// leaves TCP options alone); an MTU in the file does.
func TestLinkModes(t *testing.T) {
	for _, tc := range []struct {
		name, link string
		wantDev    device
		wantName   string
		forwarding string // during the run; "1" (the fake's initial value): untouched
		mtu4, mtu6 int
		clampMSS   bool
		extraProcs int // GOMAXPROCS beyond one per CPU; -1: untouched
	}{
		{"nic", "nic {\n    ipv4 = \"eth0\"\n    ipv6 = \"eth1\"\n    queues = 3\n  }",
			&nicLink{cfg: stack.NICConfig{IPv4: "eth0", IPv6: "eth1", Queues: 3, SteerPrefix: netip.MustParsePrefix("2001:db8:64::/96"), FollowIPv4MTU: true, FollowIPv6MTU: true}}, "nic eth0,eth1", "0", 0, 0, false, 3},
		{"nic one NIC, ipv6_mtu set", "ipv6_mtu = 1280\n  nic {\n    ipv4 = \"eth0\"\n    queues = 1\n  }",
			&nicLink{cfg: stack.NICConfig{IPv4: "eth0", IPv6: "eth0", Queues: 1, SteerPrefix: netip.MustParsePrefix("2001:db8:64::/96"), FollowIPv4MTU: true, FollowIPv6MTU: true}}, "nic eth0", "0", 0, 1280, true, 1},
		{"fd", "fd {\n    fd = 3\n  }", &fdLink{fd: 3, mtu: 1500}, "fd 3", "1", 0, 0, false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", "")
			const untouched = 1
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(untouched))
			k := newFakeKernel()
			k.sysctls["net.ipv4.ip_forward"] = "1"
			k.sysctls["net.ipv6.conf.all.forwarding"] = "1"
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "map646.hcl")
			body := func(mappings ...string) string {
				return fmt.Sprintf("translator {\n  prefix = \"2001:db8:64::/96\"\n%s\n  %s\n}\n", mappingBlocks(mappings...), tc.link)
			}
			writeConfig(t, cfgPath, body("198.51.100.10"))
			var gotDev device
			var gotPolicy xlat.Policy
			var gotEng *xlat.Engine
			served := make(chan struct{}, 1)
			e := env{
				kernel:  func() (netsetup.Kernel, func() error, error) { return k, func() error { return nil }, nil },
				openTun: func(tun.Config) (device, error) { return nil, fmt.Errorf("a tun was opened") },
				watch:   func(uint32) (watcher, error) { return newFakeWatcher(), nil },
				openLink: func(tr config.Translator) (device, error) {
					// The system's openLink, minus the descriptor check
					// (fd 3 is not ours in a test).
					if tr.Link == config.LinkFD {
						return &fdLink{fd: tr.FD.FD, mtu: tr.FD.MTU}, nil
					}
					return openLink(tr)
				},
				serve: func(ctx context.Context, eng *xlat.Engine, dev device, _ *slog.Logger) (datapath, error) {
					gotDev, gotPolicy, gotEng = dev, eng.Config().Policy, eng
					p := &fakeDatapath{ctx: ctx, fail: make(chan error, 1)}
					p.healthy.Store(true)
					served <- struct{}{}
					return p, nil
				},
			}
			ctx, cancel := context.WithCancel(context.Background())
			ready := make(chan ReadyInfo, 1)
			done := make(chan error, 1)
			go func() {
				done <- run(ctx, Options{ConfigPath: cfgPath, Logger: slog.New(slog.DiscardHandler),
					ControlSocket: filepath.Join(dir, "ctl.sock"), OnReady: func(r ReadyInfo) { ready <- r }}, e)
			}()
			select {
			case r := <-ready:
				if r.Tun != tc.wantName {
					t.Errorf("ready on %q, want %q", r.Tun, tc.wantName)
				}
			case err := <-done:
				t.Fatalf("Run: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("not ready within 10 s")
			}
			<-served
			if fmt.Sprint(gotDev) != fmt.Sprint(tc.wantDev) {
				t.Errorf("served %#v, want %#v", gotDev, tc.wantDev)
			}
			if gotPolicy.DecrementTTL != (tc.forwarding == "0") {
				t.Errorf("engine decrements TTL: %v, in mode %s", gotPolicy.DecrementTTL, tc.name)
			}
			if gotPolicy.IPv4MTU != tc.mtu4 || gotPolicy.IPv6MTU != tc.mtu6 {
				t.Errorf("engine MTUs %d/%d, want %d/%d", gotPolicy.IPv4MTU, gotPolicy.IPv6MTU, tc.mtu4, tc.mtu6)
			}
			if gotPolicy.ClampMSS != tc.clampMSS {
				t.Errorf("engine clamps the MSS: %v, want %v", gotPolicy.ClampMSS, tc.clampMSS)
			}
			if nic, ok := gotDev.(*nicLink); ok {
				// The NIC reports its MTUs (as ServeNIC does), then a
				// reload brings a new mapping: the engine has both.
				if err := gotEng.SetLinkPolicy(func(p *xlat.Policy) {
					if nic.cfg.FollowIPv4MTU && p.IPv4MTU == 0 {
						p.IPv4MTU = 1400
					}
					if nic.cfg.FollowIPv6MTU && p.IPv6MTU == 0 {
						p.IPv6MTU = 9000
					}
				}); err != nil {
					t.Fatal(err)
				}
				writeConfig(t, cfgPath, body("198.51.100.10", "198.51.100.11"))
				if _, err := RequestReload(filepath.Join(dir, "ctl.sock")); err != nil {
					t.Fatal(err)
				}
				got := gotEng.Config()
				if _, _, ok := got.Map.Table().Lookup4(netip.MustParseAddr("198.51.100.11").As4()); !ok {
					t.Error("the reload's mapping is not in the engine")
				}
				if want6 := cmp.Or(tc.mtu6, 9000); got.Policy.IPv4MTU != 1400 || got.Policy.IPv6MTU != want6 {
					t.Errorf("engine MTUs %d/%d after a reload, want the NIC's 1400/%d", got.Policy.IPv4MTU, got.Policy.IPv6MTU, want6)
				}
			}
			wantProcs := untouched
			if tc.extraProcs >= 0 {
				wantProcs = runtime.NumCPU() + tc.extraProcs
			}
			if got := runtime.GOMAXPROCS(0); got != wantProcs {
				t.Errorf("GOMAXPROCS %d, want %d", got, wantProcs)
			}
			k.mu.Lock()
			fwd4, fwd6 := k.sysctls["net.ipv4.ip_forward"], k.sysctls["net.ipv6.conf.all.forwarding"]
			k.mu.Unlock()
			if fwd4 != tc.forwarding || fwd6 != tc.forwarding {
				t.Errorf("forwarding %s/%s while running, want %s", fwd4, fwd6, tc.forwarding)
			}
			wantRoutes := "[]"
			if tc.forwarding == "0" {
				wantRoutes = "[blackhole 2001:db8:64::/96]"
			}
			if rs := fmt.Sprint(k.routeSet()); rs != wantRoutes {
				t.Errorf("routes installed: %v, want %s", rs, wantRoutes)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			k.mu.Lock()
			defer k.mu.Unlock()
			if k.sysctls["net.ipv4.ip_forward"] != "1" || k.sysctls["net.ipv6.conf.all.forwarding"] != "1" {
				t.Errorf("forwarding not restored: %v", k.sysctls)
			}
			if len(k.routes) != 0 {
				t.Errorf("routes left: %v", k.routes)
			}
		})
	}
}

// TestOpenLinkFD: an fd that is not open in the process is refused with
// its number, before anything is served.
func TestOpenLinkFD(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	if _, err := openLink(config.Translator{Link: config.LinkFD, FD: config.FD{FD: fd, MTU: 1500}}); err != nil {
		t.Errorf("open fd %d refused: %v", fd, err)
	}
	f.Close()
	_, err = openLink(config.Translator{Link: config.LinkFD, FD: config.FD{FD: fd, MTU: 1500}})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", fd)) {
		t.Errorf("closed fd %d: %v", fd, err)
	}
}

// TestOpenLinkTap: with ethernet = true the fd is served as a tap: the
// configured MAC, or one derived from the prefix and fd (stable across
// restarts), and the gateways; the engine decrements TTL (no kernel
// forwards around it on the segment) and takes the tap's MTU for both
// sides unless they are configured.
func TestOpenLinkTap(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	prefix := netip.MustParsePrefix("2001:db8:64::/96")
	gw := netip.MustParseAddr("192.0.2.1")
	tr := config.Translator{Prefix: prefix, Link: config.LinkFD, FD: config.FD{FD: fd, MTU: 1400, Ethernet: true, IPv4Gateway: gw}}
	dev, err := openLink(tr)
	if err != nil {
		t.Fatal(err)
	}
	l := dev.(*fdLink)
	if l.tap == nil || l.tap.MAC != stack.TapMAC(prefix, fd) || l.tap.MAC[0]&3 != 2 || l.tap.IPv4Gateway != gw || l.tap.MTU != 1400 {
		t.Fatalf("tap config %+v", l.tap)
	}
	if other := stack.TapMAC(netip.MustParsePrefix("2001:db8:65::/96"), fd); other == l.tap.MAC {
		t.Error("the derived MAC does not depend on the prefix")
	}
	tr.FD.MAC = [6]byte{2, 0, 0x5e, 0x10, 0, 1}
	dev, _ = openLink(tr)
	if dev.(*fdLink).tap.MAC != tr.FD.MAC || !strings.Contains(dev.Name(), "02:00:5e:10:00:01") {
		t.Errorf("configured MAC not used: %s", dev.Name())
	}
	tr.FD.Ethernet = false
	if dev, _ = openLink(tr); dev.(*fdLink).tap != nil {
		t.Error("a bare-IP fd served as a tap")
	}

	src := fmt.Sprintf("translator {\n  prefix = \"2001:db8:64::/96\"\n  ipv6_mtu = 1280\n  fd {\n    fd = %d\n    mtu = 1400\n    ethernet = true\n  }\n}\n", fd)
	cfg, err := config.Parse([]byte(src), "tap.hcl")
	if err != nil {
		t.Fatal(err)
	}
	xc, err := xlatConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !xc.Policy.DecrementTTL || xc.Policy.IPv4MTU != 1400 || xc.Policy.IPv6MTU != 1280 {
		t.Errorf("policy: decrement %v, MTUs %d/%d; want true, 1400/1280", xc.Policy.DecrementTTL, xc.Policy.IPv4MTU, xc.Policy.IPv6MTU)
	}
}

// TestOpenLinkFDQueues: queues = N takes the descriptors fd … fd+N-1, and
// every one must be open.
func TestOpenLinkFDQueues(t *testing.T) {
	var fds [2][2]int
	for i := range fds {
		p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = p
		defer unix.Close(p[0])
		defer unix.Close(p[1])
	}
	// Two consecutive descriptors: dup them to a free pair.
	base := 100
	for base < 1000 {
		_, e1 := unix.FcntlInt(uintptr(base), unix.F_GETFD, 0)
		_, e2 := unix.FcntlInt(uintptr(base+1), unix.F_GETFD, 0)
		if e1 != nil && e2 != nil {
			break
		}
		base += 2
	}
	if err := unix.Dup2(fds[0][0], base); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(base)
	tr := config.Translator{Link: config.LinkFD, FD: config.FD{FD: base, MTU: 1500, Queues: 2}}
	if _, err := openLink(tr); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", base+1)) {
		t.Errorf("second descriptor closed: %v", err)
	}
	if err := unix.Dup2(fds[1][0], base+1); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(base + 1)
	dev, err := openLink(tr)
	if err != nil {
		t.Fatal(err)
	}
	l := dev.(*fdLink)
	if got := l.fds(); len(got) != 2 || got[0] != base || got[1] != base+1 || dev.Name() != fmt.Sprintf("fd %d-%d", base, base+1) {
		t.Errorf("fds %v name %q", got, dev.Name())
	}
}

// TestTunLoopQueues: the descriptors of an inherited tun get a P each
// (they run host mode's loop); a tap's, sockets' and NIC mode's do not.
func TestTunLoopQueues(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  device
		want int
	}{
		{"tun", &fdLink{fd: 3, tun: true}, 1},
		{"tun, 2 queues", &fdLink{fd: 3, queues: 2, tun: true, vnetHdr: 12}, 2},
		{"tap", &fdLink{fd: 3, tun: true, tap: &stack.TapConfig{FD: 3}}, 0},
		{"socket", &fdLink{fd: 3, queues: 2}, 0},
		{"nic", &nicLink{}, 0},
	} {
		if got := tunLoopQueues(tc.dev); got != tc.want {
			t.Errorf("%s: %d queues, want %d", tc.name, got, tc.want)
		}
	}
}

// TestProcsForQueues: one P per CPU and one per queue, unless $GOMAXPROCS
// says otherwise.
func TestProcsForQueues(t *testing.T) {
	for _, tc := range []struct {
		cpus, queues int
		env          string
		want         int
	}{
		{2, 0, "", 4}, // one queue per CPU
		{2, 2, "", 4}, // the same, spelt out
		{4, 1, "", 5}, // one queue
		{8, 16, "", 24},
		{2, 0, "3", 0}, // the operator's choice stays
	} {
		if got := procsForQueues(tc.cpus, tc.queues, tc.env); got != tc.want {
			t.Errorf("procsForQueues(%d, %d, %q) = %d, want %d", tc.cpus, tc.queues, tc.env, got, tc.want)
		}
	}
}

// lockedBuffer is a bytes.Buffer the daemon's goroutines may log into.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSteeringRefusedIsLogged: a tun whose kernel refused the steering
// program still serves (the kernel picks the queues), and the daemon says
// so with the reason.
func TestSteeringRefusedIsLogged(t *testing.T) {
	fakeSteeringErr = errors.New("steering: BPF_PROG_LOAD: operation not permitted")
	defer func() { fakeSteeringErr = nil }()
	var logs lockedBuffer
	h := startWith(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), newFakeKernel(),
		func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	defer h.stop()
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "tun queues chosen by the kernel") || !strings.Contains(out, "BPF_PROG_LOAD: operation not permitted") {
		t.Errorf("no warning with the reason in the log:\n%s", out)
	}
}

// TestWatchedLinks: the health check watches the links the data path
// needs by interface name: the tun, or in NIC mode the NICs themselves
// (the NIC link's own name, "nic eth0,eth1", is no interface, and an
// inherited fd's is not either), plus the interface blocks, once each,
// once the daemon brought them up: one whose device the kernel never had
// is a refused configuration, not a link down.
func TestWatchedLinks(t *testing.T) {
	ifaces := []config.Interface{{Name: "eth0"}, {Name: "eth1"}}
	setUp := map[string]bool{"eth0": true, "eth1": true}
	for _, tc := range []struct {
		name   string
		dev    device
		ifaces []config.Interface
		want   []string
	}{
		{"tun", &fakeDevice{name: "map646"}, ifaces, []string{"map646", "eth0", "eth1"}},
		{"fd", &fdLink{fd: 3}, ifaces, []string{"eth0", "eth1"}},
		{"nic", &nicLink{cfg: stack.NICConfig{IPv4: "eth0", IPv6: "eth1"}}, ifaces, []string{"eth0", "eth1"}},
		{"nic-one-nic", &nicLink{cfg: stack.NICConfig{IPv4: "eth0", IPv6: "eth0"}}, ifaces[:1], []string{"eth0"}},
		{"nic-no-interface-blocks", &nicLink{cfg: stack.NICConfig{IPv4: "ens3", IPv6: "ens4"}}, nil, []string{"ens3", "ens4"}},
		{"interface-never-up", &fakeDevice{name: "map646"}, append(ifaces, config.Interface{Name: "nosuch0"}), []string{"map646", "eth0", "eth1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &daemon{dev: tc.dev, plan: plan{links: tc.ifaces}, repair: repairState{setUp: setUp}}
			if got := d.watchedLinks(); !slices.Equal(got, tc.want) {
				t.Errorf("watched %q, want %q", got, tc.want)
			}
		})
	}
}
