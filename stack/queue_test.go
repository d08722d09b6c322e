package stack

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Markers in the second byte of a test packet tell fakeTranslator what to do.
const (
	markForward = 0x00
	markEmit    = 0xee // emit two packets, consume the original
	markDrop    = 0xdd
	markBlock   = 0xbb // wait for release before forwarding
)

// fakeTranslator mimics the engine's contract without translating: an
// "IPv4" packet (first nibble 4) grows 20 bytes at the front, as a header
// swap would, and its offload metadata moves the same way; an "IPv6" one
// shrinks by 20. It checks what the data path promises the engine.
type fakeTranslator struct {
	t       testing.TB
	calls   atomic.Int64
	release chan struct{}
	emitOff xlat.Offload
}

var emitted1, emitted2 = []byte{0x45, 'E', '1'}, []byte{0x45, 'E', '2'}

func (f *fakeTranslator) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	f.calls.Add(1)
	if start < xlat.Headroom || end > len(buf) || start > end {
		f.t.Errorf("Process called with [%d:%d] of %d bytes", start, end, len(buf))
		return xlat.Result{Verdict: xlat.Drop}
	}
	pkt := buf[start:end]
	if len(pkt) < 2 {
		return xlat.Result{Verdict: xlat.Drop, Reason: xlat.ReasonMalformed}
	}
	switch pkt[1] {
	case markDrop:
		return xlat.Result{Verdict: xlat.Drop, Reason: xlat.ReasonMalformed}
	case markEmit:
		f.emitOff = xlat.Offload{Flags: xlat.OffloadDataValid}
		sink.Emit(emitted1, &f.emitOff)
		sink.Emit(emitted2, nil)
		return xlat.Result{Verdict: xlat.Consumed}
	case markBlock:
		<-f.release
	}
	if pkt[0]>>4 == 4 {
		for i := start - 20; i < start; i++ {
			buf[i] = 0x66
		}
		if off != nil && off.GSOType&^xlat.GSOECN == xlat.GSOTCPv4 {
			off.GSOType = off.GSOType&xlat.GSOECN | xlat.GSOTCPv6
		}
		if off != nil && off.Flags&xlat.OffloadNeedsCsum != 0 {
			off.CsumStart += 20
			off.HdrLen += 20
		}
		return xlat.Result{Start: start - 20, End: end, Verdict: xlat.Forward}
	}
	if off != nil && off.Flags&xlat.OffloadNeedsCsum != 0 {
		off.CsumStart -= 20
		off.HdrLen -= 20
	}
	return xlat.Result{Start: start + 20, End: end, Verdict: xlat.Forward, Dir: xlat.Dir64}
}

// seqpacketPair returns the two ends of a SOCK_SEQPACKET socketpair, which
// keeps packet boundaries like a tun queue.
func seqpacketPair(t testing.TB) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		// Room for a few 64 KiB super-packets in flight.
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	a, b := os.NewFile(uintptr(fds[0]), "datapath"), os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func vnetPacket(off xlat.Offload, pkt []byte) []byte {
	b := make([]byte, tun.VnetHdrLen+len(pkt))
	tun.EncodeVnetHdr(b, &off)
	copy(b[tun.VnetHdrLen:], pkt)
	return b
}

// readPacket reads one packet from the peer end, failing after a second.
func readPacket(t testing.TB, peer *os.File) (xlat.Offload, []byte) {
	t.Helper()
	buf := make([]byte, tun.VnetHdrLen+maxPacket+100)
	peer.SetReadDeadline(time.Now().Add(time.Second))
	n, err := peer.Read(buf)
	if err != nil {
		t.Fatalf("reading the data path's output: %v", err)
	}
	var off xlat.Offload
	if err := tun.DecodeVnetHdr(buf[:n], &off); err != nil {
		t.Fatal(err)
	}
	return off, buf[tun.VnetHdrLen:n]
}

func expectNoPacket(t testing.TB, peer *os.File) {
	t.Helper()
	buf := make([]byte, 100)
	peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := peer.Read(buf); err == nil {
		t.Fatalf("unexpected packet % x", buf[:n])
	}
}

// tcp4Packet is testPacket(4, mark, n) with the IPv4 and TCP header
// fields that offload metadata is checked against
// (tun.ValidateOffloadPacket): a 20-byte header, no fragment, TCP with a
// 20-byte header.
func tcp4Packet(mark byte, n int) []byte {
	p := testPacket(4, mark, n)
	p[0], p[6], p[7], p[9], p[20+12] = 0x45, 0, 0, 6, 5<<4
	return p
}

func testPacket(version, mark byte, n int) []byte {
	p := make([]byte, n)
	p[0] = version << 4
	p[1] = mark
	for i := 2; i < n; i++ {
		p[i] = byte(i * 7)
	}
	return p
}

// serveConns serves conns, each one queue, through tun.Endpoint and a
// Handler whose queues translate with newTranslator (serveLink).
func serveConns(ctx context.Context, conns []tun.Conn, newTranslator func() Translator) (*Datapath, error) {
	return serveLink(ctx, newTranslator, tun.NewEndpointConns(conns, 1520, allOffloads), nil)
}

func TestQueueFraming(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fake := &fakeTranslator{t: t}
	d, err := serveConns(ctx, []tun.Conn{conn}, func() Translator { return fake })
	if err != nil {
		t.Fatal(err)
	}
	tso4 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv4 | xlat.GSOECN, HdrLen: 52, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	tso6 := xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6 | xlat.GSOECN, HdrLen: 72, GSOSize: 1448, CsumStart: 40, CsumOffset: 16}
	for _, tc := range []struct {
		name    string
		in      xlat.Offload
		pkt     []byte
		wantOff xlat.Offload
		want    []byte
	}{
		{"plain 4to6", xlat.Offload{}, testPacket(4, markForward, 100), xlat.Offload{},
			append(bytes.Repeat([]byte{0x66}, 20), testPacket(4, markForward, 100)...)},
		{"tso4 super-packet", tso4, tcp4Packet(markForward, maxPacket), tso6,
			append(bytes.Repeat([]byte{0x66}, 20), tcp4Packet(markForward, maxPacket)...)},
		{"6to4 partial checksum", xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 40, CsumOffset: 6}, testPacket(6, markForward, 1280),
			xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 20, CsumOffset: 6, HdrLen: 0xffec}, testPacket(6, markForward, 1280)[20:]},
	} {
		if _, err := peer.Write(vnetPacket(tc.in, tc.pkt)); err != nil {
			t.Fatal(err)
		}
		off, got := readPacket(t, peer)
		if off != tc.wantOff {
			t.Errorf("%s: offload %+v, want %+v", tc.name, off, tc.wantOff)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got %d bytes, want %d (first % x)", tc.name, len(got), len(tc.want), got[:min(len(got), 24)])
		}
	}

	// Engine-made packets go out with their own header; the consumed
	// original does not.
	peer.Write(vnetPacket(xlat.Offload{}, testPacket(4, markEmit, 40)))
	off, got := readPacket(t, peer)
	if off != (xlat.Offload{Flags: xlat.OffloadDataValid}) || string(got) != "\x45E1" {
		t.Errorf("first emitted: %+v % x", off, got)
	}
	off, got = readPacket(t, peer)
	if off != (xlat.Offload{}) || string(got) != "\x45E2" {
		t.Errorf("second emitted: %+v % x", off, got)
	}

	// Dropped, short and invalid packets produce nothing and are counted.
	peer.Write(vnetPacket(xlat.Offload{}, testPacket(4, markDrop, 40)))
	peer.Write([]byte{1, 2, 3})
	peer.Write(vnetPacket(xlat.Offload{Flags: 4}, testPacket(4, markForward, 40)))
	peer.Write(vnetPacket(xlat.Offload{Flags: xlat.OffloadNeedsCsum, CsumStart: 30, CsumOffset: 16}, testPacket(4, markForward, 40)))
	expectNoPacket(t, peer)

	want := LinkStats{Reads: 5, Writes: 5, ShortVnetHdr: 1, InvalidVnetHdr: 2}
	if got := d.LinkStats(); got != want {
		t.Errorf("LinkStats %+v, want %+v", got, want)
	}
	if calls := fake.calls.Load(); calls != 5 {
		t.Errorf("engine called %d times, want 5 (not for short or invalid headers)", calls)
	}
	if !d.Healthy() {
		t.Errorf("unhealthy: %v", d.Check())
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Errorf("Wait after cancel: %v", err)
	}
	if d.Healthy() {
		t.Error("healthy after stop")
	}
}

// TestQueuesIndependent runs three queues, each with its own translator, and
// checks that every packet comes back on the queue it arrived on.
func TestQueuesIndependent(t *testing.T) {
	const n = 3
	var conns []tun.Conn
	var peers []*os.File
	for range n {
		c, p := seqpacketPair(t)
		conns = append(conns, c)
		peers = append(peers, p)
	}
	var mu sync.Mutex
	var fakes []*fakeTranslator
	ctx, cancel := context.WithCancel(context.Background())
	d, err := serveConns(ctx, conns, func() Translator {
		mu.Lock()
		defer mu.Unlock()
		f := &fakeTranslator{t: t}
		fakes = append(fakes, f)
		return f
	})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 10 {
		for q, p := range peers {
			pkt := testPacket(6, markForward, 60+q)
			pkt[59] = byte(round)
			p.Write(vnetPacket(xlat.Offload{}, pkt))
		}
		for q, p := range peers {
			_, got := readPacket(t, p)
			if len(got) != 40+q || got[39] != byte(round) {
				t.Fatalf("queue %d round %d: got %d bytes", q, round, len(got))
			}
		}
	}
	for i, f := range fakes {
		if f.calls.Load() != 10 {
			t.Errorf("translator %d: %d calls, want 10", i, f.calls.Load())
		}
	}
	if len(fakes) != n {
		t.Errorf("%d translators for %d queues", len(fakes), n)
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Error(err)
	}
	// After Wait: a worker counts a write once write(2) has returned, which
	// may be after the peer has already read the packet.
	if s := d.LinkStats(); s.Reads != 30 || s.Writes != 30 {
		t.Errorf("LinkStats %+v", s)
	}
}

func TestHealthStall(t *testing.T) {
	conn, peer := seqpacketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fake := &fakeTranslator{t: t, release: make(chan struct{})}
	d, err := serveConns(ctx, []tun.Conn{conn}, func() Translator { return fake })
	if err != nil {
		t.Fatal(err)
	}
	d.stallAfter = 20 * time.Millisecond
	peer.Write(vnetPacket(xlat.Offload{}, testPacket(4, markBlock, 40)))
	waitFor(t, "a stall report", func() bool {
		err := d.Check()
		return err != nil && strings.Contains(err.Error(), "queue 0: stalled")
	})
	close(fake.release)
	readPacket(t, peer)
	waitFor(t, "health after the stall", d.Healthy)
	// An idle worker (blocked in read) is healthy however long it waits.
	time.Sleep(3 * d.stallAfter)
	if err := d.Check(); err != nil {
		t.Errorf("idle worker: %v", err)
	}
	// A worker whose queue goes away is not.
	peer.Close()
	waitFor(t, "the exited worker to be reported", func() bool {
		err := d.Check()
		return err != nil && strings.Contains(err.Error(), "exited")
	})
	if err := d.Wait(); err != nil {
		t.Errorf("Wait after the peer closed: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// errConn fails every read with err.
type errConn struct {
	err   error
	reads atomic.Int64
}

func (c *errConn) Read([]byte) (int, error) {
	c.reads.Add(1)
	return 0, c.err
}
func (c *errConn) Write(p []byte) (int, error)     { return 0, c.err }
func (c *errConn) SetReadDeadline(time.Time) error { return nil }

func TestReadErrorsStopWorker(t *testing.T) {
	for _, tc := range []struct {
		err   error
		reads uint64
	}{
		{unix.EIO, tun.MaxReadErrors},
		{unix.EBADFD, 1}, // the interface was deleted
	} {
		c := &errConn{err: tc.err}
		d, err := serveConns(context.Background(), []tun.Conn{c}, func() Translator { return &fakeTranslator{t: t} })
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Wait(); !errors.Is(err, tc.err) {
			t.Errorf("Wait = %v, want %v", err, tc.err)
		}
		if s := d.LinkStats(); s.ReadErrors != tc.reads {
			t.Errorf("%v: %d read errors, want %d", tc.err, s.ReadErrors, tc.reads)
		}
		if d.Healthy() {
			t.Errorf("%v: healthy after the worker died", tc.err)
		}
	}
}

func timeIn(testing.TB) time.Time { return time.Now().Add(2 * time.Second) }

// TestCloseStops: closing the device (here the queue's descriptor) stops
// the workers without an error; the context need not be cancelled.
func TestCloseStops(t *testing.T) {
	conn, _ := seqpacketPair(t)
	d, err := serveConns(context.Background(), []tun.Conn{conn}, func() Translator { return &fakeTranslator{t: t} })
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	done := make(chan error)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("worker still running after Close")
	}
}

// frameConn is a queue over memory that checks where writes come from.
type frameConn struct {
	pkt      []byte
	left     int
	frame    *tun.Frame
	inFrame  int // writes straight out of the frame
	elsewise int
}

func (c *frameConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, os.ErrClosed
	}
	c.left--
	return copy(p, c.pkt), nil
}

func (c *frameConn) Write(p []byte) (int, error) {
	if _, ok := c.frame.Offset(p); ok {
		c.inFrame++
	} else {
		c.elsewise++
	}
	return len(p), nil
}

func (c *frameConn) SetReadDeadline(time.Time) error { return nil }

// frameTranslator is fakeTranslator that also checks that it is given the
// queue's frame to translate in place.
type frameTranslator struct {
	fakeTranslator
	frame   *tun.Frame
	inPlace int
}

func (f *frameTranslator) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	if o, ok := f.frame.Offset(buf); ok && o == 0 && start == tun.FramePacket {
		f.inPlace++
	}
	return f.fakeTranslator.Process(buf, start, end, off, sink)
}

// TestLinkInPlace: the Handler translates a packet in the very frame the
// endpoint read it into and the endpoint writes the result from there:
// the read and the write are the only copies. Engine-made packets, which
// live in the engine's memory, are copied once into the write buffer.
func TestLinkInPlace(t *testing.T) {
	for _, tc := range []struct {
		mark                   byte
		inFrame, elsewise, tcs int
	}{
		{markForward, 10, 0, 10},
		{markEmit, 0, 20, 10},
	} {
		conn := &frameConn{pkt: vnetPacket(xlat.Offload{}, testPacket(4, tc.mark, 1500)), left: 10}
		ep := tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads)
		conn.frame = ep.Frame(0)
		tr := &frameTranslator{fakeTranslator: fakeTranslator{t: t}, frame: ep.Frame(0)}
		d, err := serveLink(context.Background(), func() Translator { return tr }, ep, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Wait(); err != nil {
			t.Fatal(err)
		}
		if tr.inPlace != tc.tcs || conn.inFrame != tc.inFrame || conn.elsewise != tc.elsewise {
			t.Errorf("mark %#x: %d translated in place, %d written from the frame, %d from elsewhere; want %d, %d, %d",
				tc.mark, tr.inPlace, conn.inFrame, conn.elsewise, tc.tcs, tc.inFrame, tc.elsewise)
		}
	}
}

// panicTranslator panics on packets marked markPanic.
type panicTranslator struct{ fakeTranslator }

const markPanic = 0x99

func (p *panicTranslator) Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result {
	if end-start > 1 && buf[start+1] == markPanic {
		var m map[string]int
		m["boom"]++ // a nil map write: a runtime panic like a real bug
	}
	return p.fakeTranslator.Process(buf, start, end, off, sink)
}

// TestHandlerPanic: a translator that panics loses that packet only. The
// panic is counted, logged with the packet in hex (once per
// PanicLogInterval), the data path stays healthy and translates the next
// packet on the same queue.
func TestHandlerPanic(t *testing.T) {
	conn, peer := seqpacketPair(t)
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ep := tun.NewEndpointConns([]tun.Conn{conn}, 1520, allOffloads)
	d, err := serveLink(ctx, func() Translator { return &panicTranslator{fakeTranslator{t: t}} }, ep, log)
	if err != nil {
		t.Fatal(err)
	}
	bad := testPacket(4, markPanic, 40)
	for range 3 {
		peer.Write(vnetPacket(xlat.Offload{}, bad))
	}
	peer.Write(vnetPacket(xlat.Offload{}, testPacket(6, markForward, 60)))
	if _, got := readPacket(t, peer); len(got) != 40 {
		t.Errorf("after the panics: got %d bytes, want 40", len(got))
	}
	waitFor(t, "the write to be counted", func() bool { return d.LinkStats().Writes == 1 })
	if s := d.LinkStats(); s != (LinkStats{Reads: 4, Writes: 1, Panics: 3}) {
		t.Errorf("link stats %+v", s)
	}
	if !d.Healthy() {
		t.Errorf("unhealthy after recovered panics: %v", d.Check())
	}
	out := logBuf.String()
	if n := strings.Count(out, "translator panicked"); n != 1 {
		t.Errorf("%d panic log lines, want 1 (rate-limited):\n%s", n, out)
	}
	if !strings.Contains(out, "assignment to entry in nil map") || !strings.Contains(out, hex.EncodeToString(bad)) {
		t.Errorf("log lacks the panic or the packet:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestOneQueueFails: when one queue's dispatch loop fails, Wait returns its
// error and the other queues are stopped too; the data path is unhealthy.
func TestOneQueueFails(t *testing.T) {
	good, _ := seqpacketPair(t)
	bad := &errConn{err: unix.EIO}
	d, err := serveConns(context.Background(), []tun.Conn{good, bad}, func() Translator { return &fakeTranslator{t: t} })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "queue 1") {
			t.Errorf("Wait = %v, want queue 1's EIO", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after a queue failed")
	}
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Check = %v after a queue failed", err)
	}
}
