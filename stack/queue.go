package stack

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Buffer layout of a queue worker. A read lands at readAt: the
// virtio_net_hdr, then the packet at pktStart, with xlat.Headroom bytes in
// front for the engine to grow headers into (the header it overwrites there
// has been decoded by then). The result, wherever the engine put it, gets
// its header re-encoded in the VnetHdrLen bytes just in front of it, which
// exist because a result never starts before pktStart - xlat.Headroom.
const (
	readAt    = xlat.Headroom
	pktStart  = readAt + tun.VnetHdrLen
	maxPacket = 65535 // an IP packet or GSO super-packet
	bufLen    = pktStart + maxPacket
)

// maxReadErrors in a row end a worker: the device is gone or broken, and
// spinning on it helps nobody.
const maxReadErrors = 100

// queueWorker translates the packets of one queue. It is the only user of
// its buffers, translator and offload scratch, so nothing is allocated per
// packet.
type queueWorker struct {
	index int
	conn  packetConn
	tr    Translator
	log   *slog.Logger

	buf     []byte       // bufLen: the packet being translated
	emitBuf []byte       // VnetHdrLen + maxPacket: packets the engine emits
	off     xlat.Offload // the current packet's offload metadata

	stats    linkCounters
	progress progress

	// raw reads the descriptor itself when conn has one, so that the
	// worker learns when the queue is empty (EAGAIN) and can flush the
	// engine's batched counters before it waits; readFn, rn and rerr are
	// its callback and results, kept here so that reading allocates
	// nothing.
	raw    syscall.RawConn
	readFn func(fd uintptr) bool
	rn     int
	rerr   error
	flush  func() // the translator's Flush, if it batches counters

	loggedWriteErr bool
}

// flusher is a Translator that publishes its counters in batches
// (*xlat.Worker): Flush makes them exact while traffic pauses.
type flusher interface{ Flush() }

func newQueueWorker(index int, conn packetConn, tr Translator, log *slog.Logger) *queueWorker {
	w := &queueWorker{
		index:   index,
		conn:    conn,
		tr:      tr,
		log:     log,
		buf:     make([]byte, bufLen),
		emitBuf: make([]byte, tun.VnetHdrLen+maxPacket),
		flush:   func() {},
	}
	if f, ok := tr.(flusher); ok {
		w.flush = f.Flush
	}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.readFn = w.readSyscall
		}
	}
	return w
}

// errStopped: the runtime poller ended a read because the read deadline
// passed (stop) or the descriptor was closed.
var errStopped = errors.New("queue stopped")

// read reads one packet into w.buf[readAt:].
func (w *queueWorker) read() (int, error) {
	if w.raw == nil {
		n, err := w.conn.Read(w.buf[readAt:])
		w.flush() // no way to tell an empty queue: keep the counts exact
		return n, err
	}
	w.rn, w.rerr = 0, nil
	if err := w.raw.Read(w.readFn); err != nil {
		return 0, errStopped
	}
	if w.rn == 0 && w.rerr == nil {
		return 0, io.EOF // a socket peer went away; a tun never reads 0
	}
	return w.rn, w.rerr
}

// readSyscall is the RawConn callback: one read(2); on EAGAIN it flushes
// the engine's counters and lets the poller wait.
func (w *queueWorker) readSyscall(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), w.buf[readAt:])
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			w.flush()
			return false
		case nil:
			w.rn = n
		default:
			w.rerr = err
		}
		return true
	}
}

// stop makes the worker's current or next read return; run then returns nil.
func (w *queueWorker) stop() {
	w.conn.SetReadDeadline(time.Unix(1, 0))
}

// run reads, translates and writes until stopped, the queue is closed, or
// reads keep failing (then it returns the error).
func (w *queueWorker) run() error {
	defer w.flush()
	readErrs := 0
	for {
		w.progress.busy.Store(false)
		n, err := w.read()
		w.progress.since.Store(monoNow())
		w.progress.busy.Store(true)
		if err != nil {
			if err == errStopped || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, os.ErrClosed) || errors.Is(err, io.EOF) {
				return nil
			}
			w.stats.readErrors.Add(1)
			readErrs++
			// EBADFD: the interface was deleted under us.
			if readErrs >= maxReadErrors || errors.Is(err, unix.EBADFD) {
				w.log.Error("tun queue stopped", "queue", w.index, "err", err)
				return fmt.Errorf("queue %d: read: %w", w.index, err)
			}
			continue
		}
		readErrs = 0
		w.stats.reads.Add(1)
		w.handle(n)
	}
}

// handle translates the n bytes read into w.buf[readAt:] and writes the
// result back to the queue.
func (w *queueWorker) handle(n int) {
	if n < tun.VnetHdrLen {
		w.stats.shortVnetHdr.Add(1)
		return
	}
	end := readAt + n
	tun.DecodeVnetHdr(w.buf[readAt:], &w.off)
	if tun.ValidateOffload(&w.off, end-pktStart) != nil {
		w.stats.invalidVnetHdr.Add(1)
		return
	}
	res := w.tr.Process(w.buf, pktStart, end, &w.off, w)
	if res.Verdict != xlat.Forward {
		return
	}
	if res.Start < tun.VnetHdrLen || res.Start > res.End || res.End > len(w.buf) {
		// The engine broke its Headroom contract; nothing sane to send.
		w.writeFailed(fmt.Errorf("engine result [%d:%d] outside the buffer", res.Start, res.End))
		return
	}
	hdr := res.Start - tun.VnetHdrLen
	tun.EncodeVnetHdr(w.buf[hdr:res.Start], &w.off)
	w.write(w.buf[hdr:res.End])
}

// Emit implements xlat.Sink: it writes a packet made by the engine (an ICMP
// error, a fragment) to the queue. pkt is copied behind a fresh header
// because the engine gives no room in front of it.
func (w *queueWorker) Emit(pkt []byte, off *xlat.Offload) {
	if len(pkt) > maxPacket {
		w.writeFailed(fmt.Errorf("emitted packet of %d bytes", len(pkt)))
		return
	}
	if off != nil {
		tun.EncodeVnetHdr(w.emitBuf, off)
	} else {
		clear(w.emitBuf[:tun.VnetHdrLen])
	}
	n := copy(w.emitBuf[tun.VnetHdrLen:], pkt)
	w.write(w.emitBuf[:tun.VnetHdrLen+n])
}

func (w *queueWorker) write(p []byte) {
	n, err := w.conn.Write(p)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.writeFailed(err)
		return
	}
	w.stats.writes.Add(1)
}

// writeFailed counts a lost packet and logs the first loss of each worker;
// the counter tells the rest.
func (w *queueWorker) writeFailed(err error) {
	w.stats.writeErrors.Add(1)
	if !w.loggedWriteErr {
		w.loggedWriteErr = true
		w.log.Warn("tun write failed (further failures only counted)", "queue", w.index, "err", err)
	}
}
