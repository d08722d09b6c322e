package stack

import (
	"sync"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

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
// fdbased endpoint delivers from one goroutine per descriptor; the lock is
// uncontended then).
type Handler struct {
	mu   sync.Mutex
	tr   Translator
	out  gvstack.LinkWriter
	buf  []byte
	list gvstack.PacketBufferList

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

	n, ok := copyPacket(h.buf[xlat.Headroom:], pkt)
	if !ok {
		h.stats.readErrors.Add(1) // larger than any IP packet: truncated by the link
		return
	}
	res := h.tr.Process(h.buf, xlat.Headroom, xlat.Headroom+n, nil, h)
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
	h.write(h.buf[res.Start:res.End])
}

// copyPacket copies the whole packet (headers and data) into dst without
// allocating; ok is false if it does not fit.
func copyPacket(dst []byte, pkt *gvstack.PacketBuffer) (n int, ok bool) {
	views, skip := pkt.AsViewList()
	for v := views.Front(); v != nil; v = v.Next() {
		s := v.AsSlice()
		if skip >= len(s) {
			skip -= len(s)
			continue
		}
		s = s[skip:]
		skip = 0
		if len(s) > len(dst)-n {
			return n, false
		}
		n += copy(dst[n:], s)
	}
	return n, true
}

// DeliverLinkPacket implements gvstack.NetworkDispatcher. It is for packet
// sockets (taps on the link); the translator has none, so it does nothing.
func (h *Handler) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

// Emit implements xlat.Sink: engine-made packets go out like translated
// ones. The fd path gives the engine no offload metadata, so what it emits
// is complete and off is nil.
func (h *Handler) Emit(pkt []byte, _ *xlat.Offload) { h.write(pkt) }

func (h *Handler) write(p []byte) {
	h.list.PushBack(gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{
		Payload: buffer.MakeWithData(p),
	}))
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
