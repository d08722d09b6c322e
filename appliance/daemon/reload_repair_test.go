package daemon

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReloadTheKernelRefusesIsRetriedAndUnhealthy: a reload whose new
// route the kernel refuses is answered with the error, leaves the daemon
// unhealthy (the last announcement withdraws: the new prefix would be a
// black hole) and is retried, with the restore's backoff, until the kernel
// takes it, without another reload; then the daemon is healthy and the
// prefix announced. A reload of the same file meanwhile retries at once and
// says the kernel still refuses.
func TestReloadTheKernelRefusesIsRetriedAndUnhealthy(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	const route = "198.51.100.30/32 dev dmtest0 table 646"
	healthy := func() bool {
		st, err := QueryStats(h.sock)
		return err == nil && st.Healthy
	}
	last := func() Announcement {
		ups, _ := h.ann.snapshot()
		return ups[len(ups)-1]
	}
	h.k.mu.Lock()
	h.k.failAdd = true
	h.k.mu.Unlock()
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.30")))
	res, err := RequestReload(h.sock)
	if err == nil || !strings.Contains(err.Error(), "network is down") || res == nil || !res.InUse {
		t.Fatalf("reload answered %+v, %v; want the kernel's refusal, the file in use", res, err)
	}
	// Unhealthy from the reload's answer on, not from the next poll.
	if healthy() || last().Healthy {
		t.Errorf("healthy=%v, last announcement %+v, while the new route is missing", healthy(), last())
	}
	time.Sleep(20 * testHealthInterval)
	if healthy() || last().Healthy || slices.Contains(h.k.routeSet(), route) {
		t.Errorf("after 20 health polls: healthy=%v, last announcement %+v, routes %v", healthy(), last(), h.k.routeSet())
	}
	h.k.mu.Lock()
	tries := h.k.failed
	h.k.mu.Unlock()
	if tries < 3 || tries > 10 {
		t.Errorf("%d attempts in 20 health intervals; want a few, backing off", tries)
	}
	res, err = RequestReload(h.sock)
	h.k.mu.Lock()
	retried := h.k.failed > tries
	h.k.mu.Unlock()
	if err == nil || !res.Unchanged || !res.InUse || !retried || !strings.Contains(err.Error(), "network is down") {
		t.Errorf("reload of the same file: %+v, %v, retried at once %v; want unchanged, retried, still refused", res, err, retried)
	}

	h.k.mu.Lock()
	h.k.failAdd = false // the kernel takes routes again
	h.k.mu.Unlock()
	waitFor(t, "healthy once the kernel took the route", healthy)
	if !slices.Contains(h.k.routeSet(), route) {
		t.Errorf("routes %v; want %s", h.k.routeSet(), route)
	}
	if a := last(); !a.Healthy || !slices.Contains(a.IPv4, netip.MustParsePrefix("198.51.100.30/32")) {
		t.Errorf("last announcement %+v; want healthy with 198.51.100.30/32", a)
	}
	st, err := QueryStats(h.sock)
	if err != nil || st.Reloads.Failed != 2 {
		t.Errorf("stats %+v, %v; want 2 failed reloads", st.Reloads, err)
	}
}
