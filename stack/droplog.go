package stack

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/map646/map646/stack/xlat"
)

// dropLogHead is how much of each packet the Handler keeps while the drop
// log is on: enough for an IPv4 header with options and the ports, or an
// IPv6 header, a few small extension headers and the ports.
const dropLogHead = 128

// MaxDropLogRate is the highest drop log rate SetDropLog accepts; higher
// rates are clamped to it.
const MaxDropLogRate = 100000

// dropLog is the Handler's opt-in log of dropped packets (like TAYGA's
// `log drop` and Jool's `logging-debug`): one line per dropped packet with
// its addresses, ports, protocol and drop reason, at most perSecond lines
// in each second of the monotonic clock. Lines over the limit are only
// counted (LinkStats.DropLogSuppressed); the next line written says how
// many were suppressed before it.
//
// The engine translates in place and may have rewritten part of a packet
// before deciding to drop it (a hairpinned packet is dropped in its second
// half, after being made IPv4), so while the log is on every queue keeps a
// copy of the head of the packet it hands the engine; the copy is decoded
// only for a line that the rate limit lets through.
type dropLog struct {
	perSecond atomic.Int64  // 0: off
	window    atomic.Uint64 // second of monoNow << 32 | lines written in it
	reported  atomic.Uint64 // suppressed lines already reported by a line
	now       func() int64  // monoNow; a fake clock in tests
}

// SetDropLog turns the drop log on, at most perSecond lines a second
// (clamped to MaxDropLogRate), or off (perSecond <= 0). It may be called
// while packets flow.
func (h *Handler) SetDropLog(perSecond int) {
	h.drops.perSecond.Store(int64(min(max(perSecond, 0), MaxDropLogRate)))
}

// SetDropLog sets the data path's drop log (Handler.SetDropLog).
func (d *Datapath) SetDropLog(perSecond int) { d.handler.SetDropLog(perSecond) }

// allow takes one line from the current second's allowance of rate lines.
func (l *dropLog) allow(rate int64) bool {
	sec := uint64(l.now() / int64(time.Second))
	for {
		w := l.window.Load()
		n := uint64(1)
		if w>>32 == sec {
			if n = w&0xffffffff + 1; n > uint64(rate) {
				return false
			}
		}
		if l.window.CompareAndSwap(w, sec<<32|n) {
			return true
		}
	}
}

// sinceLastLine returns how many lines were suppressed since the last line
// written, given the total suppressed so far, and marks them reported.
func (l *dropLog) sinceLastLine(total uint64) uint64 {
	for {
		old := l.reported.Load()
		if total <= old {
			return 0 // another queue reported them
		}
		if l.reported.CompareAndSwap(old, total) {
			return total - old
		}
	}
}

// logDrop writes the drop log line for the packet the engine dropped with
// res, whose first bytes the queue kept in q.head, or counts the line as
// suppressed when this second's lines are spent.
func (q *handlerQueue) logDrop(rate int64, res xlat.Result, size int) {
	h := q.h
	if !h.drops.allow(rate) {
		q.stats.DropLogSuppressed.Add(1)
		return
	}
	var total uint64
	for _, o := range h.queues {
		total += o.stats.DropLogSuppressed.Load()
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("dir", res.Dir.String()),
		slog.String("reason", res.Reason.String()))
	attrs = describePacket(attrs, q.head[:q.headLen])
	attrs = append(attrs,
		slog.Int("len", size),
		slog.Int("queue", int(q.index)),
		slog.Uint64("suppressed", h.drops.sinceLastLine(total)))
	h.log.LogAttrs(context.Background(), slog.LevelWarn, "packet dropped", attrs...)
}

// describePacket appends what a log line says about the packet whose head
// is p: protocol, addresses, ports (TCP, UDP) or type and code (ICMP,
// ICMPv6), and for a fragment its offset. What p is too short to show is
// left out; p is hostile and only read within its bounds.
func describePacket(attrs []slog.Attr, p []byte) []slog.Attr {
	if len(p) < 1 {
		return attrs
	}
	var (
		proto   uint8
		l4      []byte
		fragOff uint16
		isFrag  bool
	)
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return append(attrs, slog.Int("version", 4))
		}
		proto = p[9]
		attrs = append(attrs, slog.Any("src", netip.AddrFrom4([4]byte(p[12:16]))), slog.Any("dst", netip.AddrFrom4([4]byte(p[16:20]))))
		ff := binary.BigEndian.Uint16(p[6:])
		fragOff, isFrag = ff&0x1fff, ff&0x3fff != 0
		if ihl := int(p[0]&0xf) * 4; ihl >= 20 && ihl <= len(p) {
			l4 = p[ihl:]
		}
	case 6:
		if len(p) < 40 {
			return append(attrs, slog.Int("version", 6))
		}
		attrs = append(attrs, slog.Any("src", netip.AddrFrom16([16]byte(p[8:24]))), slog.Any("dst", netip.AddrFrom16([16]byte(p[24:40]))))
		proto, l4, fragOff, isFrag = skipExt6(p)
	default:
		return append(attrs, slog.Int("version", int(p[0]>>4)))
	}
	attrs = append(attrs, slog.String("proto", protoName(proto)))
	if isFrag {
		attrs = append(attrs, slog.Int("frag_offset", int(fragOff)*8))
	}
	if fragOff != 0 {
		return attrs // no transport header in a non-first fragment
	}
	switch proto {
	case 6, 17:
		if len(l4) >= 4 {
			attrs = append(attrs, slog.Int("sport", int(binary.BigEndian.Uint16(l4))), slog.Int("dport", int(binary.BigEndian.Uint16(l4[2:]))))
		}
	case 1, 58:
		if len(l4) >= 2 {
			attrs = append(attrs, slog.Int("icmp_type", int(l4[0])), slog.Int("icmp_code", int(l4[1])))
		}
	}
	return attrs
}

// skipExt6 finds the upper-layer protocol of the IPv6 packet head p
// (len(p) >= 40) behind the extension headers RFC 7915 section 5.1 lets
// the translator skip, and the fragment offset of a Fragment header among
// them. l4 is nil when the chain goes beyond p.
func skipExt6(p []byte) (proto uint8, l4 []byte, fragOff uint16, isFrag bool) {
	proto, off := p[6], 40
	for range 8 {
		switch proto {
		case 0, 43, 60: // Hop-by-Hop, Routing, Destination Options
			if off+2 > len(p) {
				return proto, nil, fragOff, isFrag
			}
			proto, off = p[off], off+(int(p[off+1])+1)*8
		case 44: // Fragment
			if off+8 > len(p) {
				return proto, nil, fragOff, isFrag
			}
			ff := binary.BigEndian.Uint16(p[off+2:])
			fragOff, isFrag = ff>>3, true
			proto, off = p[off], off+8
		default:
			if off > len(p) {
				return proto, nil, fragOff, isFrag
			}
			return proto, p[off:], fragOff, isFrag
		}
	}
	return proto, nil, fragOff, isFrag
}

// protoName names an IP protocol number for the drop log.
func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// IsLinkChatter reports whether p is the host's own link-scope IPv6
// traffic that a kernel sends on any link it brings up, the tun included:
// from the unspecified address or a link-local one (RFC 4291 section
// 2.5.6) to a link-scope multicast group, ff02::/16 (RFC 4291 section
// 2.7): MLD reports (RFC 3810 section 5.2.13, sent from :: before the
// link-local address exists), router solicitations, and neighbour
// solicitations for duplicate address detection (RFC 4862 section 5.4.2).
// RFC 7915 section 5.1 forbids translating such sources and destinations
// anyway (in NIC mode the other hosts on the link send the same); the
// Handler counts these packets as LinkStats.LinkChatter and
// does not hand them to the engine, so that they are not counted as
// drops of anyone's traffic.
func IsLinkChatter(p []byte) bool {
	if len(p) < 40 || p[0]>>4 != 6 || p[24] != 0xff || p[25] != 0x02 {
		return false
	}
	if p[8] == 0xfe && p[9]&0xc0 == 0x80 {
		return true // fe80::/10
	}
	for _, b := range p[8:24] {
		if b != 0 {
			return false
		}
	}
	return true // ::
}
