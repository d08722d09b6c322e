package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/stack/xlat"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// The plan of the conformance suite: server A is 198.51.100.10 <->
// 2001:db8:6::10, IPv4 clients appear inside 2001:db8:64::/96.
const translateHCL = `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
}
`

var (
	client4 = net.ParseIP("192.0.2.2").To4()
	client6 = net.ParseIP("2001:db8:64::c000:202")
	server4 = net.ParseIP("198.51.100.10").To4()
	server6 = net.ParseIP("2001:db8:6::10")
)

func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	b := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(b, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), b.Bytes()...)
}

func udp4(t *testing.T, payload string) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client4, DstIP: server4, Flags: layers.IPv4DontFragment}
	u := &layers.UDP{SrcPort: 40000, DstPort: 53}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, u, gopacket.Payload(payload))
}

func udp6(t *testing.T, payload string) []byte {
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: server6, DstIP: client6}
	u := &layers.UDP{SrcPort: 53, DstPort: 40000}
	u.SetNetworkLayerForChecksum(ip)
	return serialize(t, ip, u, gopacket.Payload(payload))
}

func ether(t *testing.T, et layers.EthernetType, payload []byte) []byte {
	e := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: et}
	return serialize(t, e, gopacket.Payload(payload))
}

type frame struct {
	data   []byte
	length int // original length; 0: len(data)
}

func writePcap(t *testing.T, path string, lt layers.LinkType, frames []frame) {
	t.Helper()
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65535, lt); err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1764000000, 0)
	for i, f := range frames {
		l := f.length
		if l == 0 {
			l = len(f.data)
		}
		ci := gopacket.CaptureInfo{Timestamp: ts.Add(time.Duration(i) * time.Millisecond), CaptureLength: len(f.data), Length: l}
		if err := w.WritePacket(ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readPcap(t *testing.T, path string) (layers.LinkType, [][]byte, []time.Time) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	var ts []time.Time
	for {
		d, ci, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkts = append(pkts, d)
		ts = append(ts, ci.Timestamp)
	}
	return r.LinkType(), pkts, ts
}

// onesSum is the RFC 1071 sum of b folded to 16 bits.
func onesSum(b []byte, s uint32) uint32 {
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}

// checkUDP6 verifies a translated IPv6/UDP packet: addresses, hop limit,
// payload, and that the UDP checksum is complete and right (RFC 8200
// section 8.1 pseudo-header).
func checkUDP6(t *testing.T, p []byte, src, dst net.IP, payload string) {
	t.Helper()
	pk := gopacket.NewPacket(p, layers.LayerTypeIPv6, gopacket.Default)
	ip, _ := pk.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	u, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || u == nil {
		t.Fatalf("not IPv6/UDP: %v", pk)
	}
	if !ip.SrcIP.Equal(src) || !ip.DstIP.Equal(dst) || ip.HopLimit != 64 || string(u.Payload) != payload {
		t.Errorf("got %v -> %v hlim %d payload %q", ip.SrcIP, ip.DstIP, ip.HopLimit, u.Payload)
	}
	seg := p[40:]
	var ph []byte
	ph = append(ph, p[8:40]...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
	ph = append(ph, 0, 0, 0, 17)
	if s := onesSum(seg, onesSum(ph, 0)); s != 0xffff {
		t.Errorf("UDP checksum %#04x is wrong (sum %#04x)", u.Checksum, s)
	}
}

func checkUDP4(t *testing.T, p []byte, src, dst net.IP, payload string) {
	t.Helper()
	pk := gopacket.NewPacket(p, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	u, _ := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if ip == nil || u == nil {
		t.Fatalf("not IPv4/UDP: %v", pk)
	}
	if !ip.SrcIP.Equal(src) || !ip.DstIP.Equal(dst) || ip.TTL != 64 || string(u.Payload) != payload {
		t.Errorf("got %v -> %v ttl %d payload %q", ip.SrcIP, ip.DstIP, ip.TTL, u.Payload)
	}
	if s := onesSum(p[:20], 0); s != 0xffff {
		t.Errorf("IPv4 header checksum wrong")
	}
	seg := p[20:]
	ph := append(append([]byte(nil), p[12:20]...), 0, 17, byte(len(seg)>>8), byte(len(seg)))
	if s := onesSum(seg, onesSum(ph, 0)); s != 0xffff {
		t.Errorf("UDP checksum %#04x is wrong", u.Checksum)
	}
}

func TestTranslateRaw(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	malformed := udp4(t, "x")[:24] // an IPv4 header whose total length exceeds the packet
	writePcap(t, in, layers.LinkTypeRaw, []frame{
		{data: udp4(t, "query")},
		{data: malformed},
		{data: udp6(t, "answer")},
		{data: udp4(t, "cut")[:20], length: 31},
	})
	stdout, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lt, pkts, ts := readPcap(t, out)
	if lt != layers.LinkTypeRaw || len(pkts) != 2 {
		t.Fatalf("link type %v, %d packets; report:\n%s", lt, len(pkts), stdout)
	}
	checkUDP6(t, pkts[0], client6, server6, "query")
	checkUDP4(t, pkts[1], server4, client4, "answer")
	// Timestamps carry over from the input packets (1st and 3rd).
	base := time.Unix(1764000000, 0)
	if !ts[0].Equal(base) || !ts[1].Equal(base.Add(2*time.Millisecond)) {
		t.Errorf("timestamps %v", ts)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := []string{
		"packet 2: dropped (4to6 ",
		"packet 4: skipped: the capture kept 20 of its 31 bytes",
		"4 packets read: 2 translated, 1 dropped, 1 skipped; 0 made by the translator (ICMP errors, fragments); 2 written",
	}
	if len(lines) != len(want) {
		t.Fatalf("report:\n%s", stdout)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("report line %d = %q, want prefix %q", i+1, lines[i], want[i])
		}
	}
	if !strings.Contains(lines[0], "malformed") {
		t.Errorf("drop reason missing: %q", lines[0])
	}
}

// TestTranslateEthernetAndStdio: Ethernet captures (with an 802.1Q tag and a
// non-IP frame) in, stdout out with the report on stderr.
func TestTranslateEthernetAndStdio(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in := filepath.Join(dir, "in.pcap")
	tagged := append([]byte{0, 5, 0x08, 0x00}, udp4(t, "tagged")...) // VLAN 5, then IPv4
	writePcap(t, in, layers.LinkTypeEthernet, []frame{
		{data: ether(t, layers.EthernetTypeIPv4, udp4(t, "plain"))},
		{data: ether(t, layers.EthernetTypeARP, make([]byte, 28))},
		{data: ether(t, layers.EthernetTypeDot1Q, tagged)},
	})
	stdout, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", "-")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	r, err := pcapgo.NewReader(strings.NewReader(stdout))
	if err != nil {
		t.Fatal(err)
	}
	var pkts [][]byte
	for {
		d, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkts = append(pkts, d)
	}
	if len(pkts) != 2 {
		t.Fatalf("%d packets; report:\n%s", len(pkts), stderr)
	}
	checkUDP6(t, pkts[0], client6, server6, "plain")
	checkUDP6(t, pkts[1], client6, server6, "tagged")
	if !strings.Contains(stderr, "packet 2: skipped: not IPv4 or IPv6 (EtherType 0x0806)") ||
		!strings.Contains(stderr, "3 packets read: 2 translated, 0 dropped, 1 skipped") {
		t.Errorf("report:\n%s", stderr)
	}
}

func TestTranslatePcapng(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in, out := filepath.Join(dir, "in.pcapng"), filepath.Join(dir, "out.pcap")
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	p := udp4(t, "ng")
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1764000000, 0), CaptureLength: len(p), Length: len(p)}, p); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	_, pkts, _ := readPcap(t, out)
	if len(pkts) != 1 {
		t.Fatalf("%d packets", len(pkts))
	}
	checkUDP6(t, pkts[0], client6, server6, "ng")
}

func TestTranslateBadInput(t *testing.T) {
	dir := writeTemp(t, map[string]string{
		"c.hcl":    translateHCL,
		"bad.hcl":  "translator {}\n",
		"junk.cap": "this is not a capture file",
	})
	c := filepath.Join(dir, "c.hcl")
	out := filepath.Join(dir, "out.pcap")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", filepath.Join(dir, "bad.hcl"), "-i", filepath.Join(dir, "junk.cap"), "-o", out}, "bad.hcl:1:12: Missing required argument"},
		{[]string{"-c", c, "-i", filepath.Join(dir, "junk.cap"), "-o", out}, "pcap: "},
		{[]string{"-c", c, "-i", filepath.Join(dir, "none.pcap"), "-o", out}, "no such file"},
		{[]string{"-c", c, "-i", filepath.Join(dir, "junk.cap")}, `"output" not set`},
	} {
		_, _, err := runCmd(t, append([]string{"translate"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestIPPacket(t *testing.T) {
	ip := []byte{0x45, 1, 2, 3}
	sll := append([]byte{0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00}, ip...)
	sll2 := append([]byte{0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}, ip...)
	qinq := append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x86, 0xdd}, ip...)
	for _, tc := range []struct {
		name  string
		lt    uint16
		frame []byte
		err   string
	}{
		{"raw", linkTypeRaw, ip, ""},
		{"ipv4", linkTypeIPv4, ip, ""},
		{"ipv6", linkTypeIPv6, ip, ""},
		{"bsd raw", linkTypeRawBSD, ip, ""},
		{"sll", linkTypeLinuxSLL, sll, ""},
		{"sll2", linkTypeLinuxSLL2, sll2, ""},
		{"qinq", linkTypeEthernet, qinq, ""},
		{"short ethernet", linkTypeEthernet, ip, "Ethernet frame of 4 bytes"},
		{"cut tag", linkTypeEthernet, qinq[:16], "truncated VLAN tag"},
		{"short sll", linkTypeLinuxSLL, sll[:10], "Linux cooked frame of 10 bytes"},
		{"null", 0, ip, "is not supported"},
	} {
		got, err := ipPacket(tc.lt, tc.frame)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, ip) {
			t.Errorf("%s: got %x, %v", tc.name, got, err)
		}
	}
}

// TestTranslateSLL2: tcpdump -i any writes LINKTYPE_LINUX_SLL2 (276),
// which does not fit gopacket's one-byte LinkType; the header is read
// directly.
func TestTranslateSLL2(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	sll2 := append([]byte{0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0}, udp4(t, "any")...)
	writePcap(t, in, layers.LinkTypeRaw, []frame{{data: sll2}})
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(b[20:], 276)
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	_, pkts, _ := readPcap(t, out)
	if len(pkts) != 1 {
		t.Fatalf("%d packets; report:\n%s", len(pkts), stdout)
	}
	checkUDP6(t, pkts[0], client6, server6, "any")
}

// TestTranslateEmitted: packets the engine makes itself reach the output
// too: IPv6 fragments of a DF=0 IPv4 packet larger than lowest_ipv6_mtu
// (RFC 7915 section 4), and the Fragmentation Needed error for a DF packet
// that exceeds ipv6_mtu (reported as a drop answered with an error).
func TestTranslateEmitted(t *testing.T) {
	hcl := strings.Replace(translateHCL, "prefix = \"2001:db8:64::/96\"", "prefix = \"2001:db8:64::/96\"\n  ipv6_mtu = 1400\n  icmp_source_pool = [\"203.0.113.64/26\"]", 1)
	dir := writeTemp(t, map[string]string{"c.hcl": hcl})
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	big := strings.Repeat("x", 1300)
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client4, DstIP: server4}
	u := &layers.UDP{SrcPort: 40000, DstPort: 53}
	u.SetNetworkLayerForChecksum(ip)
	noDF := serialize(t, ip, u, gopacket.Payload(big))
	writePcap(t, in, layers.LinkTypeRaw, []frame{
		{data: noDF},
		{data: udp4(t, big+big[:100])}, // DF, 1428 bytes: 1448 as IPv6 > 1400
	})
	stdout, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	_, pkts, _ := readPcap(t, out)
	if len(pkts) != 3 {
		t.Fatalf("%d packets; report:\n%s", len(pkts), stdout)
	}
	var payload []byte
	for i, p := range pkts[:2] {
		pk := gopacket.NewPacket(p, layers.LayerTypeIPv6, gopacket.Default)
		fh, _ := pk.Layer(layers.LayerTypeIPv6Fragment).(*layers.IPv6Fragment)
		if fh == nil || len(p) > 1280 {
			t.Fatalf("packet %d is not an IPv6 fragment of at most 1280 bytes: %d bytes, %v", i+1, len(p), pk)
		}
		payload = append(payload, fh.Payload...)
	}
	if len(payload) != 8+len(big) || string(payload[8:]) != big {
		t.Errorf("fragments carry %d bytes, want the %d-byte datagram", len(payload), 8+len(big))
	}
	pk := gopacket.NewPacket(pkts[2], layers.LayerTypeIPv4, gopacket.Default)
	icmp, _ := pk.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if icmp == nil || icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 4) {
		t.Fatalf("third packet is not Fragmentation Needed: %v", pk)
	}
	if mtu := binary.BigEndian.Uint16(pkts[2][20+6:]); mtu != 1380 {
		t.Errorf("Fragmentation Needed says MTU %d, want 1380 (ipv6_mtu - 20)", mtu)
	}
	for _, want := range []string{
		"packet 2: dropped (4to6 ",
		"): too_big; answered with 1 ICMP error(s)\n",
		"2 packets read: 1 translated, 1 dropped, 0 skipped; 3 made by the translator (ICMP errors, fragments); 3 written",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
}

// TestTranslateRefusesSameFile: -o naming the input under any name would
// empty the capture before it is read.
func TestTranslateRefusesSameFile(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in := filepath.Join(dir, "in.pcap")
	writePcap(t, in, layers.LinkTypeRaw, []frame{{data: udp4(t, "keep")}})
	orig, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(in, filepath.Join(dir, "sym.pcap")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(in, filepath.Join(dir, "hard.pcap")); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{in, filepath.Join(dir, "sym.pcap"), filepath.Join(dir, "hard.pcap"), dir + "/./in.pcap"} {
		_, _, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out)
		if err == nil || !strings.Contains(err.Error(), "is the input file") {
			t.Errorf("-o %s: err %v", out, err)
		}
		if now, _ := os.ReadFile(in); !bytes.Equal(now, orig) {
			t.Fatalf("-o %s changed the input", out)
		}
	}
	// Standard input redirected from the file (translate -i - -o in.pcap < in.pcap).
	stdin, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	root := newRootCommand()
	root.SetIn(stdin)
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	root.SetArgs([]string{"translate", "-c", filepath.Join(dir, "c.hcl"), "-i", "-", "-o", filepath.Join(dir, "hard.pcap")})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "is the input file (standard input)") {
		t.Errorf("stdin from the output file: err %v", err)
	}
	if now, _ := os.ReadFile(in); !bytes.Equal(now, orig) {
		t.Fatal("-i - changed the input")
	}
}

// TestTranslateTruncatedLastRecord: a capture cut inside its last record
// (a killed tcpdump) keeps the packets before it, with a warning.
func TestTranslateTruncatedLastRecord(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	c := filepath.Join(dir, "c.hcl")
	pcapIn := filepath.Join(dir, "in.pcap")
	writePcap(t, pcapIn, layers.LinkTypeRaw, []frame{{data: udp4(t, "one")}, {data: udp4(t, "two")}, {data: udp4(t, "three")}})
	var ng bytes.Buffer
	nw, err := pcapgo.NewNgWriter(&ng, layers.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	for _, pl := range []string{"one", "two", "three"} {
		p := udp4(t, pl)
		if err := nw.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1764000000, 0), CaptureLength: len(p), Length: len(p)}, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.Flush(); err != nil {
		t.Fatal(err)
	}
	ngIn := filepath.Join(dir, "in.pcapng")
	if err := os.WriteFile(ngIn, ng.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{pcapIn, ngIn} {
		for _, cut := range []int{5, 30} { // inside the data; inside the record header
			b, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			cutIn := filepath.Join(dir, "cut-"+filepath.Base(in))
			if err := os.WriteFile(cutIn, b[:len(b)-cut], 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.pcap")
			stdout, stderr, err := runCmd(t, "translate", "-c", c, "-i", cutIn, "-o", out)
			if err != nil {
				t.Fatalf("%s cut by %d: %v\n%s", in, cut, err, stderr)
			}
			if !strings.Contains(stdout, "warning: packet 3: the capture ends inside this record") || !strings.Contains(stdout, "2 packets read: 2 translated") {
				t.Errorf("%s cut by %d: report %q", in, cut, stdout)
			}
			_, pkts, _ := readPcap(t, out)
			if len(pkts) != 2 {
				t.Fatalf("%s cut by %d: %d packets kept, want 2", in, cut, len(pkts))
			}
			checkUDP6(t, pkts[1], client6, server6, "two")
		}
	}
}

// TestTranslateLargeOtherBlock: a large block that is not a packet (here
// of a custom type, 1 MiB) is passed over, and the packets after it are
// translated.
func TestTranslateLargeOtherBlock(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	blk := binary.LittleEndian.AppendUint32(nil, 0xbad)
	blk = binary.LittleEndian.AppendUint32(blk, 12+1<<20)
	blk = append(blk, make([]byte, 1<<20)...)
	blk = binary.LittleEndian.AppendUint32(blk, 12+1<<20)
	b.Write(blk)
	p := udp4(t, "after")
	if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: time.Unix(1764000000, 0), CaptureLength: len(p), Length: len(p)}, p); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	in, out := filepath.Join(dir, "in.pcapng"), filepath.Join(dir, "out.pcap")
	if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out); err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if _, pkts, _ := readPcap(t, out); len(pkts) != 1 {
		t.Fatalf("%d packets", len(pkts))
	} else {
		checkUDP6(t, pkts[0], client6, server6, "after")
	}
}

// TestTranslateHostileLengths: record lengths in a hostile capture are
// refused before anything that size is allocated.
func TestTranslateHostileLengths(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	c := filepath.Join(dir, "c.hcl")
	// pcap: snaplen 2^32-1 in the header, then a record claiming 2 GiB.
	hdr := binary.LittleEndian.AppendUint32(nil, 0xa1b2c3d4)
	hdr = binary.LittleEndian.AppendUint16(hdr, 2)
	hdr = binary.LittleEndian.AppendUint16(hdr, 4)
	hdr = append(hdr, make([]byte, 8)...)
	hdr = binary.LittleEndian.AppendUint32(hdr, 0xffffffff) // snaplen
	hdr = binary.LittleEndian.AppendUint32(hdr, 101)        // LINKTYPE_RAW
	rec := binary.LittleEndian.AppendUint32(nil, 1764000000)
	rec = binary.LittleEndian.AppendUint32(rec, 0)
	rec = binary.LittleEndian.AppendUint32(rec, 1<<31) // captured
	rec = binary.LittleEndian.AppendUint32(rec, 1<<31) // original
	// pcapng: a section, an interface, an enhanced packet block of 36
	// bytes claiming 2 GiB captured.
	ng := func(typ uint32, body []byte) []byte {
		l := uint32(12 + len(body))
		b := binary.LittleEndian.AppendUint32(nil, typ)
		b = binary.LittleEndian.AppendUint32(b, l)
		b = append(b, body...)
		return binary.LittleEndian.AppendUint32(b, l)
	}
	shb := ng(0x0a0d0d0a, []byte{0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	idb := ng(1, []byte{101, 0, 0, 0, 0, 0, 0, 0})
	epbBody := binary.LittleEndian.AppendUint32(make([]byte, 12), 1<<31)
	epbBody = binary.LittleEndian.AppendUint32(epbBody, 1<<31)
	epbBody = append(epbBody, 0, 0, 0, 0)
	spbBody := binary.LittleEndian.AppendUint32(nil, 1<<31) // original length, no snaplen
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"pcap", append(append(hdr, rec...), make([]byte, 64)...), "capture length exceeds snap length: 2147483648 > 262144"},
		{"pcapng enhanced", append(append(shb, idb...), ng(6, epbBody)...), "claims 2147483648 captured bytes"},
		{"pcapng simple", append(append(shb, idb...), ng(3, spbBody)...), "a packet of 2147483648 captured bytes"},
		{"pcapng huge block", append(append(shb, idb...), ng(6, make([]byte, 400<<10))...), "a block of"},
		{"pcapng huge other block", append(append(shb, idb...), ng(0xbad, make([]byte, 17<<20))...), "a block of"},
	} {
		in := filepath.Join(dir, "hostile")
		if err := os.WriteFile(in, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _, err := runCmd(t, "translate", "-c", c, "-i", in, "-o", filepath.Join(dir, "out.pcap"))
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		// Reading the file itself takes up to its size (17 MiB) in
		// buffers; the claimed 2 GiB must not be allocated.
		if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
			t.Errorf("%s: %d MiB allocated", tc.name, n>>20)
		}
	}
}

// TestTranslateBatches: reading records ahead in batches, to prefetch
// their mapping slots, changes nothing in the output or the report,
// whatever the batch size and wherever the capture ends (cut inside the
// last record included), with drops, skips and emitted errors on both
// sides of batch boundaries.
func TestTranslateBatches(t *testing.T) {
	hcl := strings.Replace(translateHCL, "prefix = \"2001:db8:64::/96\"", "prefix = \"2001:db8:64::/96\"\n  ipv6_mtu = 1400", 1)
	dir := writeTemp(t, map[string]string{"c.hcl": hcl})
	c, err := config.Load(filepath.Join(dir, "c.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	xc, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	spoofed := udp4(t, "spoof")
	copy(spoofed[12:16], server4) // a mapped IPv4 source
	// The header checksum made afresh: the engine drops a damaged header
	// before it looks at the addresses.
	ipv4 := header.IPv4(spoofed)
	ipv4.SetChecksum(0)
	ipv4.SetChecksum(^ipv4.CalculateChecksum())
	kinds := [][]byte{
		udp4(t, "query"),
		udp6(t, "answer"),
		udp4(t, "x")[:24], // malformed
		spoofed,
		udp4(t, strings.Repeat("x", 1400)), // DF, too big: Fragmentation Needed
		{0x45, 0},                          // shorter than a header
	}
	var frames []frame
	for i := range 3*translateBatch + 5 {
		f := frame{data: kinds[i*7%len(kinds)]}
		if i%11 == 10 {
			f.length = len(f.data) + 1 // cut by the capture: skipped
		}
		frames = append(frames, f)
	}
	in := filepath.Join(dir, "in.pcap")
	writePcap(t, in, layers.LinkTypeRaw, frames)
	whole, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 3} {
		capture := whole[:len(whole)-cut]
		var wantOut, wantReport string
		for i, batch := range []int{1, 1, 2, 7, translateBatch, 1000} {
			eng, err := xlat.NewEngine(xc)
			if err != nil {
				t.Fatal(err)
			}
			var out, report bytes.Buffer
			sum, err := translateCapture(eng.NewWorker(), batch, bytes.NewReader(capture), &out, &report)
			if err != nil {
				t.Fatalf("cut %d, batch %d: %v", cut, batch, err)
			}
			fmt.Fprintln(&report, sum)
			got := withoutIPv4IDs(t, out.Bytes())
			if i == 0 {
				wantOut, wantReport = got, report.String()
				for _, s := range []string{"dropped", "skipped", "answered with 1 ICMP error(s)", "spoofed"} {
					if !strings.Contains(wantReport, s) {
						t.Fatalf("cut %d: the capture does not exercise %q:\n%s", cut, s, wantReport)
					}
				}
				if cut > 0 && !strings.Contains(wantReport, "the capture ends inside this record") {
					t.Fatalf("cut %d: no warning:\n%s", cut, wantReport)
				}
				continue
			}
			if got != wantOut {
				t.Errorf("cut %d, batch %d: the output differs from one record at a time", cut, batch)
			}
			if report.String() != wantReport {
				t.Errorf("cut %d, batch %d: report\n%s\nwant\n%s", cut, batch, report.String(), wantReport)
			}
		}
	}
}

// withoutIPv4IDs returns the packets of a pcap, with the Identification
// and header checksum of IPv4 headers zeroed: each engine starts its IDs
// at a random value.
func withoutIPv4IDs(t *testing.T, capture []byte) string {
	t.Helper()
	r, err := pcapgo.NewReader(bytes.NewReader(capture))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for {
		p, ci, err := r.ReadPacketData()
		if err == io.EOF {
			return b.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(p) >= 20 && p[0]>>4 == 4 {
			p[4], p[5], p[10], p[11] = 0, 0, 0, 0
		}
		fmt.Fprintf(&b, "%v %x\n", ci.Timestamp.UnixNano(), p)
	}
}

// TestTranslateLinkChatter: the host's own MLD report from :: at the head
// of a tun capture is skipped as link chatter, as map646 run counts it, not
// reported as a drop.
func TestTranslateLinkChatter(t *testing.T) {
	dir := writeTemp(t, map[string]string{"c.hcl": translateHCL})
	in, out := filepath.Join(dir, "in.pcap"), filepath.Join(dir, "out.pcap")
	mld := serialize(t,
		&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 1, SrcIP: net.IPv6unspecified, DstIP: net.ParseIP("ff02::16")},
		gopacket.Payload(make([]byte, 28)))
	fromLinkLocal := serialize(t,
		&layers.IPv6{Version: 6, NextHeader: layers.IPProtocolICMPv6, HopLimit: 255, SrcIP: net.ParseIP("fe80::1"), DstIP: net.ParseIP("ff02::2")},
		gopacket.Payload(make([]byte, 8)))
	writePcap(t, in, layers.LinkTypeRaw, []frame{{data: mld}, {data: fromLinkLocal}, {data: udp4(t, "query")}})
	stdout, stderr, err := runCmd(t, "translate", "-c", filepath.Join(dir, "c.hcl"), "-i", in, "-o", out)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if _, pkts, _ := readPcap(t, out); len(pkts) != 1 {
		t.Fatalf("%d packets written, want 1; report:\n%s", len(pkts), stdout)
	}
	want := []string{
		"packet 1: skipped: link chatter",
		"packet 2: skipped: link chatter",
		"3 packets read: 1 translated, 0 dropped, 2 skipped;",
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != len(want) {
		t.Fatalf("report:\n%s", stdout)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("report line %d = %q, want prefix %q", i+1, lines[i], want[i])
		}
	}
}
