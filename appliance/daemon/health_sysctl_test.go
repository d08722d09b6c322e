package daemon

import (
	"fmt"
	"testing"
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
