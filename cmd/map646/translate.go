package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/xlat"
)

func newTranslateCmd() *cobra.Command {
	var cfgPath, in, out string
	cmd := &cobra.Command{
		Use:   "translate -c FILE -i IN.pcap -o OUT.pcap",
		Short: "Translate the packets of a capture file offline",
		Long: `translate runs the translation engine of 'map646 run' over a capture file,
with the mappings and policy of the configuration, and writes what the
translator would send: translated packets, and the ICMP errors and fragments
it makes, in order, as a pcap file with raw IP packets (LINKTYPE_RAW).

The input is a pcap or pcapng file whose packets are raw IPv4/IPv6
(LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6), Ethernet (with or without
802.1Q tags), or Linux cooked captures (SLL, SLL2, as from tcpdump -i any).
Each packet that is not translated is reported with its number (the first is
1) and the reason; a summary follows. Use "-" for standard input or output
(the report then goes to stderr). Nothing on the system is changed.`,
		Example: `  tcpdump -i eth0 -w in.pcap 'net 198.51.100.0/24'
  map646 translate -c map646.hcl -i in.pcap -o out.pcap
  tcpdump -nr out.pcap`,
		Args: noArgsTakeC,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			xc, err := c.Xlat()
			if err != nil {
				return err
			}
			eng, err := xlat.NewEngine(xc)
			if err != nil {
				return err
			}
			var r io.Reader = cmd.InOrStdin()
			if in != "-" {
				f, err := os.Open(in)
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			// os.Create would empty the capture before a packet is read:
			// refuse the same file under any name (a symlink, a hard link,
			// "./in.pcap", or standard input redirected from it).
			if f, ok := r.(*os.File); ok && out != "-" {
				fi, ierr := f.Stat()
				fo, oerr := os.Stat(out)
				if ierr == nil && oerr == nil && fi.Mode().IsRegular() && os.SameFile(fi, fo) {
					name := in
					if in == "-" {
						name = "(standard input)"
					}
					return fmt.Errorf("-o %s is the input file %s: writing it would destroy the capture; choose another output", out, name)
				}
			}
			report := cmd.OutOrStdout()
			var w io.Writer
			var outFile *os.File
			if out == "-" {
				w, report = cmd.OutOrStdout(), cmd.ErrOrStderr()
			} else {
				if outFile, err = os.Create(out); err != nil {
					return err
				}
				defer outFile.Close()
				w = outFile
			}
			bw := bufio.NewWriter(w)
			sum, err := translateCapture(eng.NewWorker(), translateBatch, r, bw, report)
			// What was translated before a broken record is kept.
			if ferr := bw.Flush(); err == nil {
				err = ferr
			}
			if err != nil {
				fmt.Fprintln(report, sum)
				return err
			}
			if outFile != nil {
				if err := outFile.Close(); err != nil {
					return err
				}
			}
			fmt.Fprintln(report, sum)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "the HCL configuration file")
	f.StringVarP(&in, "input", "i", "", `capture to read (pcap or pcapng; "-" for stdin)`)
	f.StringVarP(&out, "output", "o", "", `pcap to write (raw IP; "-" for stdout)`)
	for _, name := range []string{"config", "input", "output"} {
		cmd.MarkFlagRequired(name)
	}
	cmd.MarkFlagFilename("config", "hcl")
	cmd.MarkFlagFilename("input", "pcap", "pcapng", "cap")
	cmd.MarkFlagFilename("output", "pcap")
	return cmd
}

// translateSummary counts what translateCapture did.
type translateSummary struct {
	Read       int // packets in the input
	Translated int // packets forwarded translated
	Dropped    int // packets the engine refused
	Skipped    int // packets that were not IP or were truncated by the capture
	Emitted    int // packets the engine made (ICMP errors, fragments)
	Written    int // packets in the output
}

func (s translateSummary) String() string {
	return fmt.Sprintf("%d packets read: %d translated, %d dropped, %d skipped; %d made by the translator (ICMP errors, fragments); %d written",
		s.Read, s.Translated, s.Dropped, s.Skipped, s.Emitted, s.Written)
}

// packetSource is what pcapgo's pcap and pcapng readers have in common,
// plus the link type of each packet (pcapng has one per interface).
type packetSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// openCapture sniffs the file format from its magic number. The link type
// is returned as a uint16 because gopacket v1.1.19's LinkType is a byte,
// too small for LINKTYPE_LINUX_SLL2 (276): for pcap files it is read from
// the file header here.
func openCapture(r io.Reader) (packetSource, func(gopacket.CaptureInfo) uint16, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the capture header: %w", err)
	}
	if binary.BigEndian.Uint32(magic) == 0x0a0d0d0a { // pcapng Section Header Block
		opts := pcapgo.DefaultNgReaderOptions
		opts.WantMixedLinkType = true
		ng, err := pcapgo.NewNgReader(&ngBlockGuard{r: br}, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("pcapng: %w", err)
		}
		return ng, func(ci gopacket.CaptureInfo) uint16 {
			if intf, err := ng.Interface(ci.InterfaceIndex); err == nil {
				return uint16(intf.LinkType)
			}
			return uint16(ng.LinkType())
		}, nil
	}
	var lt uint16
	if hdr, err := br.Peek(24); err == nil {
		// The link type is the low 16 bits of the last header field, in
		// the byte order the magic number shows.
		switch binary.LittleEndian.Uint32(hdr) {
		case 0xa1b2c3d4, 0xa1b23c4d:
			lt = binary.LittleEndian.Uint16(hdr[20:])
		default:
			lt = binary.BigEndian.Uint16(hdr[22:])
		}
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, nil, fmt.Errorf("pcap: %w", err)
	}
	// The reader allocates each record's captured length, which it
	// bounds by the header's snaplen: a hostile header must not raise
	// that bound to 4 GiB.
	if pr.Snaplen() > maxSnaplen {
		pr.SetSnaplen(maxSnaplen)
	}
	return pr, func(gopacket.CaptureInfo) uint16 { return lt }, nil
}

// maxSnaplen bounds what one record may hold: tcpdump's largest snapshot
// length (MAXIMUM_SNAPLEN), more than any IP packet with its link header.
const maxSnaplen = 262144

// ngBlockGuard passes a pcapng stream through block by block and refuses a
// packet block whose captured length exceeds maxSnaplen or its own block
// (pcapng, draft-ietf-opsawg-pcapng section 4): pcapgo's reader allocates
// that length before reading it. A packet block holds at most maxSnaplen
// plus room for options, any other block (name resolution, statistics) at
// most 16 MiB. A stream cut inside a block is passed on as it is, for the
// reader to report as io.ErrUnexpectedEOF.
type ngBlockGuard struct {
	r     io.Reader
	order binary.ByteOrder
	buf   []byte // the current block, served from off
	off   int
	err   error
}

const (
	ngSectionHeader  = 0x0a0d0d0a
	ngEnhancedPacket = 6
	ngSimplePacket   = 3
	ngObsoletePacket = 2
	ngMaxPacketBlock = maxSnaplen + 64<<10 // a packet and its options
	ngMaxBlock       = 16 << 20            // others: name resolution, statistics, ...
)

func (g *ngBlockGuard) Read(p []byte) (int, error) {
	if g.off == len(g.buf) {
		if g.err != nil {
			return 0, g.err
		}
		g.err = g.next()
		if g.off == len(g.buf) {
			return 0, g.err
		}
	}
	n := copy(p, g.buf[g.off:])
	g.off += n
	return n, nil
}

// next reads the next block into buf and checks its lengths.
func (g *ngBlockGuard) next() error {
	g.buf, g.off = g.buf[:0], 0
	var hdr [12]byte
	n, err := io.ReadFull(g.r, hdr[:8])
	if err != nil {
		// io.EOF between blocks is the end; a part of a header is not.
		g.buf = append(g.buf, hdr[:n]...)
		return err
	}
	if binary.BigEndian.Uint32(hdr[:4]) == ngSectionHeader {
		// The byte-order magic follows the length and sets the order of
		// every field in the section.
		m, err := io.ReadFull(g.r, hdr[8:12])
		if err != nil {
			g.buf = append(g.buf, hdr[:8+m]...)
			return io.ErrUnexpectedEOF
		}
		switch binary.LittleEndian.Uint32(hdr[8:12]) {
		case 0x1a2b3c4d:
			g.order = binary.LittleEndian
		case 0x4d3c2b1a:
			g.order = binary.BigEndian
		default:
			return fmt.Errorf("pcapng: bad byte-order magic %#x", hdr[8:12])
		}
	} else if g.order == nil {
		return fmt.Errorf("pcapng: no section header block")
	}
	length := g.order.Uint32(hdr[4:8])
	typ := g.order.Uint32(hdr[:4])
	limit := uint32(ngMaxBlock)
	if typ == ngEnhancedPacket || typ == ngObsoletePacket || typ == ngSimplePacket {
		limit = ngMaxPacketBlock
	}
	if length < 12 || length%4 != 0 || length > limit {
		return fmt.Errorf("pcapng: a block of %d bytes (at most %d, a multiple of 4)", length, limit)
	}
	head := 8
	if binary.BigEndian.Uint32(hdr[:4]) == ngSectionHeader {
		head = 12
	}
	g.buf = append(g.buf, hdr[:head]...)
	g.buf = append(g.buf, make([]byte, int(length)-head)...)
	m, err := io.ReadFull(g.r, g.buf[head:])
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the block was begun
	}
	if err != nil {
		g.buf = g.buf[:head+m]
		return err
	}
	if err := g.checkPacket(typ, length); err != nil {
		// The reader must not see the block: it would allocate the
		// claimed length before asking for the bytes.
		g.buf = g.buf[:0]
		return err
	}
	return nil
}

// checkPacket checks the captured length of a packet block in buf.
func (g *ngBlockGuard) checkPacket(typ, length uint32) error {
	var capLen uint32
	switch typ {
	case ngEnhancedPacket, ngObsoletePacket:
		if length < 32 {
			return fmt.Errorf("pcapng: a packet block of %d bytes", length)
		}
		capLen = g.order.Uint32(g.buf[20:24])
		if capLen > length-32 {
			return fmt.Errorf("pcapng: a packet block of %d bytes claims %d captured bytes", length, capLen)
		}
	case ngSimplePacket:
		if length < 16 {
			return fmt.Errorf("pcapng: a simple packet block of %d bytes", length)
		}
		// Its captured length is the original length, cut only by the
		// interface's snaplen, which may be 0 (none).
		capLen = g.order.Uint32(g.buf[8:12])
	}
	if capLen > maxSnaplen {
		return fmt.Errorf("pcapng: a packet of %d captured bytes (at most %d)", capLen, maxSnaplen)
	}
	return nil
}

// Link types (https://www.tcpdump.org/linktypes.html).
const (
	linkTypeEthernet  = 1
	linkTypeRaw       = 101
	linkTypeLinuxSLL  = 113
	linkTypeIPv4      = 228
	linkTypeIPv6      = 229
	linkTypeLinuxSLL2 = 276
	// Some systems write DLT_RAW's own value instead of LINKTYPE_RAW.
	linkTypeRawBSD     = 12
	linkTypeRawOpenBSD = 14
)

// errNotIP marks frames that carry something other than IPv4 or IPv6.
var errNotIP = errors.New("not IPv4 or IPv6")

// ipPacket returns the IP packet inside a frame of link type lt.
func ipPacket(lt uint16, frame []byte) ([]byte, error) {
	switch lt {
	case linkTypeRaw, linkTypeIPv4, linkTypeIPv6, linkTypeRawBSD, linkTypeRawOpenBSD:
		return frame, nil
	case linkTypeEthernet:
		if len(frame) < 14 {
			return nil, fmt.Errorf("Ethernet frame of %d bytes", len(frame))
		}
		et, off := binary.BigEndian.Uint16(frame[12:]), 14
		// 802.1Q and 802.1ad tags: 4 bytes each before the real EtherType.
		for et == 0x8100 || et == 0x88a8 {
			if len(frame) < off+4 {
				return nil, fmt.Errorf("truncated VLAN tag")
			}
			et, off = binary.BigEndian.Uint16(frame[off+2:]), off+4
		}
		return ethertypeIP(et, frame[off:])
	case linkTypeLinuxSLL:
		if len(frame) < 16 {
			return nil, fmt.Errorf("Linux cooked frame of %d bytes", len(frame))
		}
		return ethertypeIP(binary.BigEndian.Uint16(frame[14:]), frame[16:])
	case linkTypeLinuxSLL2:
		if len(frame) < 20 {
			return nil, fmt.Errorf("Linux cooked (v2) frame of %d bytes", len(frame))
		}
		return ethertypeIP(binary.BigEndian.Uint16(frame[0:]), frame[20:])
	}
	return nil, fmt.Errorf("link type %d is not supported; use raw IP, Ethernet or Linux cooked captures", lt)
}

func ethertypeIP(et uint16, p []byte) ([]byte, error) {
	if et != 0x0800 && et != 0x86dd {
		return nil, fmt.Errorf("%w (EtherType %#04x)", errNotIP, et)
	}
	return p, nil
}

// captureSink collects what the engine makes besides the packet in hand,
// copied, since pkt is only valid during Emit.
type captureSink struct{ pkts [][]byte }

func (s *captureSink) Emit(pkt []byte, _ *xlat.Offload) {
	s.pkts = append(s.pkts, append([]byte(nil), pkt...))
}

// translateBatch is how many records translateCapture reads before it
// translates them: enough for the table slots of a batch's addresses to
// be fetched from memory together (xlat.Worker.Prefetch), few enough
// for them to stay in cache until the batch is translated.
const translateBatch = 32

// captureRecord is one capture record read ahead of its translation.
type captureRecord struct {
	frame []byte // the reader's own copy
	ci    gopacket.CaptureInfo
}

// translateCapture translates every packet of the capture in r with w and
// writes a LINKTYPE_RAW pcap to out; report gets one line per packet not
// translated. It reads batch records at a time and prefetches the mapping
// slots of their addresses (xlat.Worker.Prefetch), which changes only the
// speed: each packet is translated, written and reported in order as
// before.
func translateCapture(w *xlat.Worker, batch int, r io.Reader, out io.Writer, report io.Writer) (translateSummary, error) {
	var sum translateSummary
	src, linkType, err := openCapture(r)
	if err != nil {
		return sum, err
	}
	pw := pcapgo.NewWriterNanos(out)
	if err := pw.WriteFileHeader(262144, layers.LinkTypeRaw); err != nil {
		return sum, err
	}
	buf := make([]byte, xlat.Headroom+65536+xlat.Headroom)
	sink := &captureSink{}
	write := func(ci gopacket.CaptureInfo, p []byte) error {
		ci.CaptureLength, ci.Length, ci.InterfaceIndex = len(p), len(p), 0
		sum.Written++
		return pw.WritePacket(ci, p)
	}
	recs := make([]captureRecord, 0, batch)
	pkts := make([][]byte, 0, batch)
	for {
		recs, pkts = recs[:0], pkts[:0]
		var rerr error
		for len(recs) < batch {
			frame, ci, err := src.ReadPacketData()
			if err != nil {
				rerr = err
				break
			}
			recs = append(recs, captureRecord{frame, ci})
			if pkt, err := ipPacket(linkType(ci), frame); err == nil {
				pkts = append(pkts, pkt)
			}
		}
		w.Prefetch(pkts)
		for _, rec := range recs {
			if err := translateRecord(w, rec, linkType, buf, sink, &sum, write, report); err != nil {
				return sum, err
			}
		}
		switch {
		case rerr == nil:
		case rerr == io.EOF:
			return sum, nil
		case errors.Is(rerr, io.ErrUnexpectedEOF):
			// A capture whose writer was killed ends inside a record:
			// keep every packet before it, as tcpdump -r does.
			fmt.Fprintf(report, "warning: packet %d: the capture ends inside this record (cut short, as when tcpdump is killed); it is left out, the %d packets before it are kept\n", sum.Read+1, sum.Read)
			return sum, nil
		default:
			return sum, fmt.Errorf("packet %d: %w", sum.Read+1, rerr)
		}
	}
}

// translateRecord translates, writes and reports one record.
func translateRecord(w *xlat.Worker, rec captureRecord, linkType func(gopacket.CaptureInfo) uint16, buf []byte, sink *captureSink,
	sum *translateSummary, write func(gopacket.CaptureInfo, []byte) error, report io.Writer) error {
	frame, ci := rec.frame, rec.ci
	sum.Read++
	n := sum.Read
	if ci.CaptureLength < ci.Length {
		sum.Skipped++
		fmt.Fprintf(report, "packet %d: skipped: the capture kept %d of its %d bytes\n", n, ci.CaptureLength, ci.Length)
		return nil
	}
	pkt, err := ipPacket(linkType(ci), frame)
	if err != nil {
		sum.Skipped++
		fmt.Fprintf(report, "packet %d: skipped: %v\n", n, err)
		return nil
	}
	if len(pkt) > len(buf)-2*xlat.Headroom {
		sum.Skipped++
		fmt.Fprintf(report, "packet %d: skipped: %d bytes is larger than an IP packet can be\n", n, len(pkt))
		return nil
	}
	if stack.IsLinkChatter(pkt) {
		// What map646 run counts as link_chatter, not as a drop: a capture
		// of the tun starts with the host kernel's own MLD and solicitations.
		sum.Skipped++
		fmt.Fprintf(report, "packet %d: skipped: link chatter (IPv6 from :: or fe80::/10 to ff02::/16), which the translator does not translate and does not count as a drop\n", n)
		return nil
	}
	start := xlat.Headroom
	end := start + copy(buf[start:], pkt)
	sink.pkts = sink.pkts[:0]
	res := w.Process(buf, start, end, nil, sink)
	for _, p := range sink.pkts {
		sum.Emitted++
		if err := write(ci, p); err != nil {
			return err
		}
	}
	switch res.Verdict {
	case xlat.Forward:
		sum.Translated++
		if err := write(ci, buf[res.Start:res.End]); err != nil {
			return err
		}
	case xlat.Consumed:
		sum.Translated++
	case xlat.Drop:
		sum.Dropped++
		fmt.Fprintf(report, "packet %d: dropped (%v %v): %v", n, res.Dir, res.Proto, res.Reason)
		if len(sink.pkts) > 0 {
			fmt.Fprintf(report, "; answered with %d ICMP error(s)", len(sink.pkts))
		}
		fmt.Fprintln(report)
	}
	return nil
}
