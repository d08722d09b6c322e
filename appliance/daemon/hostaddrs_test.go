package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/netsetup"
	"github.com/map646/map646/stack/xlat"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestHostAddrsAreOwnAddresses (host mode): every IPv4 address of the
// host, not only the interface blocks', is one of the engine's own
// addresses from the start, follows address events, survives reloads,
// and a failed listing is retried at the next health poll.
func TestHostAddrsAreOwnAddresses(t *testing.T) {
	k := newFakeKernel()
	dhcp, lo := netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("127.0.0.1/8")
	k.host = []netip.Prefix{dhcp, lo, dhcp}
	h := startWithKernel(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k)
	defer h.stop()
	own := func() []netip.Prefix { return h.eng.Load().Config().Policy.OwnAddrs }
	count := func(p netip.Prefix) int {
		n := 0
		for _, o := range own() {
			if o == p {
				n++
			}
		}
		return n
	}
	file := netip.MustParsePrefix("203.0.113.1/28") // the interface block's
	if count(dhcp) != 1 || count(file) < 1 || count(lo) != 0 {
		t.Fatalf("own addresses at start: %v, want %v once, %v, without %v", own(), dhcp, file, lo)
	}

	// ip addr add 100.64.0.1/10 dev docker0
	cgn := netip.MustParsePrefix("100.64.0.1/10")
	k.mu.Lock()
	k.host = append(k.host, cgn)
	k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Addrs: true}}
	waitFor(t, "the added address among the own ones", func() bool { return count(cgn) == 1 })

	// A reload keeps them, with the new file's mappings.
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.20")))
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := h.eng.Load().Config().Map.Table().Lookup4([4]byte{198, 51, 100, 20}); !ok || count(cgn) != 1 || count(dhcp) != 1 {
		t.Fatalf("after a reload: mapped %v, own addresses %v", ok, own())
	}

	// The listing fails: the engine keeps what it had, and the next
	// health poll after it works again catches up.
	k.mu.Lock()
	k.hostErr = errors.New("netlink: no buffer space")
	k.host = slices.DeleteFunc(k.host, func(p netip.Prefix) bool { return p == cgn })
	k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Addrs: true}}
	time.Sleep(3 * testHealthInterval)
	if count(cgn) != 1 {
		t.Fatalf("own addresses changed while they could not be read: %v", own())
	}
	k.mu.Lock()
	k.hostErr = nil
	k.mu.Unlock()
	waitFor(t, "the removed address gone once the listing works", func() bool { return count(cgn) == 0 && count(dhcp) == 1 })

	// Lost events: read again.
	k.mu.Lock()
	k.host = append(k.host, cgn)
	k.mu.Unlock()
	h.w.events <- []netsetup.Change{{Lost: true}}
	waitFor(t, "the address read again after lost events", func() bool { return count(cgn) == 1 })
}

func TestOwnHostAddrs(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("203.0.113.5/24"), netip.MustParsePrefix("127.0.0.1/8"),
		netip.MustParsePrefix("169.254.1.1/16"), netip.MustParsePrefix("192.0.2.1/24"),
		netip.MustParsePrefix("203.0.113.5/24"), netip.MustParsePrefix("2001:db8::1/64"), {},
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("203.0.113.5/24")}
	if got := ownHostAddrs(in); !slices.Equal(got, want) {
		t.Errorf("ownHostAddrs = %v, want %v", got, want)
	}
	if in[0] != netip.MustParsePrefix("203.0.113.5/24") {
		t.Error("ownHostAddrs changed its argument")
	}
}

// TestMappedHostAddrIsTheServers: a host address that a mapping maps (a
// /32 on a dummy interface, for announcing it) is left out of the
// engine's own addresses, so that its server is reached both ways instead
// of its traffic being dropped as own_address; a reload that unmaps it
// makes it the host's again.
func TestMappedHostAddrIsTheServers(t *testing.T) {
	k := newFakeKernel()
	mapped, other := netip.MustParsePrefix("198.51.100.10/32"), netip.MustParsePrefix("192.0.2.1/24")
	k.host = []netip.Prefix{mapped, other}
	h := startWithKernel(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k)
	defer h.stop()
	own := func() []netip.Prefix { return h.eng.Load().Config().Policy.OwnAddrs }
	if slices.Contains(own(), mapped) || !slices.Contains(own(), other) {
		t.Fatalf("own addresses %v: want %v, not the mapped %v", own(), other, mapped)
	}
	// The engine translates to the server: a client's UDP datagram to
	// the mapped address comes out as IPv6 to 2001:db8:6::10.
	w := h.eng.Load().NewWorker()
	pkt := udp4("192.0.2.77", "198.51.100.10")
	buf := make([]byte, xlat.Headroom+len(pkt)+64)
	copy(buf[xlat.Headroom:], pkt)
	res := w.Process(buf, xlat.Headroom, xlat.Headroom+len(pkt), nil, nil)
	w.Flush()
	if res.Verdict != xlat.Forward || header.IPv6(buf[res.Start:res.End]).DestinationAddress() != tcpip.AddrFrom16(netip.MustParseAddr("2001:db8:6::10").As16()) {
		t.Errorf("client -> mapped host address: %+v; want translated to its server", res)
	}
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.20")))
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(own(), mapped) {
		t.Errorf("own addresses %v after the mapping went: want %v", own(), mapped)
	}
}

// TestLookupKnowsHostAddrs (host mode): map646 lookup says that the
// host's addresses, inside the prefix too, are the translator's own and
// their subnets' broadcast addresses broadcast ones, with the drop
// reason, unless a mapping maps the address (its server's); and each
// answer is what the running engine does with a packet to the address.
func TestLookupKnowsHostAddrs(t *testing.T) {
	k := newFakeKernel()
	k.host = []netip.Prefix{netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.10/32")}
	h := startWithKernel(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k)
	defer h.stop()
	for _, tc := range []struct {
		addr, by, drop string
	}{
		{"198.51.100.1", "prefix", "own_address"},           // a host address
		{"2001:db8:64::c633:6401", "prefix", "own_address"}, // the prefix embedding it
		{"198.51.100.255", "prefix", "broadcast"},           // its subnet's broadcast address
		{"2001:db8:64::c633:64ff", "prefix", "broadcast"},
		{"198.51.100.10", "eam", ""}, // a mapped host address: its server's
		{"2001:db8:6::10", "eam", ""},
		{"198.51.100.2", "prefix", ""}, // a neighbour
		{"2001:db8:64::c633:6402", "prefix", ""},
		{"203.0.113.1", "prefix", "own_address"}, // the interface block's
	} {
		a := netip.MustParseAddr(tc.addr)
		r, err := QueryLookup(h.sock, a)
		if err != nil {
			t.Fatal(err)
		}
		if r.By != tc.by || r.Drop != tc.drop || !strings.Contains(r.Note, tc.drop) || tc.drop == "" && r.Note != "" {
			t.Errorf("lookup %s = %s (by %s, drop %q); want by %s, drop %q", a, r, r.By, r.Drop, tc.by, tc.drop)
		}
		// What the engine does with a packet to it: from a client, or
		// from the mapped server.
		var pkt []byte
		if a.Is4() {
			pkt = udp4("192.0.2.77", tc.addr)
		} else {
			pkt = udp6("2001:db8:6::10", tc.addr)
		}
		buf := make([]byte, xlat.Headroom+len(pkt)+64)
		copy(buf[xlat.Headroom:], pkt)
		w := h.eng.Load().NewWorker()
		res := w.Process(buf, xlat.Headroom, xlat.Headroom+len(pkt), nil, nil)
		w.Flush()
		switch why := res.Reason.String(); {
		case tc.drop != "" && (res.Verdict != xlat.Drop || why != tc.drop):
			t.Errorf("UDP to %s: verdict %d %s; lookup says it is dropped as %s", a, res.Verdict, why, tc.drop)
		case tc.drop == "" && (why == "own_address" || why == "broadcast" || why == "denied"):
			t.Errorf("UDP to %s: dropped as %s; lookup says nothing of it", a, why)
		}
	}
}

// udp6 is udp4 for IPv6.
func udp6(src, dst string) []byte {
	s, d := tcpip.AddrFrom16(netip.MustParseAddr(src).As16()), tcpip.AddrFrom16(netip.MustParseAddr(dst).As16())
	payload := []byte("hello")
	n := header.UDPMinimumSize + len(payload)
	b := make([]byte, header.IPv6MinimumSize+n)
	header.IPv6(b).Encode(&header.IPv6Fields{PayloadLength: uint16(n), TransportProtocol: header.UDPProtocolNumber, HopLimit: 64, SrcAddr: s, DstAddr: d})
	u := header.UDP(b[header.IPv6MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 53, Length: uint16(n)})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, s, d, uint16(n))
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, xsum)))
	return b
}

// udp4 is a UDP datagram from src to dst, with its checksums.
func udp4(src, dst string) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	payload := []byte("hello")
	b := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(b)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(s), DstAddr: tcpip.AddrFrom4(d)})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(b[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 40000, DstPort: 53, Length: uint16(header.UDPMinimumSize + len(payload))})
	copy(u.Payload(), payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, tcpip.AddrFrom4(s), tcpip.AddrFrom4(d), u.Length())
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, xsum)))
	return b
}

// TestFailedSubscriptionIsReplaced: when the netlink subscription fails
// (a read error other than lost events), the host's addresses are read
// again at each attempt to subscribe anew (which backs off while it
// fails), and once subscribed again events are followed as before, and
// what was missed is put back.
func TestFailedSubscriptionIsReplaced(t *testing.T) {
	k := newFakeKernel()
	h := startWithKernel(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k)
	defer h.stop()
	own := func(p netip.Prefix) bool { return slices.Contains(h.eng.Load().Config().Policy.OwnAddrs, p) }
	resubs := func() []*fakeWatcher {
		h.watchMu.Lock()
		defer h.watchMu.Unlock()
		return slices.Clone(h.resubs)
	}

	h.watchMu.Lock()
	h.watchErr = errors.New("socket: too many open files")
	h.watchMu.Unlock()
	h.w.fail <- errors.New("recvmsg: bad file descriptor")
	// ip route del 198.51.100.10/32 table 646, unheard.
	const route = "198.51.100.10/32 dev dmtest0 table 646"
	k.mu.Lock()
	for r := range k.routes {
		if r.String() == route {
			delete(k.routes, r)
		}
	}
	k.mu.Unlock()
	if slices.Contains(k.routeSet(), route) {
		t.Fatalf("routes %v: the test lost its route", k.routeSet())
	}
	// While it cannot subscribe, an address added is seen all the same.
	a := netip.MustParsePrefix("192.0.2.1/24")
	k.mu.Lock()
	k.host = append(k.host, a)
	k.mu.Unlock()
	waitFor(t, "an address added while unsubscribed", func() bool { return own(a) })

	h.watchMu.Lock()
	h.watchErr = nil
	h.watchMu.Unlock()
	waitFor(t, "subscribed again", func() bool { return len(resubs()) == 1 })
	// A route deleted while no one listened is put back (lost events).
	waitFor(t, "the route deleted unheard put back", func() bool { return slices.Contains(k.routeSet(), route) })
	// The new subscription's events are followed.
	b := netip.MustParsePrefix("100.64.0.1/10")
	k.mu.Lock()
	k.host = append(k.host, b)
	k.mu.Unlock()
	resubs()[0].events <- []netsetup.Change{{Addrs: true}}
	waitFor(t, "an address event on the new subscription", func() bool { return own(b) })
	if n := len(resubs()); n != 1 {
		t.Errorf("%d subscriptions made again; want 1", n)
	}
}

// TestHostAddrEventsLogOnlyRefusedChanges: an address event reloads the
// engine and is logged at info level only when the host's addresses the
// engine refuses change; an address that changes nothing (one among the
// file's own addresses already, a mapped one, a loopback one) neither
// reloads nor logs beyond debug, and the warning about a mapped host
// address comes when that set changes, not at every event. Review H4:
// 100 veth create/delete cycles wrote 201 info lines.
func TestHostAddrEventsLogOnlyRefusedChanges(t *testing.T) {
	k := newFakeKernel()
	dhcp := netip.MustParsePrefix("192.0.2.1/24")
	k.host = []netip.Prefix{dhcp}
	var logs lockedBuffer
	h := startWith(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")), k,
		func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	defer h.stop()
	var (
		file   = netip.MustParsePrefix("203.0.113.1/28") // the interface block's
		mapped = netip.MustParsePrefix("198.51.100.10/32")
		lo     = netip.MustParsePrefix("127.0.0.2/8")
		cgn    = netip.MustParsePrefix("100.64.0.1/10")
	)
	const refusedLine, mappedLine = "the translator refuses changed", "host addresses that are mapped"
	steps := []struct {
		name       string
		host       []netip.Prefix
		reload     bool
		info, warn int // lines
	}{
		{"the interface block's address", []netip.Prefix{dhcp, file}, false, 0, 0},
		{"a loopback address", []netip.Prefix{dhcp, file, lo}, false, 0, 0},
		{"a mapped address", []netip.Prefix{dhcp, file, lo, mapped}, false, 0, 1},
		{"the mapped address again, unchanged", []netip.Prefix{mapped, dhcp, file, lo}, false, 0, 0},
		{"the mapped address gone", []netip.Prefix{dhcp}, false, 0, 0},
		{"an address the engine must refuse", []netip.Prefix{dhcp, cgn}, true, 1, 0},
		{"it goes", []netip.Prefix{dhcp}, true, 1, 0},
	}
	for round := range 3 { // as containers come and go
		for _, st := range steps {
			before := logs.String()
			eng := h.eng.Load().Config()
			k.mu.Lock()
			k.host = st.host
			reads := k.hostReads
			k.mu.Unlock()
			h.w.events <- []netsetup.Change{{Addrs: true}}
			waitFor(t, st.name+": the addresses read", func() bool {
				k.mu.Lock()
				defer k.mu.Unlock()
				return k.hostReads > reads
			})
			if st.reload {
				waitFor(t, st.name+": the engine reloaded", func() bool { return h.eng.Load().Config() != eng })
			}
			time.Sleep(3 * testHealthInterval) // a reload that should not come
			if reloaded := h.eng.Load().Config() != eng; reloaded != st.reload {
				t.Errorf("round %d, %s: engine reloaded %v, want %v", round, st.name, reloaded, st.reload)
			}
			out := strings.TrimPrefix(logs.String(), before)
			if n := strings.Count(out, refusedLine); n != st.info {
				t.Errorf("round %d, %s: %d info lines on the refused addresses, want %d:\n%s", round, st.name, n, st.info, out)
			}
			if n := strings.Count(out, mappedLine); n != st.warn {
				t.Errorf("round %d, %s: %d warnings on mapped host addresses, want %d:\n%s", round, st.name, n, st.warn, out)
			}
			own := h.eng.Load().Config().Policy.OwnAddrs
			for _, p := range st.host {
				if want := p != mapped && p != lo; slices.Contains(own, p) != want {
					t.Errorf("round %d, %s: %v among the own addresses %v: %v", round, st.name, p, own, !want)
				}
			}
		}
	}
}

// TestHostAddrsRetriedAfterAFailedReload: an engine reload with the
// host's new addresses that fails leaves them stale, so the next poll
// reads them and reloads again. Review H10: stale was cleared before the
// reload, and the next poll returned at once, for ever, with the engine
// not refusing the new address.
func TestHostAddrsRetriedAfterAFailedReload(t *testing.T) {
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
	fail := false
	// A link policy the engine refuses while fail is set: a reload
	// that fails as a real one may (a limit, an MTU).
	if err := eng.SetLinkPolicy(func(p *xlat.Policy) {
		if fail {
			p.IPv4MTU = 1
		}
	}); err != nil {
		t.Fatal(err)
	}
	k := newFakeKernel()
	cgn := netip.MustParsePrefix("100.64.0.1/10")
	k.host = []netip.Prefix{cgn}
	d := &daemon{eng: eng, kernel: k, running: c, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		host: hostAddrState{file: xc, stale: true}}
	fail = true
	if err := d.refreshHostAddrs(); err == nil {
		t.Fatal("a refused reload reported no error")
	}
	fail = false
	if err := d.refreshHostAddrs(); err != nil {
		t.Fatal(err)
	}
	if own := eng.Config().Policy.OwnAddrs; !slices.Contains(own, cgn) {
		t.Errorf("after the retry the engine's own addresses are %v, without the host's %v", own, cgn)
	}
	k.mu.Lock()
	reads := k.hostReads
	k.mu.Unlock()
	if err := d.refreshHostAddrs(); err != nil || reads != 2 {
		t.Errorf("host address reads %d (want 2: the failure, its retry), then err %v", reads, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.hostReads != reads {
		t.Errorf("read again after the retry succeeded: %d reads", k.hostReads)
	}
}
