package daemon

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestIPv4SideForwardingIsHeld: the kernel forwards IPv4 only from an
// interface whose own forwarding is on, so an IPv4-side interface the
// configuration names (tun.ipv4_interfaces) with forwarding turned off
// black-holed every IPv4 client behind it while healthy: only the tun's
// and the interface blocks' were held. Now it is put back too; one that
// does not exist (yet) is not an error, and an IPv6-side interface's
// IPv4 forwarding (IPv4 from there is refused) is left alone.
func TestIPv4SideForwardingIsHeld(t *testing.T) {
	k := newFakeKernel()
	const uplink, v6side = "net/ipv4/conf/uplink0/forwarding", "net/ipv4/conf/down0/forwarding"
	k.sysctls[uplink], k.sysctls[v6side] = "0", "0"
	cfg := strings.Replace(fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), "    queues = 1\n",
		"    queues = 1\n    ipv4_interfaces = [\"uplink0\", \"notyet0\"]\n    ipv6_interfaces = [\"down0\"]\n", 1)
	h := startWithKernel(t, cfg, k)
	defer h.stop()
	waitFor(t, uplink+" set to 1", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.sysctls[uplink] == "1"
	})
	h.k.mu.Lock()
	h.k.sysctls[uplink] = "0"
	h.k.mu.Unlock()
	waitFor(t, uplink+" back to 1", func() bool {
		h.k.mu.Lock()
		defer h.k.mu.Unlock()
		return h.k.sysctls[uplink] == "1"
	})
	if !healthyNow(&daemonProc{sock: h.sock}) {
		t.Errorf("unhealthy with an IPv4-side interface that does not exist")
	}
	h.k.mu.Lock()
	defer h.k.mu.Unlock()
	if got := h.k.sysctls[v6side]; got != "0" {
		t.Errorf("the IPv6 side's IPv4 forwarding set to %s", got)
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

// TestUnreadableForwardingSysctls: a sysctl read that fails for want of
// descriptors or memory (EMFILE, ENFILE) says nothing about forwarding:
// the daemon stays healthy and announced (review H4: 1000 idle control
// clients made every read fail with EMFILE, which withdrew every prefix
// while traffic flowed), until that has lasted sysctlBlindLimit; it is
// healthy again once they can be read. A read refused for lack of
// permission is a fault at once.
func TestUnreadableForwardingSysctls(t *testing.T) {
	defer func(l time.Duration) { sysctlBlindLimit = l }(sysctlBlindLimit)
	sysctlBlindLimit = 500 * time.Millisecond
	for _, tc := range []struct {
		err    error
		atOnce bool // unhealthy at once, not after sysctlBlindLimit
	}{
		{unix.EMFILE, false},
		{unix.ENFILE, false},
		{unix.EACCES, true},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
			defer h.stop()
			last := func() Announcement {
				ups, _ := h.ann.snapshot()
				return ups[len(ups)-1]
			}
			healthy := func() bool { return healthyNow(&daemonProc{sock: h.sock}) && last().Healthy }
			waitFor(t, "healthy", healthy)
			setErr := func(err error) {
				h.k.mu.Lock()
				h.k.readSysctlErr = err
				h.k.mu.Unlock()
			}
			failing := time.Now()
			setErr(tc.err)
			defer setErr(nil) // the stop restores the sysctls
			if tc.atOnce {
				waitFor(t, "unhealthy", func() bool { return !healthy() })
				if took := time.Since(failing); took >= sysctlBlindLimit {
					t.Errorf("unhealthy only after %v", took)
				}
			} else {
				for time.Since(failing) < sysctlBlindLimit/2 {
					if !healthy() {
						t.Fatalf("unhealthy %v after sysctl reads began failing with %v (limit %v)",
							time.Since(failing), tc.err, sysctlBlindLimit)
					}
					time.Sleep(20 * time.Millisecond)
				}
				waitFor(t, "unhealthy once the limit passed", func() bool { return !healthy() })
				if took := time.Since(failing); took < sysctlBlindLimit {
					t.Errorf("unhealthy after %v, before the limit %v", took, sysctlBlindLimit)
				}
			}
			setErr(nil)
			waitFor(t, "healthy once readable again", healthy)
		})
	}
}
