package tun

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// A queue's I/O through an io_uring of its own, a batcher only while the
// queue has packets.
//
// The queue has uringSlots frames (the slots; each with FrameHeader bytes
// in front, like the queue's Frame). Its reads are posted with RWF_NOWAIT
// (preadv2(2)): a read of an empty queue completes at once with EAGAIN
// instead of arming a poll, so every read completes inside the
// io_uring_enter(2) that submits it. One io_uring_enter submits what the
// last batch queued and the next reads; the loop then delivers each packet
// read, in turn, on its own goroutine, with the queue's Frame pointed at
// the slot's memory. A write the dispatcher makes from the frame is
// queued, not made: its entry is linked (IOSQE_IO_LINK) to the slot's next
// read, so the slot is read into again only after the write completed
// (and a reply the write caused at once, on a veth path, is there for that
// read), and a successful write posts no completion
// (IOSQE_CQE_SKIP_SUCCESS). A write of other memory (what the engine
// makes besides: ICMP errors, fragments) is made at once, after what the
// ring holds was submitted (queue.sendQueued), so packets leave in the
// order they were written. A queue busy with K packets thus costs one
// system call per K packets. The reads posted follow the batches: twice
// the last batch's packets, at least two, at most uringSlots.
//
// A batch whose reads all found the queue empty leaves nothing in flight:
// the loop then reads, writes and waits exactly as the raw loop does
// (readOne, waitReadable in rawio_linux.go: up to rawWait in a raw ppoll
// keeping the P, then blocking, on the queue and the attachment's wake
// eventfd), so a lone packet wakes this thread directly rather than
// through the ring's poll and task_work, and sparse traffic never pays
// the ring's path, which after an idle gap costs more than a read and a
// write. It goes back to the ring when uringBusyAfter packets came in a
// row without a wait. Only if the file refuses RWF_NOWAIT (EOPNOTSUPP: the
// reads go on without it) can reads stay in flight; the loop then waits in
// io_uring_enter by the same rule, the ring polling the wake eventfd
// itself (IORING_OP_POLL_ADD). Before the loop returns it cancels
// everything in flight and waits for it: the kernel must not write into a
// slot after that.
//
// The descriptor is registered with the ring (a fixed file), which holds a
// reference to it: closing the Conn's descriptor cannot make the ring read
// another file that reused its number.

// uringSlots is the most reads a queue posts at once: the largest batch.
const uringSlots = 16

// queueIO selects the queue loop for raw descriptors: "uring" tries
// io_uring and falls back to the raw loop where it is missing, disabled
// (kernel.io_uring_disabled) or too old; anything else is the raw loop.
// The ring is the default since its idle queues run the raw loop's read,
// write and wait (sparse pings no slower; docs/datapath.md, "io_uring on
// the tun queues"). A build selects the raw loop alone with -ldflags -X
// github.com/map646/map646/stack/tun.queueIO=raw.
var queueIO = "uring"

// uringReadFlags are the RWF_* flags reads are posted with first. Tests
// add one the kernel refuses, as a kernel without RWF_NOWAIT for the file
// would.
var uringReadFlags uint32 = unix.RWF_NOWAIT

// User data of the ring's operations: the kind in the high word; in the
// low one, for reads and writes, the slot in the low byte and above it
// the generation of the slot's read (uringIO.gen) that the operation is or
// precedes.
const (
	uringRead  = 1 << 32
	uringWrite = 2 << 32
	uringWake  = 3 << 32
	uringStop  = 4 << 32

	uringKind     = ^uint64(0xffffffff)
	uringSlotMask = 0xff
	uringGenMask  = 0xffffff
)

// uringSlotGen splits the user data of a read or write.
func uringSlotGen(userData uint64) (slot int, gen uint32) {
	return int(userData & uringSlotMask), uint32(userData>>8) & uringGenMask
}

// uringIO is a queue's ring and slots; only its dispatch goroutine uses
// it.
type uringIO struct {
	r     *ring
	slots []*Frame  // slots[0] shares the queue Frame's own memory
	own   uringSlot // the queue Frame's own memory, restored on exit
	cur   int       // the slot being delivered, -1 between deliveries
	// busy counts slots with a read (after its writes) in flight;
	// wakeArmed: the eventfd's poll is.
	busy      int
	wakeArmed bool
	// reading: the slot's read is queued or in flight. want: how many
	// reads to keep posted while the queue has packets. readFlags: the
	// reads' RWF_* (RWF_NOWAIT unless the file turned it down), and
	// readWith the ones each slot's last read was posted with.
	reading  [uringSlots]bool
	readWith [uringSlots]uint32
	// gen counts each slot's reads (uringGenMask wide). A write linked to
	// a slot's next read carries that read's generation: when the write
	// fails, the kernel cancels the read, and with the write's
	// IOSQE_CQE_SKIP_SUCCESS it posts no completion for the read (Linux
	// 6.18 does not; the flag's semantics let a kernel post one): the
	// write's failure is then what frees the slot (readEnded), and a
	// late -ECANCELED of that generation is stale.
	gen       [uringSlots]uint32
	want      int
	readFlags uint32
	// enters counts the loop's io_uring_enter calls, each a batch (what
	// batching saves), over the queue's life.
	enters uint64
	// batch holds the packets of one batch's completed reads for a
	// BatchDispatcher (prefetch).
	batch [uringSlots][]byte
	// readAt is where a slot's read lands (the queue's readAt).
	readAt int
	// unsent is the queue's (queue.unsent): set while a write queued
	// here waits for the io_uring_enter that submits it.
	unsent *atomic.Bool
}

type uringSlot struct {
	view *buffer.View
	buf  []byte
}

// setupURing gives q a ring over fd (the queue's descriptor), unless the
// loop must stay raw (queueIO, or a thread that is not the queue's own:
// the ring wants one submitter) or the kernel has none.
func (q *queue) setupURing(fd int) error {
	if queueIO != "uring" || !lockThread {
		return errNoURing
	}
	r, err := uringSetup(2*uringSlots+4, fd)
	if err != nil {
		return err
	}
	u := q.uio
	if u == nil {
		u = &uringIO{own: uringSlot{view: q.frame.view, buf: q.frame.buf}, unsent: &q.unsent}
		u.slots = make([]*Frame, uringSlots)
		u.slots[0] = &Frame{view: q.frame.view, buf: q.frame.buf}
		for i := 1; i < uringSlots; i++ {
			u.slots[i] = NewFrame()
		}
		q.uio = u
	}
	u.r, u.cur, u.busy, u.wakeArmed, u.readAt = r, -1, 0, false, q.readAt
	u.reading = [uringSlots]bool{}
	u.want, u.readFlags = 2, uringReadFlags
	return nil
}

// postRead queues slot i's next read, after any write of it queued in
// this delivery.
func (u *uringIO) postRead(i int) {
	u.gen[i] = (u.gen[i] + 1) & uringGenMask
	u.r.prepRW(uringOpRead, 0, u.readFlags, u.slots[i].buf[u.readAt:], uringRead|uint64(u.gen[i])<<8|uint64(i))
	u.reading[i], u.readWith[i] = true, u.readFlags
	u.busy++
}

// queueWrite queues the write of b, which lies in the slot being
// delivered, linked to the slot's next read. It reports false if no slot
// is being delivered.
//
// A delivery queues at most one write: the translated packet, which the
// engine rewrote in the slot. What the engine makes besides (ICMP errors,
// fragments, the datagrams of a split UDP super-packet) the Handler hands
// over as copies, which writePacket writes at once, after submitting
// what the batch queued before them (queue.sendQueued): the queue's
// packets leave in the order they were handed over. The slot's
// bookkeeping counts on one write per delivery: with several writes
// chained to one read, the failure of one would cancel the writes after
// it without a completion, and they would be lost uncounted.
func (u *uringIO) queueWrite(b []byte) bool {
	if u == nil || u.cur < 0 {
		return false
	}
	if u.r.space() < 2 { // this write and the slot's read
		u.enter(false, nil, true)
	}
	next := (u.gen[u.cur] + 1) & uringGenMask // the generation of the slot's next read
	u.r.prepRW(uringOpWrite, uringSqeLink|uringSqeSkipSuccess, 0, b, uringWrite|uint64(next)<<8|uint64(u.cur))
	if !u.unsent.Load() {
		u.unsent.Store(true)
	}
	return true
}

// enter is the ring's enter; once everything queued was submitted, no
// write waits any more (a full completion queue can leave some queued:
// see ring.enter).
func (u *uringIO) enter(wait bool, timeout *unix.Timespec, raw bool) unix.Errno {
	errno := u.r.enter(wait, timeout, raw)
	if u.r.pending == 0 && u.unsent.Load() {
		u.unsent.Store(false)
	}
	return errno
}

// sendQueued submits the writes q's ring holds, and the reads linked to
// them, before a packet written at once: the translated packets of
// earlier slots of the batch must not leave after an engine-made packet
// of a later one (fragments of the same flow, say; RFC 7915 translators
// keep a flow's order, and TCP takes a reordered segment for a loss).
// Only the queue's delivering goroutine queues writes, so only it finds
// any here; the flag costs a load when there are none. A write the file
// takes at once is made inside the io_uring_enter that submits it, so it
// has left when this returns: a tun's always is (it never blocks a
// writer, and marks itself FMODE_NOWAIT, so the ring tries it inline).
// One that would block (a full socket buffer), or a file without
// FMODE_NOWAIT (whose writes the ring hands to its workers), can still
// leave after the packet written at once.
func (q *queue) sendQueued() {
	if q.unsent.Load() && q.uio != nil && q.uio.r != nil {
		q.uio.enter(false, nil, true)
	}
}

// current reports whether a read completion of slot and gen is the slot's
// read in flight, and not one the failure of the write before it already
// accounted for (readEnded).
func (u *uringIO) current(slot int, gen uint32) bool {
	return slot < len(u.slots) && u.reading[slot] && u.gen[slot] == gen
}

// readEnded accounts for the end of slot's read of generation gen, told
// by either of two completions: the read's own, or the failure of a write
// linked to it (the kernel cancelled the read with it, and posts no
// completion for it when the write had IOSQE_CQE_SKIP_SUCCESS). Whichever
// comes first frees the slot; a kernel that posts both (-ECANCELED for
// the read) has the second one find the slot free, or read again under a
// later generation. It reports whether it freed the slot.
func (u *uringIO) readEnded(slot int, gen uint32) bool {
	if !u.current(slot, gen) {
		return false
	}
	u.busy--
	u.reading[slot] = false
	return true
}

// uringLoop is dispatchLoop through q's ring; it returns what
// dispatchLoop would.
func (e *Endpoint) uringLoop(q *queue, d gvstack.NetworkDispatcher, frames bool, wakeFd int) error {
	u := q.uio
	defer func() {
		u.drain(q)
		u.r.close()
		u.r = nil
		// Whatever the ring held went with it (a drain that gave up
		// can leave writes queued): no later packet may look for it.
		q.unsent.Store(false)
		q.frame.view, q.frame.buf = u.own.view, u.own.buf
	}()
	rio := q.rio
	rio.idled, rio.waited = false, false
	errs := 0
	bd, _ := d.(BatchDispatcher)
	for {
		if e.stopping.Load() {
			return nil // a queue that never goes idle still stops
		}
		if u.busy == 0 {
			// Nothing in flight: the queue was found empty. Read and
			// write by raw calls, waiting as the raw loop does, until
			// the queue stays busy; then batch on the ring.
			if done, err := e.rawUntilBusy(q, d, frames, wakeFd, &errs); done {
				return err
			}
			u.postReads()
		}
		u.enters++
		u.enter(false, nil, true) // submits; RWF_NOWAIT reads complete inside it
		if u.r.ready() == 0 {
			// Reads in flight that did not complete at once (a kernel
			// that turned RWF_NOWAIT down): wait on the ring.
			if !u.wakeArmed {
				u.r.prepPoll(wakeFd, uringWake)
				u.wakeArmed = true
			}
			if err := u.wait(q); err != nil {
				if err == errStopped {
					return nil
				}
				return fmt.Errorf("%s: io_uring: %w", q.name, err)
			}
		}
		// Every completion of the batch is accounted for, even after one
		// ended the loop: drain waits for the rest by their count.
		var stop bool
		var err error
		got := 0
		n := u.r.ready()
		if bd != nil {
			u.prefetch(bd, q, n)
		}
		for i := range n {
			c := u.r.cqe(i)
			slot, gen := uringSlotGen(c.userData)
			res := c.res
			switch c.userData & uringKind {
			case uringRead:
				if !u.readEnded(slot, gen) {
					continue // cancelled with the failed write before it: accounted for
				}
				switch {
				case stop:
					continue
				case res > 0:
					errs = 0
					got++
					u.deliver(e, q, d, slot, int(res), frames)
				case res == 0:
					stop = true // a socket peer went away; a tun never reads 0
					continue
				case res == -int32(unix.EAGAIN):
					continue // the queue is empty: the slot is free
				case res == -int32(unix.EOPNOTSUPP) && u.readWith[slot] != 0:
					u.readFlags = 0 // no RWF_NOWAIT on this file: reads wait in the ring
				case res == -int32(unix.ECANCELED), res == -int32(unix.EINTR):
					// ECANCELED: the write before it failed (counted there).
				default:
					errno := unix.Errno(-res)
					q.stats.ReadErrors.Add(1)
					// EBADFD: the interface was deleted under us.
					if errs++; errs >= MaxReadErrors || errno == unix.EBADFD {
						stop, err = true, fmt.Errorf("%s: read: %w", q.name, errno)
						continue
					}
				}
				u.postRead(slot)
			case uringWrite:
				q.stats.WriteErrors.Add(1) // only failures complete
				if u.readEnded(slot, gen) && !stop {
					u.postRead(slot)
				}
			case uringWake:
				u.wakeArmed = false
				if e.stopping.Load() || q.rio.rc.Control(func(uintptr) {}) != nil {
					stop = true // stopped, or the Conn closed
				}
				// Otherwise a Device closing (it wakes, then closes): look
				// again after re-arming.
			}
		}
		u.r.consume(n)
		if stop {
			return err
		}
		if got > 0 {
			rio.idled, rio.waited = false, false // the next empty read starts a new wait
			// As many reads as the queue had packets and as many again,
			// at least two (a reply that a write queues at once, and
			// one more), at most uringSlots.
			u.want = min(max(2*got, 2), uringSlots)
		}
		if got > 0 {
			u.postReads()
		}
	}
}

// uringBusyAfter is how many packets in a row, each found without a wait,
// make a queue busy enough for the ring: a lone packet and the reply its
// write queued at once (a ping) stay on raw read and write, whose path
// costs less than the ring's after an idle gap.
const uringBusyAfter = 4

// rawUntilBusy reads and delivers packets as the raw loop does, waiting
// in its ppoll when the queue is empty, until uringBusyAfter packets came
// in a row without a wait. done: the loop must end, with err.
func (e *Endpoint) rawUntilBusy(q *queue, d gvstack.NetworkDispatcher, frames bool, wakeFd int, errs *int) (done bool, err error) {
	for streak := 0; streak < uringBusyAfter; {
		if e.stopping.Load() {
			return true, nil
		}
		before := q.stats.ReadErrors.Load()
		if done, err := e.readOne(q, d, frames, wakeFd, errs); done {
			return true, err
		}
		switch {
		case q.rio.woken || q.stats.ReadErrors.Load() != before:
			streak = 0
		case q.rio.idled: // it waited for this packet
			streak = 1
		default:
			streak++
		}
	}
	return false, nil
}

// prefetch hands bd the IP packets of the first n completions' reads, in
// their order, before any of them is delivered; packets deliver would
// refuse (no byte past the queue's header, or a length past the slot's
// room) are left out, and so is a batch of one packet. A read lands at
// readAt, the queue's header in front of FramePacket (0, 10 or 12 bytes:
// NewEndpointFiles), so the packet ends at readAt plus the read's length.
func (u *uringIO) prefetch(bd BatchDispatcher, q *queue, n uint32) {
	k := 0
	for i := range n {
		c := u.r.cqe(i)
		if c.userData&uringKind != uringRead {
			continue
		}
		slot, gen := uringSlotGen(c.userData)
		if !u.current(slot, gen) {
			continue
		}
		buf := u.slots[slot].buf
		if end := u.readAt + int(c.res); end > FramePacket && end <= len(buf) {
			u.batch[k] = buf[FramePacket:end]
			k++
		}
	}
	if k > 1 {
		bd.PrefetchBatch(q.index, u.batch[:k])
	}
}

// postReads posts reads into free slots until u.want are in flight.
func (u *uringIO) postReads() {
	for i := 0; i < len(u.slots) && u.busy < u.want; i++ {
		if !u.reading[i] {
			u.postRead(i)
		}
	}
}

// deliver hands the n bytes read into slot i to d. A FrameDispatcher gets
// them through the queue's Frame, pointed at the slot (it writes from the
// frame on this goroutine only); any other dispatcher gets a copy from
// the slot, and the queue's Frame stays as it is for writers on other
// goroutines, which look at it.
func (u *uringIO) deliver(e *Endpoint, q *queue, d gvstack.NetworkDispatcher, i, n int, frames bool) {
	f := u.slots[i]
	if frames {
		q.frame.view, q.frame.buf = f.view, f.buf
		f = q.frame
	}
	u.cur = i
	e.deliver(q, f, d, n, frames)
	u.cur = -1
}

// wait submits what is queued and waits for a completion as the raw loop
// waits for a packet: up to rawWait keeping the P (a preemption request,
// EINTR, gives it up with Gosched, then the wait goes on for the time
// left), then blocking. errStopped: a bounded wait ended on a closed
// foreign Conn.
func (u *uringIO) wait(q *queue) error {
	q.idle()
	rio := q.rio
	raw := time.Duration(rio.rawWait.Nano())
	start := time.Now()
	for left := raw; left > 0 && u.r.ready() == 0; left = raw - time.Since(start) {
		ts := unix.NsecToTimespec(int64(left))
		errno := u.enter(true, &ts, true)
		if errno != unix.EINTR {
			break // a completion, the time is up (ETIME), or an error the blocking wait sees again
		}
		runtime.Gosched() // a preemption request: sysmon's, or a GC stop-the-world
	}
	var tmo *unix.Timespec // nil: until a completion (a packet or a wake-up)
	if rio.bounded {
		tmo = &rio.foreignWait
	}
	for u.r.ready() == 0 {
		switch errno := u.enter(true, tmo, false); errno {
		case 0, unix.EINTR, unix.EBUSY:
			// EBUSY: completions to reap first, which ready() sees.
		case unix.ETIME:
			// The bounded wait of a foreign Conn: nothing wakes the loop
			// when it is closed.
			if rio.rc.Control(func(uintptr) {}) != nil {
				return errStopped
			}
		default:
			return errno
		}
	}
	return nil
}

// drain cancels every operation in flight and waits until none is left,
// so that no read lands in a slot after the loop returned. A cancellation
// can miss an operation that was between two attempts (a read woken by
// its poll and not yet re-armed): each wait is short, and cancellation
// is asked again until nothing is left. The writes of q's last batch
// are submitted with it; those that fail are counted.
func (u *uringIO) drain(q *queue) {
	cancels := 0
	ts := unix.NsecToTimespec(int64(drainWait))
	for u.busy > 0 || u.wakeArmed || cancels > 0 {
		if cancels == 0 {
			u.r.prepCancelAll(uringStop)
			cancels++
		}
		u.enter(true, &ts, false)
		n := u.r.ready()
		for i := range n {
			c := u.r.cqe(i)
			slot, gen := uringSlotGen(c.userData)
			switch c.userData & uringKind {
			case uringRead:
				u.readEnded(slot, gen)
			case uringWrite:
				q.stats.WriteErrors.Add(1)
				u.readEnded(slot, gen)
			case uringWake:
				u.wakeArmed = false
			case uringStop:
				cancels--
			}
		}
		u.r.consume(n)
	}
}

// drainWait bounds one wait of drain.
const drainWait = 10 * time.Millisecond

// runURing runs the uring loop over q's descriptor (registered with the
// ring inside RawConn.Control). ran is false if q must use the raw loop.
func (e *Endpoint) runURing(q *queue, d gvstack.NetworkDispatcher, frames bool, wakeFd int) (ran bool, err error) {
	var setupErr error
	if q.rio.rc.Control(func(fd uintptr) { setupErr = q.setupURing(int(fd)) }) != nil {
		return true, nil // closed
	}
	if setupErr != nil {
		return false, nil
	}
	q.uringOn.Store(true)
	defer q.uringOn.Store(false)
	return true, e.uringLoop(q, d, frames, wakeFd)
}
