package tun

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// Conn is one queue as an Endpoint uses it: one packet with its
// virtio_net_hdr per Read and per Write. *Queue implements it; so does an
// *os.File of a SOCK_SEQPACKET socket, which is how tests run without a
// tun.
type Conn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// maxReadErrors in a row end a queue's dispatch loop: the device is gone.
const maxReadErrors = 100

// Endpoint is a multi-queue tun (or any set of Conns with virtio_net_hdr
// framing) as a gVisor stack.LinkEndpoint: the general, PacketBuffer-based
// way to the queues, for a stack.NetworkDispatcher such as the
// translator's stack.Handler or a gVisor network stack.
//
// Attach starts one goroutine per queue. Each reads a packet with its
// virtio_net_hdr into the queue's buffer, copies it into a new PacketBuffer
// whose GSOOptions and RXChecksumValidated say what the header said
// (OffloadToPacket), and delivers it. WritePackets does the reverse
// (OffloadFromPacket), copying each packet behind its header into a
// per-queue buffer for one write. Neither allocates beyond what gVisor's
// pooled PacketBuffer costs; that cost is why stack.Serve does not use this
// type but reads the same queues itself (see the package comment).
//
// Close and Attach(nil) stop the dispatch loops; the Conns (the Device)
// stay open and are the caller's to close.
type Endpoint struct {
	conns   []Conn
	readBuf [][]byte
	writers []queueWriter
	mtu     atomic.Uint32
	gso     bool // TSO/USO granted: advertise host GSO

	mu         sync.Mutex // serializes Attach and Close
	dispatcher gvstack.NetworkDispatcher
	wg         sync.WaitGroup
	stopping   atomic.Bool

	stats endpointCounters
}

type queueWriter struct {
	mu  sync.Mutex
	buf []byte
}

// EndpointStats are an Endpoint's link-level counters, summed over its
// queues.
type EndpointStats struct {
	Reads          uint64 // packets read and delivered
	Writes         uint64 // packets written
	ReadErrors     uint64 // failed reads
	WriteErrors    uint64 // packets WritePackets refused or failed to write
	ShortVnetHdr   uint64 // reads shorter than a virtio_net_hdr
	InvalidVnetHdr uint64 // headers ValidateOffload refuses, or without a gVisor form
	NotIP          uint64 // packets that are neither IPv4 nor IPv6
}

type endpointCounters struct {
	reads, writes, readErrors, writeErrors, shortVnetHdr, invalidVnetHdr, notIP atomic.Uint64
}

var (
	_ gvstack.LinkEndpoint = (*Endpoint)(nil)
	_ gvstack.GSOEndpoint  = (*Endpoint)(nil)
)

// NewEndpoint returns d as a gVisor link endpoint over all its queues, with
// its MTU and the offloads the kernel granted.
func NewEndpoint(d *Device) *Endpoint {
	conns := make([]Conn, len(d.queues))
	for i, q := range d.queues {
		conns[i] = q
	}
	return NewEndpointConns(conns, d.mtu, d.offloads)
}

// NewEndpointConns returns an Endpoint over conns, which carry packets of
// up to mtu bytes, or super-packets if offloads (TUNSETOFFLOAD flags)
// include TSO or USO.
func NewEndpointConns(conns []Conn, mtu int, offloads int) *Endpoint {
	e := &Endpoint{
		conns:   conns,
		readBuf: make([][]byte, len(conns)),
		writers: make([]queueWriter, len(conns)),
		gso:     offloads&(OffloadTSO4|OffloadTSO6|OffloadUSO4|OffloadUSO6) != 0,
	}
	for i := range conns {
		e.readBuf[i] = make([]byte, VnetHdrLen+GSOMaxSize)
		e.writers[i].buf = make([]byte, VnetHdrLen+GSOMaxSize)
	}
	e.mtu.Store(uint32(mtu))
	return e
}

// MTU implements stack.LinkEndpoint.
func (e *Endpoint) MTU() uint32 { return e.mtu.Load() }

// SetMTU implements stack.LinkEndpoint. It changes what MTU reports, not
// the interface (whose MTU is set by Open or by the administrator).
func (e *Endpoint) SetMTU(mtu uint32) { e.mtu.Store(mtu) }

// MaxHeaderLength implements stack.LinkEndpoint: a tun has no link header.
func (*Endpoint) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: a tun has none.
func (*Endpoint) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint; a tun has no link address.
func (*Endpoint) SetLinkAddress(tcpip.LinkAddress) {}

// Capabilities implements stack.LinkEndpoint. Packets from the tun come
// from the local kernel, which has validated or will complete their
// checksums (a partial one cannot be verified), hence
// CapabilityRXChecksumOffload. Transmit checksum offload is not advertised:
// gVisor would then leave non-GSO checksums unset without saying so in the
// packet, and the kernel would forward them broken.
func (*Endpoint) Capabilities() gvstack.LinkEndpointCapabilities {
	return gvstack.CapabilityRXChecksumOffload
}

// GSOMaxSize implements stack.GSOEndpoint: GSOMaxSize if the kernel granted
// segmentation offloads, else 0.
func (e *Endpoint) GSOMaxSize() uint32 {
	if e.gso {
		return GSOMaxSize
	}
	return 0
}

// SupportedGSO implements stack.GSOEndpoint: the kernel (the host)
// segments what is written with a GSO virtio_net_hdr.
func (e *Endpoint) SupportedGSO() gvstack.SupportedGSO {
	if e.gso {
		return gvstack.HostGSOSupported
	}
	return gvstack.GSONotSupported
}

// ARPHardwareType implements stack.LinkEndpoint.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint: there is no link header.
func (*Endpoint) AddHeader(*gvstack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint: there is no link header.
func (*Endpoint) ParseHeader(*gvstack.PacketBuffer) bool { return true }

// SetOnCloseAction implements stack.LinkEndpoint; the endpoint never
// closes by itself.
func (*Endpoint) SetOnCloseAction(func()) {}

// IsAttached implements stack.LinkEndpoint.
func (e *Endpoint) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Attach implements stack.LinkEndpoint: it stops the dispatch loops of a
// previous dispatcher, then, unless d is nil, starts one per queue that
// delivers to d.
func (e *Endpoint) Attach(d gvstack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stop()
	e.dispatcher = d
	if d == nil {
		return
	}
	for i, c := range e.conns {
		c.SetReadDeadline(time.Time{}) // a previous stop left one in the past
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.dispatchLoop(i, d)
		}()
	}
}

// stop ends the dispatch loops and waits for them; e.mu is held.
func (e *Endpoint) stop() {
	if e.dispatcher == nil {
		return
	}
	e.stopping.Store(true)
	for _, c := range e.conns {
		c.SetReadDeadline(time.Unix(1, 0))
	}
	e.wg.Wait()
	e.stopping.Store(false)
}

// Wait implements stack.LinkEndpoint: it blocks until the dispatch loops
// have exited (after Attach(nil), Close, or the queues being closed).
func (e *Endpoint) Wait() { e.wg.Wait() }

// Close implements stack.LinkEndpoint: it stops the dispatch loops. The
// queues stay open.
func (e *Endpoint) Close() { e.Attach(nil) }

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() EndpointStats {
	c := &e.stats
	return EndpointStats{
		Reads: c.reads.Load(), Writes: c.writes.Load(),
		ReadErrors: c.readErrors.Load(), WriteErrors: c.writeErrors.Load(),
		ShortVnetHdr: c.shortVnetHdr.Load(), InvalidVnetHdr: c.invalidVnetHdr.Load(),
		NotIP: c.notIP.Load(),
	}
}

// dispatchLoop reads queue i and delivers to d until stopped, the queue is
// closed, or reads keep failing.
func (e *Endpoint) dispatchLoop(i int, d gvstack.NetworkDispatcher) {
	c, buf := e.conns[i], e.readBuf[i]
	errs := 0
	for {
		n, err := c.Read(buf)
		if err != nil {
			if e.stopping.Load() || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return
			}
			e.stats.readErrors.Add(1)
			if errs++; errs >= maxReadErrors {
				return
			}
			continue
		}
		errs = 0
		e.deliver(d, buf[:n])
	}
}

// deliver hands one packet read from a queue, b, to d.
func (e *Endpoint) deliver(d gvstack.NetworkDispatcher, b []byte) {
	var off xlat.Offload
	if DecodeVnetHdr(b, &off) != nil {
		e.stats.shortVnetHdr.Add(1)
		return
	}
	ip := b[VnetHdrLen:]
	if ValidateOffload(&off, len(ip)) != nil {
		e.stats.invalidVnetHdr.Add(1)
		return
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(ip) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		e.stats.notIP.Add(1)
		return
	}
	pkt := gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
	defer pkt.DecRef()
	if !OffloadToPacket(&off, pkt) {
		e.stats.invalidVnetHdr.Add(1)
		return
	}
	pkt.NetworkProtocolNumber = proto
	e.stats.reads.Add(1)
	d.DeliverNetworkPacket(proto, pkt)
}

// WritePackets implements stack.LinkWriter: each packet goes to the queue
// its Hash selects, behind a virtio_net_hdr made from its GSOOptions
// (OffloadFromPacket). It stops at the first packet it cannot write.
func (e *Endpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			e.stats.writeErrors.Add(1)
			return n, err
		}
		e.stats.writes.Add(1)
		n++
	}
	return n, nil
}

func (e *Endpoint) writePacket(pkt *gvstack.PacketBuffer) tcpip.Error {
	w := &e.writers[pkt.Hash%uint32(len(e.writers))]
	w.mu.Lock()
	defer w.mu.Unlock()
	n, ok := CopyPacket(w.buf[VnetHdrLen:], pkt)
	if !ok {
		return &tcpip.ErrMessageTooLong{}
	}
	var off xlat.Offload
	if _, err := OffloadFromPacket(pkt, w.buf[VnetHdrLen:VnetHdrLen+n], &off); err != nil {
		return &tcpip.ErrNotSupported{}
	}
	EncodeVnetHdr(w.buf, &off)
	m, err := e.conns[pkt.Hash%uint32(len(e.conns))].Write(w.buf[:VnetHdrLen+n])
	switch {
	case errors.Is(err, os.ErrClosed):
		return &tcpip.ErrClosedForSend{}
	case err != nil || m != VnetHdrLen+n:
		return &tcpip.ErrAborted{}
	}
	return nil
}
