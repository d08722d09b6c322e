package daemon

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// repairCount is the daemon's count of kernel repairs of kind what
// (map646_kernel_repairs_total), -1 if the stats cannot be read.
func repairCount(h *harness, what string) int {
	st, err := QueryStats(h.sock)
	if err != nil {
		return -1
	}
	for _, c := range st.Repairs {
		if c.Kind == what {
			return int(c.Value)
		}
	}
	return 0
}

// TestForwardingSysctlsChangedFromOutsideArePutBack: host mode needs the
// kernel's forwarding on (RFC 1812, RFC 8200), globally and on the tun,
// for traffic to go into and out of the translator. A forwarding sysctl
// turned off from outside (`sysctl --system` with a hardening baseline)
// is put back at the next health poll, with a warning, and counted
// (map646_kernel_repairs_total{what="sysctl"}). Before, they were written
// once at the start: everything was black-holed while /healthz said ok.
func TestForwardingSysctlsChangedFromOutsideArePutBack(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	for i, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net/ipv4/conf/dmtest0/forwarding"} {
		t.Run(key, func(t *testing.T) {
			h.k.mu.Lock()
			h.k.sysctls[key] = "0"
			h.k.mu.Unlock()
			waitFor(t, key+" back to 1", func() bool {
				h.k.mu.Lock()
				defer h.k.mu.Unlock()
				return h.k.sysctls[key] == "1"
			})
			waitFor(t, "the repair counted", func() bool { return repairCount(h, "sysctl") == i+1 })
			if !healthyNow(&daemonProc{sock: h.sock}) {
				t.Errorf("unhealthy after %s was put back", key)
			}
		})
	}
}

// TestForwardingSysctlThatCannotBePutBackIsUnhealthy: a forwarding sysctl
// the daemon cannot put back (a read-only /proc/sys) makes it unhealthy:
// the announcements withdraw and the watchdog is no longer fed (a
// restart sets them before anything else), until it is back; the stop
// restores the value the translator found at its start.
func TestForwardingSysctlThatCannotBePutBackIsUnhealthy(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	stopped := false
	defer func() {
		if !stopped {
			h.stop()
		}
	}()
	h.k.mu.Lock()
	h.k.failSysctl = true
	h.k.sysctls["net.ipv4.ip_forward"] = "0"
	h.k.mu.Unlock()
	last := func() Announcement {
		ups, _ := h.ann.snapshot()
		return ups[len(ups)-1]
	}
	waitFor(t, "unhealthy and withdrawn", func() bool { return !healthyNow(&daemonProc{sock: h.sock}) && !last().Healthy })
	n := len(h.hookCalls())
	waitFor(t, "the watchdog told", func() bool {
		cs := h.hookCalls()
		return len(cs) > n && cs[len(cs)-1] == "health false"
	})
	h.k.mu.Lock()
	h.k.failSysctl = false
	h.k.mu.Unlock()
	waitFor(t, "healthy and announced again", func() bool { return healthyNow(&daemonProc{sock: h.sock}) && last().Healthy })
	h.k.mu.Lock()
	fwd := h.k.sysctls["net.ipv4.ip_forward"]
	h.k.mu.Unlock()
	if fwd != "1" {
		t.Errorf("ip_forward %s after it could be put back", fwd)
	}
	stopped = true
	h.stop()
	if fwd := h.k.sysctls["net.ipv4.ip_forward"]; fwd != "0" {
		t.Errorf("ip_forward %s after the stop; want 0, as found at the start", fwd)
	}
}

// TestForwardingSysctlHeldElsewhereWarnsLessAndLess: a forwarding sysctl
// someone holds at the other value on purpose is still put back at every
// health poll (health depends on it) and every repair counted, but the
// warning comes at the 1st, 2nd, 4th, 8th... repair in a row, saying how
// many repairs it covers: before, one WARN per key per health interval
// for ever (review H11).
func TestForwardingSysctlHeldElsewhereWarnsLessAndLess(t *testing.T) {
	var logs lockedBuffer
	k := newFakeKernel()
	h := startWith(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	defer h.stop()
	const key = "net.ipv4.ip_forward"
	h.k.mu.Lock()
	h.k.holdSysctls = map[string]string{key: "0"}
	h.k.sysctls[key] = "0"
	h.k.mu.Unlock()
	waitFor(t, "20 repairs", func() bool { return repairCount(h, "sysctl") >= 20 })
	h.k.mu.Lock()
	h.k.holdSysctls = nil
	h.k.mu.Unlock()
	waitFor(t, key+" back to 1", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.sysctls[key] == "1"
	})
	n := repairCount(h, "sysctl")
	var warned []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "a forwarding sysctl was changed from outside") && strings.Contains(l, "sysctl="+key) {
			_, since, _ := strings.Cut(l, "repairs_since_last_warning=")
			warned = append(warned, since)
		}
	}
	// Repairs 1, 2, 4, 8, 16 (and 32 if the poll ran that often).
	want := []string{"1", "1", "2", "4", "8", "16"}
	if n < 32 {
		want = want[:5]
	}
	if fmt.Sprint(warned) != fmt.Sprint(want) {
		t.Errorf("after %d repairs, warnings covering %v repairs, want %v", n, warned, want)
	}

	// Let go of (polls find it right), then changed again: a new
	// change, warned at once.
	time.Sleep(10 * testHealthInterval)
	h.k.mu.Lock()
	h.k.sysctls[key] = "0"
	h.k.mu.Unlock()
	waitFor(t, "a warning for the new change", func() bool { return strings.Count(logs.String(), "sysctl="+key) == len(want)+1 })
}

// TestRepairWarningsAtPowersOfTwo: the warnings of repairWarnings, for
// a sequence of polls (r: repaired, k: found right).
func TestRepairWarningsAtPowersOfTwo(t *testing.T) {
	for _, c := range []struct {
		polls string
		want  []uint64 // the since of each warning, in order
	}{
		{"r", []uint64{1}},
		{"rrrrrrrrr", []uint64{1, 1, 2, 4}},
		{"rrrkrr", []uint64{1, 1, 1, 1}},
		{"kkrk", []uint64{1}},
		{"rrrrrrrrrrrrrrrrr", []uint64{1, 1, 2, 4, 8}},
	} {
		var w repairWarnings
		var got []uint64
		for _, p := range c.polls {
			if p == 'k' {
				w.kept("k")
				continue
			}
			if since, due := w.repaired("k"); due {
				got = append(got, since)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: warnings %v, want %v", c.polls, got, c.want)
		}
	}
}
