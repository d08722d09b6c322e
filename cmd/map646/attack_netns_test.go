package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/internal/netnstest"
)

// attackConfig maps two servers (for the spoofing and hairpin attacks) and
// a /30 (for its directed broadcast), gives the translator its own IPv4
// address, and takes its packets from fd 3: one end of a socketpair whose
// other end the test holds. Through it the test injects what an attacker
// on either side could route to a translator — including packets to
// 127.0.0.1 or 224.0.0.1 that a kernel in front would already refuse, so
// that the translator's own refusal is what is tested — and sees every
// packet it emits, ICMP errors included.
const attackConfig = `translator {
  prefix       = "2001:db8:64::/96"
  ipv4_address = "203.0.113.1"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.11"
    ipv6 = "2001:db8:6::11"
  }
  mapping {
    ipv4 = "198.51.100.16/30"
    ipv6 = "2001:db8:6::10:0/126"
  }
  fd {
    fd = 3
  }
}
`

// attackDaemon is `map646 run` in a namespace with its link on a socketpair.
type attackDaemon struct {
	link int // the test's end: one IP packet per datagram
	sock string
	pid  int
	logs *bytes.Buffer
}

func startAttackDaemon(t *testing.T) *attackDaemon {
	t.Helper()
	netnstest.Require(t, "dma")
	ns := netnstest.New(t, "dma")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	if err := os.WriteFile(cfg, []byte(attackConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "map646-link")
	t.Cleanup(func() { unix.Close(fds[0]) })
	d := &attackDaemon{link: fds[0], sock: filepath.Join(dir, "ctl.sock"), logs: &bytes.Buffer{}}
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", d.sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.ExtraFiles = []*os.File{theirs}
	run.Stderr = d.logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	d.pid = run.Process.Pid // ip netns exec execs map646 in its place
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = run.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = run.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for d.stats(t) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no stats within 30 s; log:\n%s", d.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d
}

func (d *attackDaemon) stats(t *testing.T) *metrics.Stats {
	out, err := map646Cmd("stats", "--json", "--control-socket", d.sock).Output()
	if err != nil {
		return nil
	}
	var st metrics.Stats
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	return &st
}

// drops sums the drop counters of one reason over both directions.
func (d *attackDaemon) drops(t *testing.T, reason string) uint64 {
	t.Helper()
	st := d.stats(t)
	if st == nil {
		t.Fatalf("stats unavailable; log:\n%s", d.logs.String())
	}
	var n uint64
	for _, c := range st.Drops {
		if c.Kind == reason {
			n += c.Value
		}
	}
	return n
}

func (d *attackDaemon) send(t *testing.T, pkt []byte) {
	t.Helper()
	if _, err := unix.Write(d.link, pkt); err != nil {
		t.Fatal(err)
	}
}

// collect returns every packet the translator emits within window; each
// is handed to reply first, whose answers (if any) are sent back in.
func (d *attackDaemon) collect(t *testing.T, window time.Duration, reply func([]byte) []byte) [][]byte {
	t.Helper()
	var got [][]byte
	end := time.Now().Add(window)
	buf := make([]byte, 65536)
	for {
		left := time.Until(end)
		if left <= 0 {
			return got
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(d.link, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		n, err := unix.Read(d.link, buf)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p := bytes.Clone(buf[:n])
		got = append(got, p)
		if reply != nil {
			if r := reply(p); r != nil {
				d.send(t, r)
			}
		}
	}
}

func atkRSS(t *testing.T, pid int) string {
	return fmt.Sprintf("%.1f MiB", float64(rssKiB(t, pid))/1024)
}

// TestAttackPackets replays issue 9's packet attacks against a running
// `map646 run`: each packet is one the translator must refuse (RFC 7915
// sections 4.1 and 5.1, RFC 1812 section 5.3.5.2, RFC 4443 section 2.4(e),
// RFC 7757 section 4.2), so nothing may come out, and the refusal must be
// counted under its reason in `map646 stats --json`. Two controls show
// the link does carry what the translator emits: a plain packet that is
// translated, and a Routing header with Segments Left that is answered
// with a Parameter Problem when the packet is not an error or a later
// fragment.
func TestAttackPackets(t *testing.T) {
	d := startAttackDaemon(t)
	rssBefore := atkRSS(t, d.pid)
	a4 := netip.MustParseAddr
	pfx := func(v4 string) netip.Addr { // RFC 6052 /96 form in 2001:db8:64::/96
		b := netip.MustParseAddr("2001:db8:64::").As16()
		v := a4(v4).As4()
		copy(b[12:], v[:])
		return netip.AddrFrom16(b)
	}
	srvA := a4("2001:db8:6::10")
	client := a4("192.0.2.2")
	udp6 := func(src, dst netip.Addr) []byte { return atkIPv6(src, dst, 64, 17, atkUDP(src, dst, []byte("attack"))) }
	udp4 := func(src, dst netip.Addr) []byte { return atkIPv4(src, dst, 64, 17, atkUDP(src, dst, []byte("attack"))) }

	// An ICMPv6 Destination Unreachable quoting a packet from the client.
	quoted := udp6(pfx("192.0.2.2"), srvA)
	icmpErr := append([]byte{1, 0, 0, 0, 0, 0, 0, 0}, quoted...)
	// A Routing header (type 0 layout, one address left to visit).
	rh := func(next byte) []byte {
		h := make([]byte, 24)
		h[0], h[1], h[2], h[3] = next, 2, 0, 1
		b := pfx("192.0.2.3").As16()
		copy(h[8:], b[:])
		return h
	}
	withRH := func(next byte, payload []byte) []byte { return append(rh(next), payload...) }
	// Fragment header: offset 16 bytes, no more fragments: a later fragment.
	frag := func(next byte, payload []byte) []byte {
		h := []byte{next, 0, 0, 16, 0, 0, 0x46, 0x46}
		return append(h, payload...)
	}
	icmp6Err := atkICMPv6(srvA, pfx("192.0.2.2"), icmpErr)

	for _, c := range []struct {
		name, sent string
		pkt        []byte
		reason     string // "" for the controls
		emitted    int    // packets the translator must emit
		// what the emitted packet must be (controls only)
		want func(p []byte) bool
	}{
		{"control: translated", "UDP 2001:db8:6::10 -> prefix::192.0.2.2", udp6(srvA, pfx("192.0.2.2")), "", 1, func(p []byte) bool {
			return len(p) >= 28 && p[0] == 0x45 && p[9] == 17 && netip.AddrFrom4([4]byte(p[12:16])) == a4("198.51.100.10") && netip.AddrFrom4([4]byte(p[16:20])) == client
		}},
		// RFC 7915 section 5.1: Parameter Problem, code 0, pointing at Segments Left (40+3).
		{"control: segments left answered", "UDP with Routing header SL=1", atkIPv6(srvA, pfx("192.0.2.2"), 64, 43, withRH(17, atkUDP(srvA, pfx("192.0.2.3"), []byte("x")))), "segments_left", 1, func(p []byte) bool {
			return len(p) >= 48 && p[0]>>4 == 6 && p[6] == 58 && p[40] == 4 && p[41] == 0 && binary.BigEndian.Uint32(p[44:]) == 43 && netip.AddrFrom16([16]byte(p[24:40])) == srvA
		}},

		{"6to4 source inside prefix", "UDP 2001:db8:64::c633:640b -> prefix::192.0.2.2", udp6(pfx("198.51.100.11"), pfx("192.0.2.2")), "spoofed", 0, nil},
		{"4to6 source a mapped address", "UDP 198.51.100.11 -> 198.51.100.10", udp4(a4("198.51.100.11"), a4("198.51.100.10")), "spoofed", 0, nil},

		{"6to4 to metadata 169.254.169.254", "UDP 2001:db8:6::10 -> prefix::a9fe:a9fe", udp6(srvA, pfx("169.254.169.254")), "dst_illegal", 0, nil},
		{"4to6 from metadata 169.254.169.254", "UDP 169.254.169.254 -> 198.51.100.10", udp4(a4("169.254.169.254"), a4("198.51.100.10")), "src_illegal", 0, nil},
		{"6to4 to 127.0.0.1", "UDP 2001:db8:6::10 -> prefix::127.0.0.1", udp6(srvA, pfx("127.0.0.1")), "dst_illegal", 0, nil},
		{"4to6 from 127.0.0.1", "UDP 127.0.0.1 -> 198.51.100.10", udp4(a4("127.0.0.1"), a4("198.51.100.10")), "src_illegal", 0, nil},
		{"6to4 to 224.0.0.1", "UDP 2001:db8:6::10 -> prefix::224.0.0.1", udp6(srvA, pfx("224.0.0.1")), "dst_illegal", 0, nil},
		{"4to6 from 224.0.0.1", "UDP 224.0.0.1 -> 198.51.100.10", udp4(a4("224.0.0.1"), a4("198.51.100.10")), "src_illegal", 0, nil},
		{"6to4 to 240.0.0.1", "UDP 2001:db8:6::10 -> prefix::240.0.0.1", udp6(srvA, pfx("240.0.0.1")), "dst_illegal", 0, nil},
		{"6to4 to 255.255.255.255", "UDP 2001:db8:6::10 -> prefix::255.255.255.255", udp6(srvA, pfx("255.255.255.255")), "dst_illegal", 0, nil},
		{"6to4 to own ipv4_address", "UDP 2001:db8:6::10 -> prefix::203.0.113.1", udp6(srvA, pfx("203.0.113.1")), "own_address", 0, nil},
		{"4to6 from own ipv4_address", "UDP 203.0.113.1 -> 198.51.100.10", udp4(a4("203.0.113.1"), a4("198.51.100.10")), "own_address", 0, nil},
		{"4to6 directed broadcast of mapped /30", "UDP 192.0.2.2 -> 198.51.100.19", udp4(client, a4("198.51.100.19")), "broadcast", 0, nil},
		{"6to4 from mapped /30 broadcast", "UDP 2001:db8:6::10:3 -> prefix::192.0.2.2", udp6(a4("2001:db8:6::10:3"), pfx("192.0.2.2")), "broadcast", 0, nil},
		{"6to4 to link-local fe80::1", "UDP 2001:db8:6::10 -> fe80::1", udp6(srvA, a4("fe80::1")), "dst_illegal", 0, nil},
		{"6to4 to multicast ff02::1", "UDP 2001:db8:6::10 -> ff02::1", udp6(srvA, a4("ff02::1")), "dst_illegal", 0, nil},

		{"ICMPv6 error with Routing header SL=1", "Destination Unreachable behind Routing header SL=1", atkIPv6(srvA, pfx("192.0.2.2"), 64, 43, withRH(58, icmp6Err[40:])), "segments_left", 0, nil},
		{"later fragment with Routing header SL=1", "Routing header SL=1 + Fragment offset 16", atkIPv6(srvA, pfx("192.0.2.2"), 64, 43, withRH(44, frag(17, []byte("later fragment")))), "segments_left", 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before uint64
			if c.reason != "" {
				before = d.drops(t, c.reason)
			}
			d.send(t, c.pkt)
			// A refusal is silent, so its window is short; a control's
			// packet is waited for longer, as a loaded machine may be slow.
			window := 300 * time.Millisecond
			if c.emitted > 0 {
				window = 2 * time.Second
			}
			got := d.collect(t, window, nil)
			if len(got) != c.emitted {
				t.Errorf("sent %s: %d packets emitted, want %d: % x", c.sent, len(got), c.emitted, got)
			} else if c.want != nil && !c.want(got[0]) {
				t.Errorf("sent %s: emitted % x", c.sent, got[0])
			}
			outcome := fmt.Sprintf("%d emitted", len(got))
			if c.reason != "" {
				after := d.drops(t, c.reason)
				if after != before+1 {
					t.Errorf("sent %s: drops{reason=%q} %d -> %d, want +1; all drops: %+v", c.sent, c.reason, before, after, d.stats(t).Drops)
				}
				outcome += fmt.Sprintf(", %s %d -> %d", c.reason, before, after)
			}
			t.Logf("| %s | %s | %s |", c.name, c.sent, outcome)
		})
	}
	t.Logf("daemon RSS: before %s, after %s", rssBefore, atkRSS(t, d.pid))
}

// TestAttackHairpinLoop: two mapped servers that reflect UDP to each other
// through their public addresses, each keeping the Hop Limit it received
// (as a forwarding loop would). Each pass through the translator costs a
// hop (RFC 7757 section 4.2, RFC 8200 section 3), so one packet in makes
// at most 64 passes and then a Time Exceeded, not an endless loop.
func TestAttackHairpinLoop(t *testing.T) {
	d := startAttackDaemon(t)
	rssBefore := atkRSS(t, d.pid)
	srvA := netip.MustParseAddr("2001:db8:6::10")
	toB := netip.MustParseAddr("2001:db8:64::c633:640b") // 198.51.100.11 in prefix
	before := d.drops(t, "hop_limit")
	passes, timeExceeded := 0, 0
	reflect := func(p []byte) []byte {
		if len(p) < 48 || p[0]>>4 != 6 {
			return nil
		}
		if p[6] == 58 && p[40] == 3 {
			timeExceeded++
			return nil
		}
		if p[6] != 17 {
			return nil
		}
		passes++
		src, dst := netip.AddrFrom16([16]byte(p[24:40])), netip.AddrFrom16([16]byte(p[8:24]))
		return atkIPv6(src, dst, p[7], 17, atkUDP(src, dst, p[48:]))
	}
	d.send(t, atkIPv6(srvA, toB, 64, 17, atkUDP(srvA, toB, []byte("ping-pong"))))
	got := d.collect(t, 2*time.Second, reflect)
	after := d.drops(t, "hop_limit")
	t.Logf("| hairpin loop | one UDP 2001:db8:6::10 -> prefix::198.51.100.11, hop limit 64, reflected by both servers | %d passes in 2 s, %d Time Exceeded, hop_limit %d -> %d |", passes, timeExceeded, before, after)
	if passes < 2 || passes > 64 {
		t.Errorf("%d passes through the translator from one packet (%d packets in all), want 2..64", passes, len(got))
	}
	if after != before+1 {
		t.Errorf("drops{reason=hop_limit} %d -> %d, want +1", before, after)
	}
	if timeExceeded != 1 {
		t.Errorf("%d Time Exceeded errors, want 1", timeExceeded)
	}
	if late := d.collect(t, 500*time.Millisecond, reflect); len(late) != 0 {
		t.Errorf("the loop goes on: %d more packets", len(late))
	}
	t.Logf("daemon RSS: before %s, after %s", rssBefore, atkRSS(t, d.pid))
}

// atkSum16 is the RFC 1071 one's complement sum, folded.
func atkSum16(b []byte, acc uint32) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		acc += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return acc
}

func atkPseudo(src, dst netip.Addr, proto byte, n int) uint32 {
	acc := atkSum16(src.AsSlice(), 0)
	acc = atkSum16(dst.AsSlice(), acc)
	return acc + uint32(proto) + uint32(n)
}

// atkUDP is a UDP datagram from src to dst with its checksum.
func atkUDP(src, dst netip.Addr, payload []byte) []byte {
	u := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(u[0:], 4000)
	binary.BigEndian.PutUint16(u[2:], 5000)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	copy(u[8:], payload)
	c := ^uint16(atkSum16(u, atkPseudo(src, dst, 17, len(u))))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], c)
	return u
}

// atkICMPv6 is a whole IPv6 packet carrying ICMPv6 message m, checksummed.
func atkICMPv6(src, dst netip.Addr, m []byte) []byte {
	m = bytes.Clone(m)
	binary.BigEndian.PutUint16(m[2:], ^uint16(atkSum16(m, atkPseudo(src, dst, 58, len(m)))))
	return atkIPv6(src, dst, 64, 58, m)
}

// atkIPv4 is an IPv4 packet with DF set and its header checksum.
func atkIPv4(src, dst netip.Addr, ttl, proto byte, payload []byte) []byte {
	p := make([]byte, 20+len(payload))
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	p[6] = 0x40 // DF
	p[8], p[9] = ttl, proto
	s, d := src.As4(), dst.As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	binary.BigEndian.PutUint16(p[10:], ^uint16(atkSum16(p[:20], 0)))
	copy(p[20:], payload)
	return p
}

// atkIPv6 is an IPv6 packet; payload starts with header next.
func atkIPv6(src, dst netip.Addr, hop, next byte, payload []byte) []byte {
	p := make([]byte, 40+len(payload))
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = next, hop
	s, d := src.As16(), dst.As16()
	copy(p[8:], s[:])
	copy(p[24:], d[:])
	copy(p[40:], payload)
	return p
}

// kernelPathConfig is attackConfig on a tun the kernel routes into
// (routes = true), for the attacks a router in front would pass on.
const kernelPathConfig = `translator {
  prefix       = "2001:db8:64::/96"
  ipv4_address = "203.0.113.1"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.11"
    ipv6 = "2001:db8:6::11"
  }
  mapping {
    ipv4 = "198.51.100.16/30"
    ipv6 = "2001:db8:6::10:0/126"
  }
  tun {
    name   = "dmatk"
    queues = 1
    routes = true
  }
}
`

// ethSocket is an AF_PACKET socket bound to one interface of a namespace.
type ethSocket struct {
	fd   int
	idx  int
	peer []byte // the MAC of the other end of the veth
}

func openEth(t *testing.T, ns *netnstest.NS, ifname string, peer []byte) *ethSocket {
	t.Helper()
	s := &ethSocket{peer: peer}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s.idx = ifi.Index
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(atkHtons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: atkHtons(unix.ETH_P_ALL), Ifindex: s.idx})
	})
	if err != nil {
		t.Fatalf("AF_PACKET on %s in %s: %v", ifname, ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

func atkHtons(v uint16) uint16 { return v<<8 | v>>8 }

func atkMAC(t *testing.T, ns *netnstest.NS, ifname string) []byte {
	t.Helper()
	var mac []byte
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

// sendIP sends one IP packet in an Ethernet frame to the veth's peer.
func (s *ethSocket) sendIP(t *testing.T, pkt []byte) {
	t.Helper()
	etype := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		etype = unix.ETH_P_IPV6
	}
	frame := append(append(append([]byte{}, s.peer...), make([]byte, 6)...), byte(etype>>8), byte(etype))
	frame = append(frame, pkt...)
	if err := unix.Sendto(s.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: s.idx, Halen: 6, Addr: [8]byte(append(bytes.Clone(s.peer), 0, 0))}); err != nil {
		t.Fatal(err)
	}
}

// udpSeen counts the incoming UDP packets (of either IP version) the
// interface receives within window: neighbour discovery, ARP and ICMP
// are left out.
func (s *ethSocket) udpSeen(t *testing.T, window time.Duration) int {
	t.Helper()
	n := 0
	end := time.Now().Add(window)
	buf := make([]byte, 65536)
	for {
		left := time.Until(end)
		if left <= 0 {
			return n
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			t.Fatal(err)
		}
		m, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:m]
		switch {
		case len(f) >= 14+20 && f[12] == 0x08 && f[13] == 0x00 && f[14+9] == 17,
			len(f) >= 14+40 && f[12] == 0x86 && f[13] == 0xdd && f[14+6] == 17:
			n++
		}
	}
}

// TestAttackKernelPath: the attacks a router in front of the translator
// would forward (their destinations are routed into the tun) sent as
// Ethernet frames onto the translator's veths from the client and server
// namespaces; the other side's veth sees nothing, and the drops are
// counted. A control packet crosses each way to show the capture works.
func TestAttackKernelPath(t *testing.T) {
	netnstest.RequireTun(t, "dmk")
	cli, x, srv := netnstest.New(t, "dmk"), netnstest.New(t, "dmk"), netnstest.New(t, "dmk")
	netnstest.Veth(t, cli, "c0", x, "x4")
	netnstest.Veth(t, x, "x6", srv, "s0")
	cli.Run("ip", "addr", "add", "192.0.2.2/24", "dev", "c0")
	x.Run("ip", "addr", "add", "192.0.2.1/24", "dev", "x4")
	x.Run("ip", "addr", "add", "2001:db8:6::1/64", "dev", "x6", "nodad")
	srv.Run("ip", "addr", "add", "2001:db8:6::10/64", "dev", "s0", "nodad")
	srv.Run("ip", "addr", "add", "2001:db8:6::11/64", "dev", "s0", "nodad")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	if err := os.WriteFile(cfg, []byte(kernelPathConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &attackDaemon{sock: filepath.Join(dir, "ctl.sock"), logs: &bytes.Buffer{}}
	run := exec.Command("ip", "netns", "exec", x.Name, os.Args[0], "run", "-c", cfg, "--control-socket", d.sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.Stderr = d.logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = run.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = run.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = run.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for st := d.stats(t); st == nil || st.Routes == 0; st = d.stats(t) {
		if time.Now().After(deadline) {
			t.Fatalf("no stats with routes within 30 s; log:\n%s", d.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rssBefore := atkRSS(t, d.pid)
	v4side := openEth(t, cli, "c0", atkMAC(t, x, "x4"))
	v6side := openEth(t, srv, "s0", atkMAC(t, x, "x6"))
	a := netip.MustParseAddr
	pfx := func(v4 string) netip.Addr {
		b := a("2001:db8:64::").As16()
		v := a(v4).As4()
		copy(b[12:], v[:])
		return netip.AddrFrom16(b)
	}
	udp4 := func(src, dst netip.Addr) []byte { return atkIPv4(src, dst, 64, 17, atkUDP(src, dst, []byte("attack"))) }
	udp6 := func(src, dst netip.Addr) []byte { return atkIPv6(src, dst, 64, 17, atkUDP(src, dst, []byte("attack"))) }
	for _, c := range []struct {
		name, sent    string
		from, capture *ethSocket
		pkt           []byte
		reason        string
		wantDelivered int
	}{
		{"control 4to6", "UDP 192.0.2.2 -> 198.51.100.10", v4side, v6side, udp4(a("192.0.2.2"), a("198.51.100.10")), "", 1},
		{"control 6to4", "UDP 2001:db8:6::10 -> prefix::192.0.2.2", v6side, v4side, udp6(a("2001:db8:6::10"), pfx("192.0.2.2")), "", 1},
		{"6to4 source inside prefix", "UDP 2001:db8:64::c633:640b -> prefix::192.0.2.2", v6side, v4side, udp6(pfx("198.51.100.11"), pfx("192.0.2.2")), "spoofed", 0},
		{"4to6 source a mapped address", "UDP 198.51.100.11 -> 198.51.100.10", v4side, v6side, udp4(a("198.51.100.11"), a("198.51.100.10")), "spoofed", 0},
		{"6to4 to metadata", "UDP 2001:db8:6::10 -> prefix::a9fe:a9fe", v6side, v4side, udp6(a("2001:db8:6::10"), pfx("169.254.169.254")), "dst_illegal", 0},
		{"4to6 directed broadcast of mapped /30", "UDP 192.0.2.2 -> 198.51.100.19", v4side, v6side, udp4(a("192.0.2.2"), a("198.51.100.19")), "broadcast", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before uint64
			if c.reason != "" {
				before = d.drops(t, c.reason)
			}
			c.from.sendIP(t, c.pkt)
			window := 500 * time.Millisecond
			if c.wantDelivered > 0 {
				window = 2 * time.Second // the control waits out neighbour discovery on a loaded machine
			}
			got := c.capture.udpSeen(t, window)
			if got != c.wantDelivered {
				t.Errorf("sent %s: %d UDP packets on the other side, want %d", c.sent, got, c.wantDelivered)
			}
			outcome := fmt.Sprintf("%d delivered", got)
			if c.reason != "" {
				after := d.drops(t, c.reason)
				if after != before+1 {
					t.Errorf("sent %s: drops{reason=%q} %d -> %d, want +1; all drops: %+v", c.sent, c.reason, before, after, d.stats(t).Drops)
				}
				outcome += fmt.Sprintf(", %s %d -> %d", c.reason, before, after)
			}
			t.Logf("| %s (kernel path) | %s | %s |", c.name, c.sent, outcome)
		})
	}
	t.Logf("daemon RSS: before %s, after %s", rssBefore, atkRSS(t, d.pid))
}
