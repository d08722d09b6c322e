package ra

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/ipv6"
)

// capture listens for router advertisements on a host interface.
type capture struct {
	c  *ndp.Conn
	ch chan *ndp.RouterAdvertisement
}

func newCapture(t *testing.T, ns *netnstest.NS, ifname string) *capture {
	t.Helper()
	var c *ndp.Conn
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		t.Fatal(err)
	}
	cp := &capture{c: c, ch: make(chan *ndp.RouterAdvertisement, 64)}
	go func() {
		for {
			m, _, _, err := c.ReadFrom()
			if err != nil {
				close(cp.ch)
				return
			}
			if ra, ok := m.(*ndp.RouterAdvertisement); ok {
				cp.ch <- ra
			}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return cp
}

// next returns the next advertisement that satisfies ok.
func (cp *capture) next(t *testing.T, what string, ok func(*ndp.RouterAdvertisement) bool) *ndp.RouterAdvertisement {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ra, open := <-cp.ch:
			if !open {
				t.Fatalf("capture closed while waiting for %s", what)
			}
			if ok(ra) {
				return ra
			}
		case <-timeout:
			t.Fatalf("no advertisement with %s", what)
		}
	}
}

// waitRoute polls the host's routing table until grep(route) is present or
// absent.
func waitRoute(t *testing.T, ns *netnstest.NS, dst, want string, present bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		out := ns.Run("ip", "-6", "route", "show", dst)
		if strings.Contains(out, want) == present {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("route %s: %q, want %q present=%v", dst, out, want, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdvertiserLinux runs an advertiser in one namespace and a Linux host
// in another, and checks both the advertisements on the wire and the routes
// the host's kernel installs from them (RFC 4191 Type C host).
func TestAdvertiserLinux(t *testing.T) {
	netnstest.Require(t, "ra-")
	r := netnstest.New(t, "ra-r-")
	h := netnstest.New(t, "ra-h-")
	netnstest.Veth(t, r, "xlat0", h, "srv0")
	h.Sysctl("net.ipv6.conf.srv0.accept_ra=1",
		"net.ipv6.conf.srv0.accept_ra_rtr_pref=1",
		"net.ipv6.conf.srv0.accept_ra_rt_info_max_plen=128")
	if out, _ := h.Output("cat", "/proc/sys/net/ipv6/conf/srv0/accept_ra_rt_info_max_plen"); strings.TrimSpace(out) != "128" {
		testenv.SkipOrFail(t, "kernel without CONFIG_IPV6_ROUTE_INFO: hosts cannot learn RIO routes")
	}
	capt := newCapture(t, h, "srv0")

	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var a *Advertiser
	if err := r.Do(func() (err error) {
		a, err = Start(Config{
			Interface: "xlat0", Preference: "high", RouterLifetime: 600 * time.Second,
			Interval: 2 * time.Second, RouteLifetime: 60 * time.Second,
		}, log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	p96 := netip.MustParsePrefix("2001:db8:64::/96")
	p2 := netip.MustParsePrefix("2001:db8:65::/96")
	hasRIO := func(p netip.Prefix, lifetime time.Duration) func(*ndp.RouterAdvertisement) bool {
		return func(ra *ndp.RouterAdvertisement) bool {
			ri, ok := rios(ra)[p]
			return ok && ri.RouteLifetime == lifetime && ri.Preference == ndp.High
		}
	}

	// Nothing is advertised before the translator is healthy.
	select {
	case ra := <-capt.ch:
		t.Fatalf("advertisement before the first Update: %+v", ra)
	case <-time.After(300 * time.Millisecond):
	}

	if err := a.Update([]netip.Prefix{p96}, true); err != nil {
		t.Fatal(err)
	}
	ra := capt.next(t, "the /96 at lifetime 60 s", hasRIO(p96, 60*time.Second))
	if ra.RouterLifetime != 600*time.Second || ra.RouterSelectionPreference != ndp.High {
		t.Errorf("router lifetime %v preference %v, want 600s high", ra.RouterLifetime, ra.RouterSelectionPreference)
	}
	out := waitRoute(t, h, p96.String(), "via fe80::", true)
	if !strings.Contains(out, "proto ra") || !strings.Contains(out, "pref high") {
		t.Errorf("host route %q: want proto ra, pref high", out)
	}
	waitRoute(t, h, "default", "pref high", true)

	// A solicitation is answered (by the next multicast advertisement: with
	// a 2 s interval, the periodic one comes before the rate limit allows a
	// solicited one; see TestAdvertiserSolicitationFlood).
	before := a.Status()
	if err := capt.c.WriteTo(&ndp.RouterSolicitation{}, nil, netip.MustParseAddr("ff02::2")); err != nil {
		t.Fatal(err)
	}
	capt.next(t, "an answer to the solicitation", hasRIO(p96, 60*time.Second))
	for deadline := time.Now().Add(5 * time.Second); a.Status().RSReceived == before.RSReceived; {
		if time.Now().After(deadline) {
			t.Fatalf("status after a solicitation: %+v", a.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A reload replaces the prefix: the new one at full lifetime, the old
	// one once at lifetime 0; the host follows.
	if err := a.Update([]netip.Prefix{p2}, true); err != nil {
		t.Fatal(err)
	}
	capt.next(t, "the old prefix at lifetime 0 and the new one", func(ra *ndp.RouterAdvertisement) bool {
		return hasRIO(p96, 0)(ra) && hasRIO(p2, 60*time.Second)(ra)
	})
	waitRoute(t, h, p96.String(), "via", false)
	waitRoute(t, h, p2.String(), "via fe80::", true)

	// Unhealthy: a goodbye (router lifetime 0, route lifetime 0) at once.
	if err := a.Update([]netip.Prefix{p2}, false); err != nil {
		t.Fatal(err)
	}
	ra = capt.next(t, "a goodbye", hasRIO(p2, 0))
	if ra.RouterLifetime != 0 {
		t.Errorf("goodbye has router lifetime %v", ra.RouterLifetime)
	}
	waitRoute(t, h, p2.String(), "via", false)
	waitRoute(t, h, "default", "via", false)

	// Healthy again, then Close: the final advertisement withdraws all.
	if err := a.Update([]netip.Prefix{p2}, true); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, h, p2.String(), "via fe80::", true)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	ra = capt.next(t, "the final advertisement", hasRIO(p2, 0))
	if ra.RouterLifetime != 0 {
		t.Errorf("final advertisement has router lifetime %v", ra.RouterLifetime)
	}
	waitRoute(t, h, p2.String(), "via", false)
	st := a.Status()
	if st.Goodbyes != 2 || st.Sent < 4 || st.RSReceived < 1 || st.SendErrors != 0 {
		t.Errorf("status %+v: want 2 goodbyes, >= 4 sent, >= 1 RS, no errors", st)
	}
	// After Close the counters stand still: the metrics show exactly them.
	if err := testutil.CollectAndCompare(statusCollector(Statuses{st}), strings.NewReader(wantCounters(Statuses{st})), counterNames()...); err != nil {
		t.Error(err)
	}
	if err := a.Update([]netip.Prefix{p2}, true); err == nil {
		t.Error("Update after Close succeeded")
	}
}
