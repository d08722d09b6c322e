package bgp

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// mem is the memory of the speaker helper process.
type mem struct {
	RSSKiB    int    `json:"rss_kib"`    // VmRSS: resident now
	HWMKiB    int    `json:"hwm_kib"`    // VmHWM: the most ever resident
	HeapInuse uint64 `json:"heap_inuse"` // Go heap in use, bytes
	Goroutine int    `json:"goroutines"` // live goroutines
}

func (m mem) String() string {
	return fmt.Sprintf("RSS %.1f MB (peak %.1f MB), Go heap in use %.1f MB, %d goroutines",
		float64(m.RSSKiB)/1024, float64(m.HWMKiB)/1024, float64(m.HeapInuse)/(1<<20), m.Goroutine)
}

// readMem reads this process's memory from /proc/self/status and the Go
// runtime.
func readMem() (mem, error) {
	var m mem
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			m.RSSKiB = n
		case "VmHWM":
			m.HWMKiB = n
		}
	}
	runtime.GC() // live heap, not garbage waiting for the next cycle
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapInuse = ms.HeapInuse
	m.Goroutine = runtime.NumGoroutine()
	return m, sc.Err()
}

func (r *remoteSpeaker) mem(t *testing.T) mem {
	t.Helper()
	var m mem
	if err := json.Unmarshal([]byte(r.do(t, "mem")), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// floodRoutes is how many routes router A floods the speaker with: the
// size that grew the speaker from 31 MB to 203 MB before it had a policy.
const floodRoutes = 131072

// birdFloodConf is router A: it announces a prefix of its own over IPv4
// and, once the static protocol "flood" is enabled, floodRoutes IPv6 /64s
// of 2001:db8::/32 over IPv6.
func birdFloodConf() string {
	var b strings.Builder
	b.WriteString(`
router id 192.0.2.1;
protocol device { scan time 1; }
protocol static mine4 { ipv4; route 203.0.113.0/26 unreachable; }
protocol bgp xlat4 {
	local 192.0.2.1 as 64500;
	neighbor 192.0.2.2 as 64496;
	hold time 9;
	connect retry time 1;
	ipv4 { import all; export where proto = "mine4"; };
}
protocol bgp xlat6 {
	local 2001:db8:ff:a::1 as 64500;
	neighbor 2001:db8:ff:a::2 as 64496;
	hold time 9;
	connect retry time 1;
	error wait time 1, 5;
	ipv6 { import all; export where proto = "flood"; };
}
protocol static flood {
	disabled;
	ipv6;
`)
	for i := range floodRoutes {
		fmt.Fprintf(&b, "\troute 2001:db8:%x:%x::/64 unreachable;\n", 0x10+i>>16, i&0xffff)
	}
	b.WriteString("}\n")
	return b.String()
}

// birdPeerBConf is router B, in another AS, with prefixes of its own.
const birdPeerBConf = `
router id 192.0.2.5;
protocol device { scan time 1; }
protocol static mine4 { ipv4; route 203.0.113.64/26 unreachable; }
protocol static mine6 { ipv6; route 2001:db8:b0::/48 unreachable; }
protocol bgp xlat4 {
	local 192.0.2.5 as 64501;
	neighbor 192.0.2.6 as 64496;
	hold time 9;
	connect retry time 1;
	ipv4 { import all; export where proto = "mine4"; };
}
protocol bgp xlat6 {
	local 2001:db8:ff:b::1 as 64501;
	neighbor 2001:db8:ff:b::2 as 64496;
	hold time 9;
	connect retry time 1;
	ipv6 { import all; export where proto = "mine6"; };
}
`

// TestSpeakerBIRDBorder puts the speaker between two BIRD routers in
// different ASes, each announcing prefixes of its own, and checks that it
// is no transit AS: each router learns only the translator's prefixes.
// Then router A floods it with 131,072 routes: the session with A over
// IPv6 is ended by the max-prefix limit (four times: it comes back after
// PrefixLimitRestart and is flooded again), the speaker's memory stays
// flat, the other sessions stay up and router B never sees a flooded route.
//
// With MAP646_BGP_FLOOD_NOLIMIT=1 the limit for A is raised to 1,000,000
// instead, to measure what the flood costs when only the import policy
// stands in its way (GoBGP keeps rejected routes in its Adj-RIB-In).
func TestSpeakerBIRDBorder(t *testing.T) {
	netnstest.Require(t, "bg-")
	requireBIRD(t)
	noLimit := os.Getenv("MAP646_BGP_FLOOD_NOLIMIT") == "1"
	ra := netnstest.New(t, "bg-a-")
	rb := netnstest.New(t, "bg-b-")
	spk := netnstest.New(t, "bg-s-")
	netnstest.Veth(t, ra, "dn0", spk, "a0")
	netnstest.Veth(t, rb, "dn0", spk, "b0")
	ra.Run("ip", "addr", "add", "192.0.2.1/30", "dev", "dn0")
	ra.Run("ip", "addr", "add", "2001:db8:ff:a::1/64", "dev", "dn0", "nodad")
	rb.Run("ip", "addr", "add", "192.0.2.5/30", "dev", "dn0")
	rb.Run("ip", "addr", "add", "2001:db8:ff:b::1/64", "dev", "dn0", "nodad")
	spk.Run("ip", "addr", "add", "192.0.2.2/30", "dev", "a0")
	spk.Run("ip", "addr", "add", "2001:db8:ff:a::2/64", "dev", "a0", "nodad")
	spk.Run("ip", "addr", "add", "192.0.2.6/30", "dev", "b0")
	spk.Run("ip", "addr", "add", "2001:db8:ff:b::2/64", "dev", "b0", "nodad")

	a := startBIRD(t, ra, birdFloodConf())
	b := startBIRD(t, rb, birdPeerBConf)
	const aV6 = "2001:db8:ff:a::1"
	aLimit := uint32(0) // the default
	if noLimit {
		aLimit = 1000000
	}
	s := startRemoteSpeaker(t, spk, Config{
		LocalAS: 64496, RouterID: netip.MustParseAddr("192.0.2.2"), ListenPort: 179,
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second,
		PrefixLimitRestart: 5 * time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("192.0.2.1"), RemoteAS: 64500},
			{Address: netip.MustParseAddr(aV6), RemoteAS: 64500, MaxPrefixes: aLimit},
			{Address: netip.MustParseAddr("192.0.2.5"), RemoteAS: 64501},
			{Address: netip.MustParseAddr("2001:db8:ff:b::1"), RemoteAS: 64501},
		},
	})
	s.do(t, "update true 198.51.100.0/24 2001:db8:64::/96")

	neighbor := func(st Status, addr string) NeighborStatus {
		for _, n := range st.Neighbors {
			if n.Address == addr {
				return n
			}
		}
		t.Fatalf("no neighbor %s in %+v", addr, st.Neighbors)
		return NeighborStatus{}
	}
	waitSpeaker := func(what string, timeout time.Duration, ok func(Status) bool) Status {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for {
			st := s.status(t)
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("speaker: not %s: %+v", what, st.Neighbors)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Every session up and the routers' own prefixes received.
	waitSpeaker("all sessions up with the routers' prefixes", 30*time.Second, func(st Status) bool {
		up := 0
		for _, n := range st.Neighbors {
			if n.Established {
				up++
			}
		}
		return up == 4 && neighbor(st, "192.0.2.1").Received == 1 && neighbor(st, "192.0.2.5").Received == 1 &&
			neighbor(st, "2001:db8:ff:b::1").Received == 1
	})
	noTransit := func() {
		t.Helper()
		a.waitRoutes(t, "xlat4", "198.51.100.0/24")
		a.waitRoutes(t, "xlat6", "2001:db8:64::/96")
		b.waitRoutes(t, "xlat4", "198.51.100.0/24")
		b.waitRoutes(t, "xlat6", "2001:db8:64::/96")
	}
	noTransit()
	time.Sleep(2 * time.Second) // a leak would arrive well within this
	noTransit()
	before := s.mem(t)
	t.Logf("speaker before the flood: %v", before)

	// The flood.
	if out, err := exec.Command("birdc", "-s", a.sock, "enable", "flood").CombinedOutput(); err != nil {
		t.Fatalf("birdc enable flood: %v: %s", err, out)
	}
	start := time.Now()
	if noLimit {
		st := waitSpeaker("holding the whole flood", 5*time.Minute, func(st Status) bool {
			return neighbor(st, aV6).Received == floodRoutes
		})
		t.Logf("flood of %d routes held (rejected by the import policy) after %.1f s", floodRoutes, time.Since(start).Seconds())
		runtime.GC()
		after := s.mem(t)
		t.Logf("speaker holding the flood in its Adj-RIB-In: %v (%+.1f MB RSS)", after, float64(after.RSSKiB-before.RSSKiB)/1024)
		if n := neighbor(st, aV6); !n.Established || n.PrefixLimitHits != 0 {
			t.Errorf("flooding session %+v: want it up, never limited", n)
		}
		noTransit()
		return
	}
	waitSpeaker("ending the flooding session", time.Minute, func(st Status) bool { return neighbor(st, aV6).PrefixLimitHits >= 1 })
	t.Logf("flooding session ended by the limit %.1f s after the flood started", time.Since(start).Seconds())
	time.Sleep(time.Second)
	after1 := s.mem(t)
	t.Logf("speaker after the first flood: %v", after1)
	// After PrefixLimitRestart the session is allowed up again, is flooded
	// again and ended again.
	st := waitSpeaker("ending the flooding session again", time.Minute, func(st Status) bool { return neighbor(st, aV6).PrefixLimitHits >= 2 })
	if d := time.Since(start); d < 5*time.Second {
		t.Errorf("second limit %v after the flood started: the restart did not wait", d)
	}
	time.Sleep(time.Second)
	after2 := s.mem(t)
	t.Logf("speaker after the second flood: %v", after2)
	for i := 3; i <= 4; i++ {
		st = waitSpeaker("ending the flooding session again", time.Minute, func(st Status) bool { return neighbor(st, aV6).PrefixLimitHits >= uint64(i) })
		time.Sleep(time.Second)
		t.Logf("speaker after flood %d: %v", i, s.mem(t))
	}
	for _, addr := range []string{"192.0.2.1", "192.0.2.5", "2001:db8:ff:b::1"} {
		if n := neighbor(st, addr); !n.Established || n.Flaps != 0 || n.PrefixLimitHits != 0 {
			t.Errorf("session %s disturbed by the flood on another: %+v", addr, n)
		}
	}
	if n := neighbor(st, aV6); n.Established && n.Received > 1000 {
		t.Errorf("flooding session up holding %d routes, over the default limit", n.Received)
	}
	// Router A's IPv6 session is down half of the time now; B must still
	// learn nothing but the translator's prefixes.
	b.waitRoutes(t, "xlat4", "198.51.100.0/24")
	b.waitRoutes(t, "xlat6", "2001:db8:64::/96")
	a.waitRoutes(t, "xlat4", "198.51.100.0/24")
	// Flat. What the speaker keeps is bounded by the limit: its live heap
	// does not grow from flood to flood. While a flood is being cut, the
	// UPDATEs GoBGP has read ahead of its main loop (parsed, in an
	// unbounded queue) add a transient peak, which grows when the machine
	// is loaded; it must stay well below the cost of the whole flood
	// (over 130 MB without the limit).
	for _, m := range []mem{after1, after2} {
		if m.HeapInuse > before.HeapInuse+8<<20 {
			t.Errorf("live heap grew from %v to %v", before, m)
		}
	}
	const peakSlackKiB = 64 << 10
	if raceDetector {
		t.Log("race detector on: the peak RSS bound does not apply")
	} else if peak := max(after1.HWMKiB, after2.HWMKiB); peak-before.RSSKiB > peakSlackKiB {
		t.Errorf("speaker grew from %v to a peak of %.1f MB", before, float64(peak)/1024)
	}
}
