package stack

import (
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Handler is the translating packet handler for gVisor link endpoints: a
// gvstack.NetworkDispatcher that translates every IP packet delivered to it
// and writes the result (and whatever the engine emits) back through out.
// It is what an endpoint is attached to instead of a gVisor network stack:
// the translator terminates nothing, so no protocol stack is needed.
//
// A PacketBuffer's storage is a chain of views with no room in front, so
// Handler copies each packet into its own buffer (with xlat.Headroom in
// front) before translating; the copy out is a pooled gVisor view. Handler
// itself allocates nothing per packet. Calls are serialized by a mutex (the
// fdbased endpoint delivers from one goroutine per descriptor, the lock is
// uncontended then; a tun.Endpoint delivers from one per queue, which then
// take turns).
//
// Offload metadata travels in the PacketBuffer: GSOOptions and
// RXChecksumValidated of a delivered packet become the engine's
// xlat.Offload (tun.OffloadFromPacket), and the translated offload goes
// back into the PacketBuffer written out (tun.OffloadToPacket), which a
// tun.Endpoint encodes as the packet's virtio_net_hdr. A packet without any
// (fdbased without GSO) is translated as complete, as before.
type Handler struct {
	mu   sync.Mutex
	tr   Translator
	out  gvstack.LinkWriter
	buf  []byte
	list gvstack.PacketBufferList
	off  xlat.Offload // the current packet's offload metadata

	flush    func() // the translator's Flush, if it batches counters
	stats    linkCounters
	progress progress
}

var _ gvstack.NetworkDispatcher = (*Handler)(nil)

// NewHandler returns a handler that translates with tr and writes to out.
func NewHandler(tr Translator, out gvstack.LinkWriter) *Handler {
	h := &Handler{tr: tr, out: out, buf: make([]byte, xlat.Headroom+maxPacket), flush: func() {}}
	if f, ok := tr.(flusher); ok {
		h.flush = f.Flush
	}
	return h
}

// DeliverNetworkPacket implements gvstack.NetworkDispatcher: it translates
// pkt, which holds a whole IPv4 or IPv6 packet (the engine reads the version
// from the packet itself, so protocol is not needed).
func (h *Handler) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.progress.since.Store(monoNow())
	h.progress.busy.Store(true)
	defer h.progress.busy.Store(false)
	h.stats.reads.Add(1)

	n, ok := tun.CopyPacket(h.buf[xlat.Headroom:], pkt)
	if !ok {
		h.stats.readErrors.Add(1) // larger than any IP packet: truncated by the link
		return
	}
	var off *xlat.Offload
	has, err := tun.OffloadFromPacket(pkt, h.buf[xlat.Headroom:xlat.Headroom+n], &h.off)
	if err == nil && has {
		err = tun.ValidateOffload(&h.off, n)
		off = &h.off
	}
	if err != nil {
		h.stats.invalidVnetHdr.Add(1)
		return
	}
	res := h.tr.Process(h.buf, xlat.Headroom, xlat.Headroom+n, off, h)
	// fdbased says nothing about an empty queue; this path is the slow
	// one anyway, so publish the engine's counts after every packet.
	h.flush()
	if res.Verdict != xlat.Forward {
		return
	}
	if res.Start < 0 || res.Start > res.End || res.End > len(h.buf) {
		h.stats.writeErrors.Add(1)
		return
	}
	h.write(h.buf[res.Start:res.End], off)
}

// DeliverLinkPacket implements gvstack.NetworkDispatcher. It is for packet
// sockets (taps on the link); the translator has none, so it does nothing.
func (h *Handler) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// Emit implements xlat.Sink: engine-made packets go out like translated
// ones, with their offload metadata if they have any.
func (h *Handler) Emit(pkt []byte, off *xlat.Offload) { h.write(pkt, off) }

// write sends p, whose offload metadata is off (nil: complete).
func (h *Handler) write(p []byte, off *xlat.Offload) {
	pb := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		Payload: buffer.MakeWithData(p),
	})
	if off != nil && !tun.OffloadToPacket(off, pb) {
		pb.DecRef()
		h.stats.writeErrors.Add(1)
		return
	}
	h.list.PushBack(pb)
	n, err := h.out.WritePackets(h.list)
	h.list.Reset()
	if err != nil || n != 1 {
		h.stats.writeErrors.Add(1)
		return
	}
	h.stats.writes.Add(1)
}

// Stats returns the handler's link-level counters.
func (h *Handler) Stats() LinkStats {
	var s LinkStats
	h.stats.addTo(&s)
	return s
}
