package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/netsetup"
)

// refusedHarness starts the daemon with one mapping and a kernel that
// refuses the routes refuse names, and returns its health readings.
func refusedHarness(t *testing.T, refuse func(netsetup.Route) bool) (h *harness, healthy func() bool, last func() Announcement) {
	t.Helper()
	h = start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	h.k.mu.Lock()
	h.k.refuse = refuse
	h.k.mu.Unlock()
	healthy = func() bool {
		st, err := QueryStats(h.sock)
		return err == nil && st.Healthy
	}
	last = func() Announcement {
		ups, _ := h.ann.snapshot()
		return ups[len(ups)-1]
	}
	return h, healthy, last
}

// watchdogStarved says whether the health hook (systemd's WATCHDOG=1) was
// told false since call n of the hooks.
func watchdogStarved(h *harness, n int) bool {
	return slices.Contains(h.hookCalls()[n:], "health false")
}

// TestRefusedReloadKeepsFeedingTheWatchdog: a reload whose route block the
// kernel refuses for good (a gateway not on-link) is answered with the
// refusal and retried, but the data path forwards: the watchdog is fed at
// every poll (a restart would fail on the same refusal, in a loop), the
// translator stays healthy and its prefixes announced. When the refused
// route is one of the announced prefixes' own, the announcements
// withdraw (that prefix is a black hole) and stats say unhealthy, but the
// watchdog is still fed.
func TestRefusedReloadKeepsFeedingTheWatchdog(t *testing.T) {
	blockRoute := netip.MustParsePrefix("203.0.113.128/25")
	prefixRoute := netip.MustParsePrefix("198.51.100.30/32")
	h, healthy, last := refusedHarness(t, func(r netsetup.Route) bool { return r.Dst == blockRoute || r.Dst == prefixRoute })
	defer h.stop()

	base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	hooks := len(h.hookCalls())
	writeConfig(t, h.cfg, base+"route {\n  to = \"203.0.113.128/25\"\n  via = \"192.0.2.99\"\n}\n")
	res, err := RequestReload(h.sock)
	if err == nil || !strings.Contains(err.Error(), "invalid gateway") || res == nil || !res.InUse {
		t.Fatalf("reload answered %+v, %v; want the kernel's refusal, the file in use", res, err)
	}
	h.k.mu.Lock()
	tries := len(h.k.log)
	h.k.mu.Unlock()
	time.Sleep(20 * testHealthInterval)
	if watchdogStarved(h, hooks) {
		t.Errorf("health hook told false after a refused route block: %v", h.hookCalls()[hooks:])
	}
	if n := strings.Count(strings.Join(h.hookCalls()[hooks:], ","), "health true"); n < 5 {
		t.Errorf("%d watchdog feeds in 20 health intervals", n)
	}
	if !healthy() || !last().Healthy {
		t.Errorf("healthy=%v, last announcement %+v; want healthy: the prefixes forward", healthy(), last())
	}
	h.k.mu.Lock()
	retried := len(h.k.log) > tries
	h.k.mu.Unlock()
	if !retried {
		t.Error("the refused route block was not retried")
	}
	if st, err := QueryStats(h.sock); err != nil || !strings.Contains(st.Reloads.LastError, "invalid gateway") {
		t.Errorf("stats: %+v, %v; want the refusal as the last reload error", st.Reloads, err)
	}

	// Now a mapping whose route into the tun the kernel refuses.
	hooks = len(h.hookCalls())
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.30")))
	if _, err := RequestReload(h.sock); err == nil || !strings.Contains(err.Error(), "198.51.100.30/32") {
		t.Fatalf("reload answered %v; want the refused prefix route", err)
	}
	if healthy() || last().Healthy {
		t.Errorf("healthy=%v, last announcement %+v; want withdrawn: 198.51.100.30 has no route", healthy(), last())
	}
	time.Sleep(20 * testHealthInterval)
	if healthy() || last().Healthy {
		t.Errorf("after 20 polls: healthy=%v, last announcement %+v", healthy(), last())
	}
	if watchdogStarved(h, hooks) {
		t.Errorf("health hook told false after a refused prefix route: %v", h.hookCalls()[hooks:])
	}
}

// TestCorrectiveReloadEndsTheRefusal: a reload that the kernel takes whole
// after one it refused ends the refusal at once (not at the end of the
// restore's backoff): healthy, announced, no more retries. A corrective
// reload that still wants the refused route puts it in (the difference
// alone would not: the tracker counts it as its own).
func TestCorrectiveReloadEndsTheRefusal(t *testing.T) {
	refused := netip.MustParsePrefix("198.51.100.30/32")
	for _, tc := range []struct {
		name    string
		fixed   string // the corrective file's mappings
		kernel  bool   // the kernel takes the refused route from then on
		inRoute bool   // the refused route is in the kernel afterwards
	}{
		{"file reverted", mappingBlocks("198.51.100.10"), false, false},
		{"kernel takes it now", mappingBlocks("198.51.100.10", "198.51.100.30", "198.51.100.40"), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, healthy, last := refusedHarness(t, func(r netsetup.Route) bool { return r.Dst == refused })
			defer h.stop()
			writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.30")))
			if _, err := RequestReload(h.sock); err == nil {
				t.Fatal("reload of the refused route answered no error")
			}
			time.Sleep(40 * testHealthInterval) // the backoff grows past a few polls
			if healthy() {
				t.Fatal("healthy while the prefix route is refused")
			}
			if tc.kernel {
				h.k.mu.Lock()
				h.k.refuse = nil
				h.k.mu.Unlock()
			}
			writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, tc.fixed))
			if res, err := RequestReload(h.sock); err != nil {
				t.Fatalf("corrective reload: %+v, %v", res, err)
			}
			// At once: the reload's answer comes after the health check.
			if !healthy() || !last().Healthy {
				t.Errorf("after the corrective reload: healthy=%v, last announcement %+v", healthy(), last())
			}
			if in := slices.Contains(h.k.routeSet(), "198.51.100.30/32 dev dmtest0 table 646"); in != tc.inRoute {
				t.Errorf("refused route in the kernel: %v, want %v (routes %v)", in, tc.inRoute, h.k.routeSet())
			}
		})
	}
}
