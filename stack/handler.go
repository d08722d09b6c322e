package stack

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Translator is the engine as the data path sees it; *xlat.Worker
// implements it. One Translator is used by one goroutine only.
type Translator interface {
	Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result
}

// prefetcher is a Translator that can warm the memory translating a batch
// of packets will read (*xlat.Worker: the batch's mapping-table slots).
type prefetcher interface{ Prefetch(pkts [][]byte) }

// rehearser is a Translator that can make another whose work is counted
// nowhere (*xlat.Worker): the Handler rehearses packets with it (WarmQueue).
type rehearser interface{ Rehearsal() *xlat.Worker }

// flusher is a Translator that publishes its counters in batches
// (*xlat.Worker): Flush makes them exact while traffic pauses.
type flusher interface{ Flush() }

// maxPacket is the largest IP packet or GSO super-packet.
const maxPacket = 65535

// LinkStats are the link-level counters of a data path: the endpoint's
// (read errors, packets it could not deliver) and the Handler's (packets
// delivered, written, and what went wrong with them), summed over queues.
// What the engine did with each packet (per direction, protocol and drop
// reason) is in the engine's own counters (xlat.Engine.Totals).
type LinkStats = tun.LinkStats

// Handler is the translating packet handler for gVisor link endpoints: a
// gvstack.NetworkDispatcher that translates every IP packet delivered to it
// and writes the result (and whatever the engine emits) back through out.
// It is what an endpoint is attached to instead of a gVisor network stack:
// the translator terminates nothing, so no protocol stack is needed.
//
// A Handler has one translator and one set of buffers per queue, indexed
// by PacketBuffer.Hash (modulo the number of queues), and no lock: each
// queue index must be delivered by one goroutine at a time. A tun.Endpoint
// stamps the index of the queue a packet came from (and sends what is
// written with that Hash back to that queue), as the fd endpoints do; gVisor's
// fdbased endpoint with one descriptor delivers everything with Hash 0
// from one goroutine.
//
// If out is a tun.Endpoint (or any frameLink), a packet delivered in its
// queue's tun.Frame is translated in place, xlat.Headroom in front of it
// being the frame's, with the frame's Offload as its offload metadata
// (which carries UDP segmentation, which gVisor's GSO cannot), and written
// back as a PacketBuffer over the result in the same frame: the link's
// read and its write are the only copies. Any other PacketBuffer (fdbased,
// AF_PACKET) is copied into the queue's own frame (tun.NewFrame), its
// GSOOptions and RXChecksumValidated becoming the engine's xlat.Offload
// (tun.OffloadFromPacket), and the result goes out as a PacketBuffer over
// that frame with the translated offload as its GSOOptions
// (tun.OffloadToPacket): one copy more than the link's own. A writer that
// keeps the PacketBuffer (IncRef) keeps the frame; the queue then takes a
// new one.
//
// The host's own link chatter (IPv6 from :: or fe80::/10 to ff02::/16:
// MLD, router and neighbour solicitations the kernel sends on the tun as it
// comes up) is counted as LinkStats.LinkChatter and not handed to the
// engine, so it does not show as dropped traffic. With SetDropLog, every
// packet the engine drops is also logged, rate-limited, with its addresses,
// ports, protocol and reason.
//
// A panic while handling a packet is recovered on the queue that raised it:
// the packet is dropped and counted (LinkStats.Panics), logged at most once
// per PanicLogInterval with the packet in hex, and the queue goes on.
type Handler struct {
	out    gvstack.LinkWriter
	queues []*handlerQueue
	log    *slog.Logger
	link   frameLink // out, if it reads into frames
	// flushEach: the link does not say when a queue is empty (it is not
	// an IdleDispatcher's link), so the engine's batched counts are
	// published after every packet.
	flushEach bool
	lastPanic atomic.Int64 // monoNow of the last panic logged
	drops     dropLog      // the opt-in log of dropped packets (SetDropLog)
	// counts are the opt-in per-entry counters (CountMappings); nil: off.
	counts atomic.Pointer[MappingCounters]
}

// frameLink is a link whose queues read into tun.Frames and that tells
// its dispatcher when a queue is idle: a *tun.Endpoint.
type frameLink interface {
	Queues() int
	Frame(q int) *tun.Frame
}

// PanicLogInterval is the shortest time between two log lines about
// packets the translator panicked on; the rest are only counted.
var PanicLogInterval = 10 * time.Second

// handlerQueue is one queue's translator and buffers; one goroutine at a
// time uses it.
type handlerQueue struct {
	h     *Handler
	index uint32
	tr    Translator
	flush func()     // the translator's Flush, if it batches counters
	pf    prefetcher // the translator, if it prefetches batches
	frame *tun.Frame

	copyFrame *tun.Frame   // packets from elsewhere are copied into it
	off       xlat.Offload // such a packet's offload metadata
	list      gvstack.PacketBufferList
	cur       []byte // the packet being translated, for the panic log

	// While the drop log is on: the head of the packet handed to the
	// engine, as it was before the engine rewrote any of it.
	head    [dropLogHead]byte
	headLen int

	reh rehearsal

	stats    tun.Counters
	progress progress
}

var (
	_ gvstack.NetworkDispatcher = (*Handler)(nil)
	_ tun.FrameDispatcher       = (*Handler)(nil)
	_ tun.IdleDispatcher        = (*Handler)(nil)
	_ tun.BatchDispatcher       = (*Handler)(nil)
	_ tun.WarmDispatcher        = (*Handler)(nil)
)

// NewHandler returns a handler that writes to out and translates the
// packets of each of queues delivering goroutines with its own translator
// from newTranslator. If out is a tun.Endpoint, queues is its number of
// queues. log receives the panic reports (nil: discarded).
func NewHandler(out gvstack.LinkWriter, queues int, newTranslator func() Translator, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{out: out, log: log, flushEach: true}
	h.drops.now = monoNow
	if l, ok := out.(frameLink); ok {
		h.link = l
		h.flushEach = false
		queues = l.Queues()
	}
	queues = max(queues, 1)
	for i := range queues {
		q := &handlerQueue{h: h, index: uint32(i), tr: newTranslator(), flush: func() {}}
		if f, ok := q.tr.(flusher); ok {
			q.flush = f.Flush
		}
		q.pf, _ = q.tr.(prefetcher)
		if r, ok := q.tr.(rehearser); ok {
			q.reh.tr = r.Rehearsal()
		}
		if h.link != nil {
			q.frame = h.link.Frame(i)
		}
		h.queues = append(h.queues, q)
	}
	return h
}

// TakesFrames implements tun.FrameDispatcher: the Handler made for e
// translates e's frames in place and keeps no reference to them.
func (h *Handler) TakesFrames(e *tun.Endpoint) bool {
	l, ok := h.link.(*tun.Endpoint)
	return ok && l == e
}

// QueueIdle implements tun.IdleDispatcher: queue q has nothing to read,
// so its translator publishes its batched counters. It is called on q's
// dispatch goroutine.
func (h *Handler) QueueIdle(q int) {
	hq := h.queues[q%len(h.queues)]
	hq.flush()
	if hq.reh.tr != nil {
		hq.reh.want = wantBoth
	}
}

// rehearsalMax is the largest packet kept for rehearsals: a copy of it is
// made once per idle period and direction, so super-packets are left out.
const rehearsalMax = 2048

// The directions a queue keeps a sample of, by the version of the packet
// read (sampleDir): IPv4 packets (translated to IPv6) and IPv6 packets.
// The steering program puts both directions of a flow on one queue
// (stack/tun, "Queue steering"), so a queue that forwarded a request
// forwards its reply too, and the next request and the next reply each
// look up their own index lines (an IPv4 slot, an IPv6 bucket) and run
// their own direction's code.
const (
	dir4     = 0
	dir6     = 1
	wantBoth = 1<<dir4 | 1<<dir6
)

// sampleDir is the direction whose sample pkt (non-empty) would be: the
// version nibble's bit 1 is 0 for 4 and 1 for 6. Other versions, which
// the engine drops, are never kept (only forwarded packets are).
func sampleDir(pkt []byte) int { return int(pkt[0] >> 5 & 1) }

// rehearsal is a queue's copy of the packets its translator forwarded
// recently, one per direction, and what replays them (WarmQueue).
type rehearsal struct {
	tr     Translator // counted nowhere (xlat.Worker.Rehearsal); nil: no rehearsals
	frame  *tun.Frame // the replay's memory, made at the first rehearsal
	offNow xlat.Offload
	dirs   [2]rehearsalSample // by sampleDir
	// next is the direction of the packet sampled last (sample).
	next int
	// want: the directions (bit sampleDir) whose next forwarded packet
	// becomes the one replayed; set when the queue goes idle
	// (QueueIdle), cleared per direction by the packet kept.
	want uint8
	// lead is the direction of the first packet forwarded after the
	// queue last rehearsed, that is after a wait of a millisecond or more:
	// the side that starts an exchange after a pause (a ping's request),
	// replayed last so that its path is the freshest when the next
	// exchange starts. warmed: a rehearsal ran since then.
	lead   int
	warmed bool
	runs   uint64 // rehearsals that forwarded, for tests
}

// rehearsalSample is one direction's packet replayed by a queue.
type rehearsalSample struct {
	// pkt[cur][:n] is the packet replayed, with offload metadata off if
	// hasOff; pkt[1-cur][:nextN] is the one being translated, copied
	// before the engine rewrote it, which replaces it once forwarded.
	pkt                [2][rehearsalMax]byte
	cur                int
	n, nextN           int
	off, nextOff       xlat.Offload
	hasOff, nextHasOff bool
}

// WarmQueue implements tun.WarmDispatcher: while queue q waits for packets
// after recent traffic, it translates a copy of the first IPv4 and the
// first IPv6 packet the queue forwarded after its last idle period with a
// translator whose counts go nowhere, and makes and frees the
// PacketBuffer each result would go out in, writing nothing. The next
// packet in either direction then finds the engine's and gVisor's code
// and the mapping table's lines warm: a packet after a gap of more than a
// few ms otherwise spent several times the user time of one right after
// another, and in a table of a million entries the lines of each
// direction's lookups are cold after such a gap (docs/datapath.md, "Where
// a ping's microseconds went", "Batches and the mapping table"). It is
// called on q's dispatch goroutine.
func (h *Handler) WarmQueue(q int) {
	hq := h.queues[q%len(h.queues)]
	hq.rehearse(1 - hq.reh.lead)
	hq.rehearse(hq.reh.lead)
	hq.reh.warmed = true
}

// rehearse replays the queue's sample packet of direction d (WarmQueue).
func (q *handlerQueue) rehearse(d int) {
	r := &q.reh
	s := &r.dirs[d]
	if s.n == 0 || r.tr == nil {
		return
	}
	defer func() {
		if recover() != nil {
			// The engine panics on this packet now (a new
			// configuration?); the packet path recovers from that on its
			// own. Forget the sample rather than panic every period.
			s.n = 0
			q.stats.Panics.Add(1)
		}
	}()
	if r.frame == nil {
		r.frame = tun.NewFrame()
	}
	buf := r.frame.Bytes()
	n := copy(buf[tun.FramePacket:], s.pkt[s.cur][:s.n])
	var off *xlat.Offload
	if s.hasOff {
		r.offNow = s.off
		off = &r.offNow
	}
	res := r.tr.Process(buf, tun.FramePacket, tun.FramePacket+n, off, rehearsalSink{})
	if res.Verdict == xlat.Forward && res.Start >= tun.VnetHdrLen && res.Start <= res.End && res.End <= len(buf) {
		r.frame.PacketBuffer(res.Start, res.End).DecRef()
		r.runs++
	}
}

// sample copies the packet about to be translated if the queue wants a new
// packet of its direction to rehearse (once per idle period and
// direction; whole packets without segmentation offload only), and
// reports whether it did: keepSample keeps the copy if the engine then
// forwards the packet.
func (q *handlerQueue) sample(off *xlat.Offload) bool {
	r := &q.reh
	if len(q.cur) == 0 || len(q.cur) > rehearsalMax || off != nil && off.GSOType&^xlat.GSOECN != xlat.GSONone {
		return false
	}
	d := sampleDir(q.cur)
	if r.want&(1<<d) == 0 {
		return false
	}
	s := &r.dirs[d]
	r.next = d
	s.nextN = copy(s.pkt[1-s.cur][:], q.cur)
	s.nextHasOff = off != nil
	if off != nil {
		s.nextOff = *off
	}
	return true
}

// keepSample makes the packet sampled before translation the one replayed
// in its direction, now that the engine forwarded it.
func (q *handlerQueue) keepSample() {
	r := &q.reh
	s := &r.dirs[r.next]
	s.cur, s.n, s.nextN = 1-s.cur, s.nextN, 0
	s.hasOff, s.off = s.nextHasOff, s.nextOff
	r.want &^= 1 << r.next
	if r.warmed {
		r.lead, r.warmed = r.next, false
	}
}

// rehearsalSink drops what a rehearsal's engine emits.
type rehearsalSink struct{}

func (rehearsalSink) Emit([]byte, *xlat.Offload) {}

// PrefetchBatch implements tun.BatchDispatcher: queue q's translator
// warms the mapping-table slots that translating pkts, which the queue
// read together, will read, so that their cache misses overlap instead of
// coming one per packet (docs/datapath.md, "Batches and the mapping
// table"). It changes no result and does not allocate.
func (h *Handler) PrefetchBatch(q int, pkts [][]byte) {
	if pf := h.queues[q%len(h.queues)].pf; pf != nil {
		pf.Prefetch(pkts)
	}
}

// DeliverNetworkPacket implements gvstack.NetworkDispatcher: it translates
// pkt, which holds a whole IPv4 or IPv6 packet (the engine reads the version
// from the packet itself, so protocol is not needed), on the queue
// pkt.Hash names.
func (h *Handler) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	q := h.queues[pkt.Hash%uint32(len(h.queues))]
	q.stats.Reads.Add(1)
	q.progress.busy.Store(true)
	defer q.done()
	if q.frame != nil {
		if start, end, ok := q.frame.InFrame(pkt); ok && start >= xlat.Headroom {
			q.translate(q.frame.Bytes(), start, end, &q.frame.Offload, q.frame)
			return
		}
	}
	q.deliverCopy(pkt)
}

// DeliverLinkPacket implements gvstack.NetworkDispatcher. It is for packet
// sockets (taps on the link); the translator has none, so it does nothing.
func (h *Handler) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// done ends a delivery: it recovers from a panic of the translator (the
// packet is lost, the queue goes on) and publishes progress.
func (q *handlerQueue) done() {
	if r := recover(); r != nil {
		q.stats.Panics.Add(1)
		q.list.Reset()
		q.h.logPanic(int(q.index), r, q.cur)
	}
	q.cur = nil
	if q.h.flushEach {
		// The link says nothing about an empty queue: publish the
		// engine's counts after every packet.
		q.flush()
	}
	q.progress.busy.Store(false)
}

// logPanic logs a recovered panic with the packet as it was when the
// translator panicked, at most once per PanicLogInterval.
func (h *Handler) logPanic(q int, r any, pkt []byte) {
	now, last := monoNow(), h.lastPanic.Load()
	if last != 0 && time.Duration(now-last) < PanicLogInterval || !h.lastPanic.CompareAndSwap(last, now) {
		return
	}
	const show = 256
	h.log.Error("translator panicked; packet dropped, queue goes on (further panics only counted for a while)",
		"queue", q, "panic", fmt.Sprint(r), "len", len(pkt), "packet", hex.EncodeToString(pkt[:min(len(pkt), show)]))
}

// deliverCopy translates a packet that is not in a frame of out: it is
// copied into the queue's copy frame, with headroom, first.
func (q *handlerQueue) deliverCopy(pkt *gvstack.PacketBuffer) {
	if q.copyFrame == nil {
		q.copyFrame = tun.NewFrame()
	}
	buf := q.copyFrame.Bytes()
	n, ok := tun.CopyPacket(buf[tun.FramePacket:], pkt)
	if !ok {
		q.stats.ReadErrors.Add(1) // larger than any IP packet: truncated by the link
		return
	}
	var off *xlat.Offload
	has, err := tun.OffloadFromPacket(pkt, buf[tun.FramePacket:tun.FramePacket+n], &q.off)
	if err == nil && has {
		err = tun.ValidateOffloadPacket(&q.off, buf[tun.FramePacket:tun.FramePacket+n])
		off = &q.off
	}
	if err != nil {
		q.stats.InvalidVnetHdr.Add(1)
		return
	}
	q.translate(buf, tun.FramePacket, tun.FramePacket+n, off, q.copyFrame)
}

// translate has the engine rewrite buf[start:end], which lies in frame f,
// and writes the result as a PacketBuffer over f: the link's frame (its
// Offload is the metadata the link writes) or the queue's copy frame (the
// metadata goes into the PacketBuffer's GSOOptions).
func (q *handlerQueue) translate(buf []byte, start, end int, off *xlat.Offload, f *tun.Frame) {
	q.cur = buf[start:end]
	if IsLinkChatter(q.cur) {
		// The host's own MLD, RS and ND on the link: not traffic to
		// translate, and not a drop worth an operator's attention.
		q.stats.LinkChatter.Add(1)
		return
	}
	rate := q.h.drops.perSecond.Load()
	if rate > 0 {
		q.headLen = copy(q.head[:], q.cur)
	}
	var cs *countSet
	ent := -1
	if m := q.h.counts.Load(); m != nil {
		// Looked up before the engine rewrites the addresses; the engine's
		// own lookup of the same address then finds its slot in cache.
		cs = m.cur.Load()
		ent = cs.entry(q.cur)
	}
	sampled := q.reh.want != 0 && q.sample(off)
	res := q.tr.Process(buf, start, end, off, q)
	if sampled && res.Verdict == xlat.Forward {
		q.keepSample()
	}
	if ent >= 0 && res.Verdict != xlat.Drop {
		c := &cs.queue[q.index][ent]
		c.packets[res.Dir].Store(c.packets[res.Dir].Load() + 1)
		c.bytes[res.Dir].Store(c.bytes[res.Dir].Load() + uint64(end-start))
	}
	if res.Verdict != xlat.Forward {
		if res.Verdict == xlat.Drop && rate > 0 {
			q.logDrop(rate, res, end-start)
		}
		return
	}
	if res.Start < tun.VnetHdrLen || res.Start > res.End || res.End > len(buf) {
		// The engine broke its Headroom contract; nothing sane to send.
		q.stats.WriteErrors.Add(1)
		return
	}
	pb := f.PacketBuffer(res.Start, res.End)
	if f == q.frame {
		q.send(pb)
		return
	}
	if off != nil && !tun.OffloadToPacket(off, pb) {
		pb.DecRef()
		q.stats.InvalidVnetHdr.Add(1)
		return
	}
	if q.send(pb) {
		// The writer kept the packet (a queueing discipline, say): its
		// memory is the copy frame's, so the next packet goes elsewhere.
		q.copyFrame = nil
	}
}

// Emit implements xlat.Sink: engine-made packets go out like translated
// ones, with their offload metadata if they have any.
func (q *handlerQueue) Emit(pkt []byte, off *xlat.Offload) { q.write(pkt, off) }

// write sends a copy of p, whose offload metadata is off (nil: complete).
func (q *handlerQueue) write(p []byte, off *xlat.Offload) {
	pb := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		Payload: buffer.MakeWithData(p),
	})
	if off != nil && !tun.OffloadToPacket(off, pb) {
		pb.DecRef()
		q.stats.InvalidVnetHdr.Add(1)
		return
	}
	q.send(pb)
}

// send writes pb, which it consumes, to the queue it came from. It reports
// whether the writer kept a reference to pb.
func (q *handlerQueue) send(pb *gvstack.PacketBuffer) (kept bool) {
	pb.Hash = q.index
	q.list.PushBack(pb)
	n, err := q.h.out.WritePackets(q.list)
	kept = pb.ReadRefs() > 1
	q.list.Reset()
	if err != nil || n != 1 {
		q.stats.WriteErrors.Add(1)
		return kept
	}
	q.stats.Writes.Add(1)
	return kept
}

// Stats returns the handler's link-level counters, summed over its queues.
func (h *Handler) Stats() LinkStats {
	var s LinkStats
	for _, q := range h.queues {
		q.stats.AddTo(&s)
	}
	return s
}
