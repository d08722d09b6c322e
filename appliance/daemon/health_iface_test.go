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

// TestReloadNamingAMissingInterface: a reload whose interface block names
// a device the kernel does not have is a refused configuration (answered
// with the refusal, retried), not a link down: the watchdog is fed at
// every poll (a restart would fail on the same "no such link", in a
// loop), the translator stays healthy and announced. A corrective reload
// without the block ends the refusal; the device appearing later is taken
// by the retries and watched from then on.
func TestReloadNamingAMissingInterface(t *testing.T) {
	base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	missing := base + "interface \"nosuch0\" {\n  addresses = [\"203.0.113.33/28\"]\n}\n"
	for _, tc := range []struct {
		name string
		fix  func(h *harness) // ends the refusal
	}{
		{"corrective reload", func(h *harness) {
			writeConfig(t, h.cfg, base)
			if res, err := RequestReload(h.sock); err != nil {
				t.Fatalf("corrective reload: %+v, %v", res, err)
			}
		}},
		{"device appears", func(h *harness) {
			h.k.mu.Lock()
			h.k.links["nosuch0"] = [2]int{1500, 0}
			h.k.mu.Unlock()
			// A reload of the file in use retries at once.
			if _, err := RequestReload(h.sock); err != nil {
				t.Fatalf("reload once the device exists: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, healthy, last := refusedHarness(t, nil)
			defer h.stop()
			hooks := len(h.hookCalls())
			writeConfig(t, h.cfg, missing)
			res, err := RequestReload(h.sock)
			if err == nil || !strings.Contains(err.Error(), "nosuch0") || res == nil || !res.InUse {
				t.Fatalf("reload answered %+v, %v; want the refusal naming nosuch0, the file in use", res, err)
			}
			time.Sleep(20 * testHealthInterval)
			if watchdogStarved(h, hooks) {
				t.Errorf("watchdog told false after a reload naming a missing interface: %v", h.hookCalls()[hooks:])
			}
			if !healthy() || !last().Healthy {
				t.Errorf("healthy=%v, last announcement %+v; want healthy and announced", healthy(), last())
			}
			if st, err := QueryStats(h.sock); err != nil || !strings.Contains(st.Reloads.LastError, "nosuch0") {
				t.Errorf("stats: %+v, %v; want the refusal as the last reload error", st.Reloads, err)
			}
			tc.fix(h)
			time.Sleep(5 * testHealthInterval)
			if !healthy() || !last().Healthy || watchdogStarved(h, hooks) {
				t.Errorf("after the fix: healthy=%v, last announcement %+v, hooks %v", healthy(), last(), h.hookCalls()[hooks:])
			}
			h.k.mu.Lock()
			l, exists := h.k.links["nosuch0"]
			h.k.mu.Unlock()
			if exists && l[1] != 1 {
				t.Errorf("the device that appeared was not brought up: %v", l)
			}
			if !exists {
				return
			}
			// Taken: from now on it is watched like any interface.
			h.k.mu.Lock()
			h.k.links["nosuch0"] = [2]int{1500, 0}
			h.k.mu.Unlock()
			time.Sleep(5 * testHealthInterval)
			if healthy() {
				t.Error("healthy while an interface the daemon brought up is down")
			}
		})
	}
}

// TestReloadRemovingADownInterface: a link seen down stops counting once
// a reload removes its interface block (no event or poll covers it any
// more): the translator is healthy again at once.
func TestReloadRemovingADownInterface(t *testing.T) {
	h, healthy, last := refusedHarness(t, nil)
	defer h.stop()
	base := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	h.k.mu.Lock()
	h.k.links["eth1"] = [2]int{1500, 1}
	h.k.mu.Unlock()
	writeConfig(t, h.cfg, base+"interface \"eth1\" {\n  addresses = [\"203.0.113.33/28\"]\n}\n")
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	h.k.mu.Lock()
	h.k.links["eth1"] = [2]int{1500, 0}
	h.k.mu.Unlock()
	time.Sleep(5 * testHealthInterval)
	if healthy() {
		t.Fatal("healthy while eth1 is down")
	}
	writeConfig(t, h.cfg, base)
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	// At once: the reload's answer comes after the health check.
	if !healthy() || !last().Healthy {
		t.Errorf("after the reload without eth1: healthy=%v, last announcement %+v", healthy(), last())
	}
	time.Sleep(5 * testHealthInterval)
	if !healthy() || !last().Healthy {
		t.Errorf("5 polls later: healthy=%v, last announcement %+v", healthy(), last())
	}
}

// TestRefusedRouteRetryCost: each retry of a refused route block puts in
// the routes of the batch the kernel refused, not every route the daemon
// owns (a million for a million mappings), and the announced prefixes'
// routes, which the kernel took, are not put in again.
func TestRefusedRouteRetryCost(t *testing.T) {
	block := netip.MustParsePrefix("203.0.113.128/25")
	var v4s []string
	for i := range 50 {
		v4s = append(v4s, fmt.Sprintf("198.51.100.%d", 2*i+1))
	}
	base := fmt.Sprintf(baseConfig, mappingBlocks(v4s...))
	h := start(t, base)
	defer h.stop()
	h.k.mu.Lock()
	h.k.refuse = func(r netsetup.Route) bool { return r.Dst == block }
	h.k.mu.Unlock()
	writeConfig(t, h.cfg, base+"route {\n  to = \"203.0.113.128/25\"\n  via = \"192.0.2.99\"\n}\n")
	if _, err := RequestReload(h.sock); err == nil {
		t.Fatal("reload of the refused route block answered no error")
	}
	h.k.mu.Lock()
	n0 := len(h.k.log)
	h.k.mu.Unlock()
	time.Sleep(40 * testHealthInterval)
	// A reload of the same file retries at once.
	if _, err := RequestReload(h.sock); err == nil {
		t.Fatal("retry of the refused route block answered no error")
	}
	h.k.mu.Lock()
	var batches []string
	for _, l := range h.k.log[n0:] {
		if strings.HasPrefix(l, "routes+") {
			batches = append(batches, l)
		}
	}
	h.k.mu.Unlock()
	if len(batches) < 2 {
		t.Errorf("%d retries in 40 health intervals and a reload", len(batches))
	}
	for _, b := range batches {
		if strings.Count(b, "203.0.113.128/25") != 1 || strings.Contains(b, "table 646") {
			t.Errorf("a retry put in %d prefix routes (%.80q...); want the refused route alone", strings.Count(b, "table 646"), b)
			break
		}
	}
	// Once the kernel takes it, the retries end.
	h.k.mu.Lock()
	h.k.refuse = nil
	h.k.mu.Unlock()
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatalf("retry once the kernel takes it: %v", err)
	}
	h.k.mu.Lock()
	n1 := len(h.k.log)
	h.k.mu.Unlock()
	time.Sleep(10 * testHealthInterval)
	h.k.mu.Lock()
	after := h.k.log[n1:]
	h.k.mu.Unlock()
	for _, l := range after {
		if strings.HasPrefix(l, "routes+") {
			t.Errorf("route batch after the refusal ended: %q", l)
		}
	}
}

// inRefusal starts a daemon and reloads it with a route block the kernel
// refuses for good (a gateway not on-link): the daemon is then retrying
// that refusal with its backoff.
func inRefusal(t *testing.T) *harness {
	t.Helper()
	block := netip.MustParsePrefix("203.0.113.128/25")
	h, _, _ := refusedHarness(t, func(r netsetup.Route) bool { return r.Dst == block })
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))+"route {\n  to = \"203.0.113.128/25\"\n  via = \"192.0.2.99\"\n}\n")
	if _, err := RequestReload(h.sock); err == nil {
		h.stop()
		t.Fatal("reload of the refused route block answered no error")
	}
	return h
}

// TestRouteDeletedDuringRefusal: while the kernel refuses part of a
// reload (retried with backoff), a route of ours deleted from outside is
// still put back at once, not only the refused part.
func TestRouteDeletedDuringRefusal(t *testing.T) {
	h := inRefusal(t)
	defer h.stop()
	gone := netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "dmtest0", Table: PolicyTable}
	h.k.mu.Lock()
	delete(h.k.routes, gone)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Route: gone}}
	waitFor(t, "the deleted route back during the refusal", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.routes[gone]
	})
}

// TestRuleAndAddressDeletedDuringRefusal: while a refused reload is
// retried, a policy rule and an interface block's address deleted from
// outside are put back as at any other time (the retry's own path
// covers routes only), with the routes through a gateway in the
// address's subnet (which the kernel deletes without an event), and
// rules deleted without an event are found by the health check's poll.
func TestRuleAndAddressDeletedDuringRefusal(t *testing.T) {
	h := inRefusal(t)
	defer h.stop()
	mine := netsetup.Addr{Dev: "eth0", Prefix: netip.MustParsePrefix("203.0.113.1/28")}
	h.k.mu.Lock()
	want := slices.Clone(h.k.rules)
	had := h.k.addrs[mine]
	h.k.rules = nil
	delete(h.k.addrs, mine)
	h.k.mu.Unlock()
	if len(want) == 0 || !had {
		t.Fatalf("set-up: rules %v, address %v installed %v", want, mine, had)
	}
	// The kernel takes the routes through a gateway in the address's
	// subnet with it, and reports none of them.
	via := netsetup.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Via: netip.MustParseAddr("203.0.113.14")}
	h.k.mu.Lock()
	routed := h.k.routes[via]
	delete(h.k.routes, via)
	h.k.mu.Unlock()
	if !routed {
		t.Fatalf("set-up: no route %v", via)
	}
	h.w.events <- []netsetup.Change{{Rule: want[0]}, {Deleted: mine, Addrs: true}}
	waitFor(t, "the rules, the address and the route via its subnet back during the refusal", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return len(h.k.rules) == len(want) && h.k.addrs[mine] && h.k.routes[via]
	})
	// Rules deleted with no event delivered: the health check's dump
	// finds them missing during a refusal too.
	h.k.mu.Lock()
	h.k.rules = nil
	h.k.mu.Unlock()
	waitFor(t, "the rules back after a health check during the refusal", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return len(h.k.rules) == len(want)
	})
}

// TestRuleEventsWaitForTheRetry: while a failed restore waits for its
// retry, deletions of a rule of ours (a network manager that removes
// rules it did not add, again and again) put back the rules alone; the
// full restore, which replaces every route, keeps its backoff instead of
// running at every event.
func TestRuleEventsWaitForTheRetry(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	gone := netsetup.Route{Dst: netip.MustParsePrefix("198.51.100.10/32"), Dev: "dmtest0", Table: PolicyTable}
	h.k.mu.Lock()
	h.k.failAdd = true
	delete(h.k.routes, gone)
	h.k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Lost: true}}
	waitFor(t, "a failed restore", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.failed > 0
	})
	h.k.mu.Lock()
	ours := h.k.rules[0]
	h.k.mu.Unlock()
	for range 60 {
		h.w.events <- []netsetup.Change{{Rule: ours}}
		time.Sleep(testHealthInterval)
	}
	h.k.mu.Lock()
	tries := h.k.failed
	h.k.failAdd = false
	h.k.mu.Unlock()
	if tries > 10 {
		t.Errorf("%d full restores in 60 health intervals with a rule event in each; want the backoff's few", tries)
	}
	waitFor(t, "the route back once the kernel takes it", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.routes[gone]
	})
}
