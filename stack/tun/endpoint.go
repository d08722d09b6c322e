package tun

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/xlat"
)

// Conn is one queue as an Endpoint uses it: one packet with its
// virtio_net_hdr per Read and per Write. *Queue implements it; so does an
// *os.File of a SOCK_SEQPACKET socket, which is how tests run without a
// tun. A Conn that is also a syscall.Conn over a non-blocking descriptor
// is read and written by raw system calls on its loop's own thread, not
// through the runtime poller (rawio_linux.go).
type Conn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// MaxReadErrors in a row end a queue's dispatch loop (and with it the
// endpoint's attachment, see Failed): the device is gone or broken, and
// spinning on it helps nobody.
const MaxReadErrors = 100

// Frame layout: a queue reads the virtio_net_hdr at FrameHeader (a longer
// or no header: so that the packet still starts at FramePacket) and the IP
// packet follows at FramePacket, with xlat.Headroom bytes in front for a
// translator to grow headers into; a result anywhere at or after
// VnetHdrLen has room for its own header in front.
const (
	FrameHeader = xlat.Headroom
	FramePacket = FrameHeader + VnetHdrLen
	frameLen    = FramePacket + GSOMaxSize
)

// Frame is the memory one queue of an Endpoint reads into: a gVisor view
// the endpoint owns for its whole life, so that a packet is delivered as a
// PacketBuffer over it (no copy) and a translator may rewrite it in place.
// Only the queue's dispatch goroutine uses a Frame, and only while it
// delivers the packet read into it.
//
// A queue that reads through its io_uring (uringio_linux.go) keeps
// several reads posted, each into memory of its own: its Frame is then
// pointed at the memory of the packet being delivered, so the same *Frame
// holds different memory from one delivery to the next.
type Frame struct {
	view *buffer.View // owns buf; PacketBuffers over the frame are clones
	buf  []byte
	// Offload is the decoded virtio_net_hdr of the packet being delivered.
	// A FrameDispatcher that rewrites the packet in place updates it to
	// describe the result; WritePackets encodes it in front of a
	// PacketBuffer that lies in the frame. It carries what gVisor's GSO
	// has no form for (UDP segmentation, the ECN bit, hdr_len).
	Offload xlat.Offload
}

// NewFrame returns a frame of its own, for a dispatcher that copies
// packets from other links into memory with headroom and writes the
// result as a PacketBuffer over it (Frame.PacketBuffer).
func NewFrame() *Frame {
	// Larger than gVisor's largest pooled chunk: allocated once, never
	// cleared or returned to a pool.
	v := buffer.NewViewSize(frameLen)
	return &Frame{view: v, buf: v.AsSlice()}
}

// Bytes is the frame's memory, len FramePacket + GSOMaxSize. A delivered
// packet starts at FramePacket.
func (f *Frame) Bytes() []byte { return f.buf }

// PacketBuffer returns a new PacketBuffer whose payload is
// f.Bytes()[start:end], without copying. The caller owns it (DecRef).
func (f *Frame) PacketBuffer(start, end int) *gvstack.PacketBuffer {
	v := f.view.Clone()
	v.TrimFront(start)
	v.CapLength(end - start)
	return gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
}

// Offset reports where b starts in the frame, if b is a slice of it.
// Two slices share memory up to the frame's end exactly when their
// last possible elements are the same.
func (f *Frame) Offset(b []byte) (int, bool) {
	if len(b) == 0 || cap(b) > len(f.buf) {
		return 0, false
	}
	full := b[:cap(b)]
	if &full[len(full)-1] != &f.buf[len(f.buf)-1] {
		return 0, false
	}
	return len(f.buf) - cap(b), true
}

// packetSlice returns the bytes of pkt if they are one contiguous view.
func packetSlice(pkt *gvstack.PacketBuffer) ([]byte, bool) {
	views, skip := pkt.AsViewList()
	v := views.Front()
	if v == nil || v.Next() != nil {
		return nil, false
	}
	s := v.AsSlice()
	if skip > len(s) {
		return nil, false
	}
	return s[skip:], true
}

// InFrame reports whether pkt is one PacketBuffer over f (made by
// f.PacketBuffer or delivered from f) and where its bytes lie in f.Bytes().
func (f *Frame) InFrame(pkt *gvstack.PacketBuffer) (start, end int, ok bool) {
	s, ok := packetSlice(pkt)
	if !ok {
		return 0, 0, false
	}
	start, ok = f.Offset(s)
	return start, start + len(s), ok
}

// FrameDispatcher is a NetworkDispatcher that an Endpoint hands packets in
// its frames (PacketBuffer.Hash is the queue index). It promises that
// TakesFrames(e) is true only if it keeps no reference to a delivered
// PacketBuffer or its memory once DeliverNetworkPacket returns, and that it
// writes a PacketBuffer over a frame (Frame.PacketBuffer) only from within
// DeliverNetworkPacket, on the delivering goroutine, with that queue's
// Hash, and leaves the bytes it wrote as they are until
// DeliverNetworkPacket returns (a queue on an io_uring sends them after
// the delivery, with the next batch). Any other packet it writes with a
// queue's Hash it writes from within that queue's deliveries too: such a
// write first submits what the queue's io_uring holds (so that packets
// leave in the order they were written), which only the ring's own
// goroutine may do. Other dispatchers (a gVisor network stack) get a copy
// of each packet in a pooled view instead.
type FrameDispatcher interface {
	gvstack.NetworkDispatcher
	TakesFrames(e *Endpoint) bool
}

// IdleDispatcher is a NetworkDispatcher told when a queue has no packet
// waiting (before the dispatch loop blocks): a time to publish batched
// counters.
type IdleDispatcher interface {
	QueueIdle(q int)
}

// BatchDispatcher is a NetworkDispatcher told of the packets a queue read
// together, before it delivers them one by one: a time to warm the memory
// translating them will read (the mapping table's slots, with
// xlat.Worker.Prefetch), so that their cache misses overlap. pkts[i] is
// the i-th packet of the batch, its IP packet from its first byte, in
// memory that stays as it is until the batch is delivered; the dispatcher
// must not keep pkts or the packets, nor change them. It is called on q's
// dispatch goroutine. A queue on its io_uring hands over each batch of
// completed reads of two packets or more (a lone packet gains nothing:
// its lookups follow at once).
type BatchDispatcher interface {
	PrefetchBatch(q int, pkts [][]byte)
}

// WarmDispatcher is a NetworkDispatcher that can rehearse its per-packet
// work without side effects. A queue whose raw wait keeps its P (after
// recent traffic, rawio_linux.go) calls WarmQueue on its dispatch
// goroutine every warmEvery while it waits, so that the next packet after
// a gap of a few milliseconds finds the translator's code and data in the
// caches and TLBs instead of paying for their misses (docs/datapath.md,
// "Where a ping's microseconds went").
type WarmDispatcher interface {
	WarmQueue(q int)
}

// LinkStats are link-level counters: what happened to packets before and
// after the translator. One type serves the endpoint (its part) and the
// data path (the endpoint's and the dispatcher's parts, which count
// different events, summed).
type LinkStats struct {
	Reads          uint64 // packets (or super-packets) handed to the translator
	Writes         uint64 // packets handed to the link to write, translated or engine-made (one a queue's io_uring fails later is in WriteErrors too)
	ReadErrors     uint64 // failed reads, and packets too large to handle
	WriteErrors    uint64 // failed or short writes; the packet is lost
	ShortVnetHdr   uint64 // reads shorter than a virtio_net_hdr
	InvalidVnetHdr uint64 // offload metadata the kernel would refuse or without a gVisor form
	NotIP          uint64 // packets that are neither IPv4 nor IPv6
	Panics         uint64 // packets on which the translator panicked; the queue went on
	NoNextHop      uint64 // NIC mode: no route or link address for the destination; also in WriteErrors
	// LinkChatter counts the host's own link-scope IPv6 traffic on the
	// link (MLD, router and neighbour solicitations from :: or fe80::/10
	// to ff02::/16): never translatable, not a drop of anyone's traffic.
	LinkChatter uint64
	// DropLogSuppressed counts drop log lines not written because the
	// drop log's rate limit was spent.
	DropLogSuppressed uint64
	// WrongSide counts NIC mode's packets of one family that arrived on
	// the other family's NIC, not for the appliance itself: dropped.
	WrongSide uint64
}

// Counters are LinkStats a goroutine updates while others read them.
type Counters struct {
	Reads, Writes, ReadErrors, WriteErrors, ShortVnetHdr, InvalidVnetHdr, NotIP, Panics atomic.Uint64
	LinkChatter, DropLogSuppressed, WrongSide                                           atomic.Uint64
}

// AddTo adds the counters to s.
func (c *Counters) AddTo(s *LinkStats) {
	s.Reads += c.Reads.Load()
	s.Writes += c.Writes.Load()
	s.ReadErrors += c.ReadErrors.Load()
	s.WriteErrors += c.WriteErrors.Load()
	s.ShortVnetHdr += c.ShortVnetHdr.Load()
	s.InvalidVnetHdr += c.InvalidVnetHdr.Load()
	s.NotIP += c.NotIP.Load()
	s.Panics += c.Panics.Load()
	s.LinkChatter += c.LinkChatter.Load()
	s.DropLogSuppressed += c.DropLogSuppressed.Load()
	s.WrongSide += c.WrongSide.Load()
}

// Endpoint is a multi-queue tun (or any set of Conns with virtio_net_hdr
// framing) as a gVisor stack.LinkEndpoint, and the translator's one read
// loop.
//
// Attach starts one goroutine per queue. Each reads a packet with its
// virtio_net_hdr into the queue's Frame and delivers it on the same
// goroutine, stamped with the queue index in PacketBuffer.Hash: to a
// FrameDispatcher as a PacketBuffer over the frame itself, to any other
// dispatcher as a copy whose GSOOptions and RXChecksumValidated say what
// the header said (OffloadToPacket). WritePackets sends each packet to
// the queue its Hash names: one from a frame with the frame's Offload
// encoded in the VnetHdrLen bytes in front of it (one write, no copy), any
// other behind a header made from its GSOOptions (OffloadFromPacket),
// copied into a per-queue write buffer.
//
// Close and Attach(nil) stop the dispatch loops; the Conns (the Device)
// stay open and are the caller's to close.
type Endpoint struct {
	queues []*queue
	mtu    atomic.Uint32
	gso    bool // TSO/USO granted: advertise host GSO

	mu         sync.Mutex // serializes Attach and Close
	dispatcher gvstack.NetworkDispatcher
	wg         sync.WaitGroup
	stopping   atomic.Bool
	run        *attachment // of the current or last dispatcher

	// wakeFd is the current attachment's eventfd (-1 if none), in every
	// raw queue's poll set: written to stop the loops or when the Device
	// closes. wakeMu guards the descriptor's life, not its use.
	wakeMu sync.Mutex
	wakeFd int
}

// attachment is one Attach's outcome: the first dispatch loop failure.
type attachment struct {
	once   sync.Once
	err    error
	failed chan struct{}
}

func (a *attachment) fail(err error) {
	a.once.Do(func() {
		a.err = err
		close(a.failed)
	})
}

// queue is one queue's state; its dispatch goroutine is the only user of
// all of it but wbuf (which foreign writers share under wmu) and the
// atomics.
type queue struct {
	index int
	name  string // in errors: "tun queue 0", or the file's name
	conn  Conn
	frame *Frame
	// hdr is the size of the virtio_net_hdr in front of every packet
	// on the wire (VnetHdrLen, MrgVnetHdrLen or 0: see
	// NewEndpointFiles); reads land at readAt, hdr bytes in front of
	// FramePacket.
	hdr, readAt int

	// rio reads and writes the descriptor itself when conn has a
	// non-blocking one (nil otherwise).
	rio  *rawIO
	idle func() // the dispatcher's QueueIdle for this queue
	warm func() // the dispatcher's WarmQueue for this queue, or nil
	// uio is the queue's io_uring and read slots once it has used them
	// (uringio_linux.go); uringOn: the loop runs on the ring now.
	uio     *uringIO
	uringOn atomic.Bool
	// unsent: the ring holds a write that no io_uring_enter submitted
	// yet (uringIO.queueWrite sets it, uringIO.enter clears it; only
	// the dispatch goroutine does either). A write made at once submits
	// it first (sendQueued), keeping the queue's order.
	unsent atomic.Bool

	wmu  sync.Mutex
	wbuf []byte // MrgVnetHdrLen + GSOMaxSize: packets from outside the frame

	stats  Counters
	exited atomic.Bool
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
	e := NewEndpointConns(conns, d.mtu, d.offloads)
	d.onClose(e.wake)
	return e
}

// NewEndpointConns returns an Endpoint over conns, which carry packets of
// up to mtu bytes, or super-packets if offloads (TUNSETOFFLOAD flags)
// include TSO or USO.
func NewEndpointConns(conns []Conn, mtu int, offloads int) *Endpoint {
	return newEndpoint(conns, mtu, offloads, VnetHdrLen, func(c Conn) bool {
		_, ofDevice := c.(*Queue) // Device.Close wakes the loop
		return !ofDevice
	})
}

// MrgVnetHdrLen is the size of struct virtio_net_hdr_mrg_rxbuf (virtio 1.0
// section 5.1.6), which QEMU and Firecracker set on the tuns and taps they
// open (TUNSETVNETHDRSZ 12): a virtio_net_hdr and num_buffers, which means
// nothing on a tun (read and ignored, written as zero).
const MrgVnetHdrLen = VnetHdrLen + 2

// NewEndpointFiles returns an Endpoint over the queues of a tun that the
// caller opened or inherited (a VM manager's, handed over as descriptors):
// files carry one bare IP packet per read and write, behind a
// virtio_net_hdr of vnetHdr bytes (VnetHdrLen, MrgVnetHdrLen, or 0 for a
// tun opened without IFF_VNET_HDR, whose packets are complete and never
// larger than mtu). offloads are the TUNSETOFFLOAD flags set on the tun.
//
// The files must be non-blocking (a blocking one is refused) and stay
// open until the dispatch loops have ended (Attach(nil), Close; then
// Wait): the queues run the same loops as a Device's (raw reads and
// writes, the raw wait of rawWait that keeps the P, the io_uring once
// busy), woken only by a stop or by the tun going away (its interface
// deleted: the read fails), never by a timeout. A queue's errors start
// with its file's name.
func NewEndpointFiles(files []*os.File, mtu, offloads, vnetHdr int) (*Endpoint, error) {
	if vnetHdr != 0 && vnetHdr != VnetHdrLen && vnetHdr != MrgVnetHdrLen {
		return nil, fmt.Errorf("tun: virtio_net_hdr of %d bytes: only %d and %d are supported", vnetHdr, VnetHdrLen, MrgVnetHdrLen)
	}
	conns := make([]Conn, len(files))
	for i, f := range files {
		conns[i] = f
	}
	e := newEndpoint(conns, mtu, offloads, vnetHdr, func(Conn) bool { return false })
	for i, f := range files {
		e.queues[i].name = f.Name()
		if e.queues[i].rio == nil {
			// A blocking read would hold the thread where no stop can
			// reach it (SetReadDeadline does not apply to a file the
			// runtime poller does not watch): Close would wait for ever.
			return nil, fmt.Errorf("tun: %s is not a non-blocking descriptor (set O_NONBLOCK before handing it over)", f.Name())
		}
	}
	return e, nil
}

// newEndpoint returns an Endpoint over conns, each packet behind hdr bytes
// of virtio_net_hdr; bounded(c): nothing but a timeout notices c being
// closed (see newRawIO).
func newEndpoint(conns []Conn, mtu, offloads, hdr int, bounded func(Conn) bool) *Endpoint {
	e := &Endpoint{
		gso:    offloads&(OffloadTSO4|OffloadTSO6|OffloadUSO4|OffloadUSO6) != 0,
		run:    &attachment{failed: make(chan struct{})},
		wakeFd: -1,
	}
	for i, c := range conns {
		q := &queue{index: i, name: fmt.Sprintf("tun queue %d", i), conn: c, frame: NewFrame(), hdr: hdr, readAt: FramePacket - hdr,
			wbuf: make([]byte, MrgVnetHdrLen+GSOMaxSize), idle: func() {}}
		if q.rio = newRawIO(c, bounded(c)); q.rio != nil {
			q.rio.waitFn = q.waitRead
			q.rio.writeFn = q.writeFd
		}
		q.exited.Store(true) // until attached
		e.queues = append(e.queues, q)
	}
	e.mtu.Store(uint32(mtu))
	return e
}

// Queues is the number of queues, each with its own dispatch goroutine.
func (e *Endpoint) Queues() int { return len(e.queues) }

// Frame is queue q's frame (whose memory is the delivered packet's: see
// Frame).
func (e *Endpoint) Frame(q int) *Frame { return e.queues[q].frame }

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
	run := &attachment{failed: make(chan struct{})}
	e.run = run
	frames := false
	if fd, ok := d.(FrameDispatcher); ok {
		frames = fd.TakesFrames(e)
	}
	idle, _ := d.(IdleDispatcher)
	warm, _ := d.(WarmDispatcher)
	wakeFd, err := e.newWake()
	if err != nil {
		// No eventfd (descriptors exhausted): nothing could stop the
		// loops, so none starts; Wait returns at once and Err says why.
		run.fail(fmt.Errorf("tun: wake eventfd: %w", err))
		return
	}
	for _, q := range e.queues {
		q.conn.SetReadDeadline(time.Time{}) // a previous stop left one in the past
		q.idle = func() {}
		if idle != nil {
			q.idle = func() { idle.QueueIdle(q.index) }
		}
		q.warm = nil
		if warm != nil {
			q.warm = func() { warm.WarmQueue(q.index) }
		}
		q.exited.Store(false)
		e.wg.Add(1)
		go q.runQueue(func() {
			defer e.wg.Done()
			defer q.exited.Store(true)
			if err := e.dispatchLoop(q, d, frames, wakeFd); err != nil {
				run.fail(err)
			}
		})
	}
}

// newWake makes the attachment's wake eventfd if a queue waits in ppoll.
func (e *Endpoint) newWake() (int, error) {
	raw := false
	for _, q := range e.queues {
		raw = raw || q.rio != nil
	}
	if !raw {
		return -1, nil
	}
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return -1, err
	}
	e.wakeMu.Lock()
	e.wakeFd = fd
	e.wakeMu.Unlock()
	return fd, nil
}

// wake makes the current attachment's eventfd readable, which ends every
// raw queue's wait; it stays readable until the attachment ends.
func (e *Endpoint) wake() {
	e.wakeMu.Lock()
	defer e.wakeMu.Unlock()
	if e.wakeFd >= 0 {
		one := [8]byte{1}
		unix.Write(e.wakeFd, one[:])
	}
}

// stop ends the dispatch loops and waits for them; e.mu is held.
func (e *Endpoint) stop() {
	if e.dispatcher == nil {
		return
	}
	e.stopping.Store(true)
	e.wake()
	for _, q := range e.queues {
		q.conn.SetReadDeadline(time.Unix(1, 0))
	}
	e.wg.Wait()
	e.stopping.Store(false)
	e.wakeMu.Lock()
	if e.wakeFd >= 0 {
		unix.Close(e.wakeFd)
		e.wakeFd = -1
	}
	e.wakeMu.Unlock()
}

// Wait implements stack.LinkEndpoint: it blocks until the dispatch loops
// have exited (after Attach(nil), Close, the queues being closed, or a
// queue failing).
func (e *Endpoint) Wait() { e.wg.Wait() }

// Failed is closed when a dispatch loop of the current attachment stops on
// an error (Err says which); the other queues keep running until
// Attach(nil) or Close.
func (e *Endpoint) Failed() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.run.failed
}

// Err is the error that ended the first failed dispatch loop of the
// current (or last) attachment, or nil.
func (e *Endpoint) Err() error {
	e.mu.Lock()
	run := e.run
	e.mu.Unlock()
	select {
	case <-run.failed:
		return run.err
	default:
		return nil
	}
}

// Exited reports whether queue q's dispatch loop is not running.
func (e *Endpoint) Exited(q int) bool { return e.queues[q].exited.Load() }

// Close implements stack.LinkEndpoint: it stops the dispatch loops. The
// queues stay open.
func (e *Endpoint) Close() { e.Attach(nil) }

// Stats returns the endpoint's counters, summed over its queues: what it
// counts itself (read errors and packets it could not deliver); reads and
// writes are counted by the dispatcher, which sees their outcome.
func (e *Endpoint) Stats() LinkStats {
	var s LinkStats
	for _, q := range e.queues {
		q.stats.AddTo(&s)
	}
	return s
}

// errStopped: the runtime poller ended a read because the read deadline
// passed (stop) or the descriptor was closed.
var errStopped = errors.New("queue stopped")

// errEOF: a socket peer went away.
var errEOF = io.EOF

// read reads one packet with its virtio_net_hdr into the frame at
// q.readAt.
func (q *queue) read(wakeFd int) (int, error) {
	if q.rio != nil {
		return q.rawRead(wakeFd)
	}
	n, err := q.conn.Read(q.frame.buf[q.readAt:])
	q.idle() // no way to tell an empty queue: keep the counts exact
	return n, err
}

// write writes one packet with its virtio_net_hdr to the queue.
func (q *queue) write(b []byte) (int, error) {
	if q.rio != nil {
		return q.rawWrite(b)
	}
	return q.conn.Write(b)
}

// dispatchLoop reads queue q and delivers to d until stopped, the queue is
// closed (nil), or reads keep failing (the error).
func (e *Endpoint) dispatchLoop(q *queue, d gvstack.NetworkDispatcher, frames bool, wakeFd int) error {
	defer q.idle()
	if q.rio != nil {
		if ran, err := e.runURing(q, d, frames, wakeFd); ran {
			return err
		}
	}
	errs := 0
	for {
		if done, err := e.readOne(q, d, frames, wakeFd, &errs); done {
			return err
		}
	}
}

// readOne reads one packet from q (waiting for it) and delivers it to d.
// done: the loop must end, with err (nil: stopped, closed, or the peer
// went away). errs counts read errors in a row.
func (e *Endpoint) readOne(q *queue, d gvstack.NetworkDispatcher, frames bool, wakeFd int, errs *int) (done bool, err error) {
	n, err := q.read(wakeFd)
	if err == errWoken {
		// A stop, a Device closing, or a bounded wait's end.
		return e.stopping.Load(), nil
	}
	if err != nil {
		if e.stopping.Load() || err == errStopped || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
			return true, nil
		}
		q.stats.ReadErrors.Add(1)
		// EBADFD: the interface was deleted under us.
		if *errs++; *errs >= MaxReadErrors || errors.Is(err, unix.EBADFD) {
			return true, fmt.Errorf("%s: read: %w", q.name, err)
		}
		return false, nil
	}
	*errs = 0
	e.deliver(q, q.frame, d, n, frames)
	return false, nil
}

// deliver hands the n bytes read into f (q's frame, or for a dispatcher
// that copies, a frame of q's io_uring) to d. A length past the frame's
// room (which no read into it can return: an io_uring completion or a
// Conn that lies) is counted as a read error instead of ending the
// process with a slice out of range.
func (e *Endpoint) deliver(q *queue, f *Frame, d gvstack.NetworkDispatcher, n int, frames bool) {
	if n < q.hdr {
		q.stats.ShortVnetHdr.Add(1)
		return
	}
	if n > len(f.buf)-q.readAt {
		q.stats.ReadErrors.Add(1)
		return
	}
	end := q.readAt + n
	ip := f.buf[FramePacket:end]
	if q.hdr == 0 {
		// No header: the packet is complete.
		f.Offload = xlat.Offload{}
		if len(ip) > int(e.mtu.Load()) {
			q.stats.ReadErrors.Add(1) // too large to handle
			return
		}
	} else {
		DecodeVnetHdr(f.buf[q.readAt:], &f.Offload)
		if ValidateOffloadPacket(&f.Offload, ip) != nil {
			q.stats.InvalidVnetHdr.Add(1)
			return
		}
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(ip) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		q.stats.NotIP.Add(1)
		return
	}
	var pkt *gvstack.PacketBuffer
	if frames {
		pkt = f.PacketBuffer(FramePacket, end)
	} else {
		pkt = gvstack.NewPacketBuffer(gvstack.PacketBufferOptions{Payload: buffer.MakeWithData(ip)})
		if !OffloadToPacket(&f.Offload, pkt) {
			pkt.DecRef()
			q.stats.InvalidVnetHdr.Add(1)
			return
		}
	}
	pkt.NetworkProtocolNumber = proto
	pkt.Hash = uint32(q.index)
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// WritePackets implements stack.LinkWriter: each packet goes to the queue
// its Hash selects (modulo the number of queues). It stops at the first
// packet it cannot write.
func (e *Endpoint) WritePackets(pkts gvstack.PacketBufferList) (int, tcpip.Error) {
	n := 0
	for _, pkt := range pkts.AsSlice() {
		if err := e.writePacket(pkt); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (e *Endpoint) writePacket(pkt *gvstack.PacketBuffer) tcpip.Error {
	q := e.queues[pkt.Hash%uint32(len(e.queues))]
	if start, end, ok := q.frame.InFrame(pkt); ok && start >= q.hdr {
		// The packet is in the frame: its header goes in front of it.
		b := q.frame.buf[start-q.hdr : end]
		if !q.encodeHdr(b, &q.frame.Offload) {
			return &tcpip.ErrNotSupported{}
		}
		if q.uio.queueWrite(b) {
			return nil // written after the delivery, with the next batch
		}
		m, err := q.write(b)
		return writeResult(m, err, len(b))
	}
	q.wmu.Lock()
	defer q.wmu.Unlock()
	n, ok := CopyPacket(q.wbuf[q.hdr:], pkt)
	if !ok {
		return &tcpip.ErrMessageTooLong{}
	}
	var off xlat.Offload
	if _, err := OffloadFromPacket(pkt, q.wbuf[q.hdr:q.hdr+n], &off); err != nil {
		return &tcpip.ErrNotSupported{}
	}
	if !q.encodeHdr(q.wbuf[:q.hdr+n], &off) {
		return &tcpip.ErrNotSupported{}
	}
	// An engine-made packet (an ICMP error, a fragment, a datagram of a
	// split UDP super-packet) follows the translated packets that earlier
	// deliveries of the batch queued on the ring.
	q.sendQueued()
	m, err := q.conn.Write(q.wbuf[:q.hdr+n])
	return writeResult(m, err, q.hdr+n)
}

// encodeHdr writes the virtio_net_hdr of off at the start of b, the
// q.hdr bytes in front of the packet (num_buffers, if any, as zero). It
// reports false if the queue has no header and off says the packet is
// not complete (a super-packet, a partial checksum): a tun without
// IFF_VNET_HDR would send it on as it is.
func (q *queue) encodeHdr(b []byte, off *xlat.Offload) bool {
	switch q.hdr {
	case 0:
		return off.Flags&xlat.OffloadNeedsCsum == 0 && off.GSOType == xlat.GSONone
	case MrgVnetHdrLen:
		b[VnetHdrLen], b[VnetHdrLen+1] = 0, 0
	}
	EncodeVnetHdr(b, off)
	return true
}

// writeResult turns the result of a write of want bytes into a
// tcpip.Error.
func writeResult(m int, err error, want int) tcpip.Error {
	switch {
	case errors.Is(err, os.ErrClosed):
		return &tcpip.ErrClosedForSend{}
	case err != nil || m != want:
		return &tcpip.ErrAborted{}
	}
	return nil
}
