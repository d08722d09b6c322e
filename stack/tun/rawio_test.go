package tun

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/internal/netnstest"
)

// echoDispatcher writes every packet back to the queue it came from and
// counts the times a queue found itself empty.
type echoDispatcher struct {
	e      *Endpoint
	idle   []atomic.Int64
	echoed atomic.Int64
	lists  [4]gvstack.PacketBufferList // per queue, reused: no allocation
}

func (d *echoDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *gvstack.PacketBuffer) {
	l := &d.lists[pkt.Hash%uint32(len(d.lists))]
	l.PushBack(pkt.IncRef())
	if n, _ := d.e.WritePackets(*l); n == 1 {
		d.echoed.Add(1)
	}
	l.Reset()
}

func (*echoDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *gvstack.PacketBuffer) {}

func (d *echoDispatcher) QueueIdle(q int) { d.idle[q].Add(1) }

// rawPair returns the two ends of a non-blocking SOCK_SEQPACKET
// socketpair: the first is a queue an Endpoint serves with raw I/O.
func rawPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "queue"), os.NewFile(uintptr(fds[1]), "peer")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// waitUntil polls cond for up to five seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// idleEndpoint serves n raw socketpair queues with an echoDispatcher and
// returns once every queue has echoed a packet and then found itself
// empty, i.e. waits in ppoll. The wait that only a timeout would end is
// made an hour long, so that a stop that does not wake the loops hangs.
func idleEndpoint(t *testing.T, n int) (*Endpoint, *echoDispatcher, []*os.File) {
	t.Helper()
	saved := foreignWait
	foreignWait = time.Hour
	t.Cleanup(func() { foreignWait = saved })
	var conns []Conn
	var peers []*os.File
	for range n {
		c, p := rawPair(t)
		conns = append(conns, c)
		peers = append(peers, p)
	}
	e := NewEndpointConns(conns, 1500, 0)
	for i, q := range e.queues {
		if q.rio == nil {
			t.Fatalf("queue %d: no raw I/O over a non-blocking socket", i)
		}
	}
	d := &echoDispatcher{e: e, idle: make([]atomic.Int64, n)}
	e.Attach(d)
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x45
	buf := make([]byte, 100)
	for i, p := range peers {
		if _, err := p.Write(pkt); err != nil {
			t.Fatal(err)
		}
		p.SetReadDeadline(time.Now().Add(5 * time.Second))
		if m, err := p.Read(buf); err != nil || m != len(pkt) {
			t.Fatalf("queue %d: echo %d bytes, %v", i, m, err)
		}
	}
	for i := range n {
		waitUntil(t, "the queues to be idle", func() bool { return d.idle[i].Load() > 0 })
		requireQueueIO(t, e, i, queueIO)
	}
	time.Sleep(20 * time.Millisecond) // into ppoll or io_uring_enter
	return e, d, peers
}

// TestRawStopWhileBlocked: Attach(nil) wakes queues that wait in ppoll for
// a packet that never comes (through the attachment's eventfd) and returns
// promptly; a new attachment serves the queues again.
func TestRawStopWhileBlocked(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			setQueueIO(t, mode)
			e, _, peers := idleEndpoint(t, 2)
			done := make(chan struct{})
			start := time.Now()
			go func() {
				e.Attach(nil)
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Attach(nil) still waiting for blocked queues after 5 s")
			}
			t.Logf("stopped two blocked queues in %v", time.Since(start))
			for i := range 2 {
				if !e.Exited(i) {
					t.Errorf("queue %d still running", i)
				}
			}
			d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 2)}
			e.Attach(d)
			defer e.Close()
			pkt := make([]byte, VnetHdrLen+28)
			pkt[VnetHdrLen] = 0x60
			if _, err := peers[1].Write(pkt); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the reattached queue to echo", func() bool { return d.echoed.Load() == 1 })
		})
	}
}

// TestRawBlockedKeepsNoP: with GOMAXPROCS 2 and two queues waiting for
// packets, the runtime still runs everything else: a garbage collection
// (whose stop-the-world needs every P) completes, and goroutines get
// scheduled.
func TestRawBlockedKeepsNoP(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			setQueueIO(t, mode)
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
			saved := foreignRawWait
			foreignRawWait = time.Millisecond // into the blocking wait at once
			defer func() { foreignRawWait = saved }()
			e, _, _ := idleEndpoint(t, 2)
			defer e.Close()
			requireRuntimeRuns(t, "for packets")
		})
	}
}

// TestRawWaitYields: a queue waiting in the raw ppoll that keeps its P
// (here for an hour, so that only a preemption request can end it) gives
// the P up when the runtime asks: with GOMAXPROCS 2 and both queues in
// that wait, a garbage collection completes and goroutines run.
func TestRawWaitYields(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			setQueueIO(t, mode)
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
			saved := foreignRawWait
			foreignRawWait = time.Hour
			defer func() { foreignRawWait = saved }()
			e, _, _ := idleEndpoint(t, 2)
			defer e.Close()
			requireRuntimeRuns(t, "in a raw ppoll")
		})
	}
}

// TestRawWriteErrors: a raw write that fails (the peer is gone) is
// reported to the writer as an aborted write, and the queue's loop ends
// without error when the peer's end is closed (read of 0: EOF).
func TestRawWriteErrors(t *testing.T) {
	c, p := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	q := e.queues[0]
	pkt := make([]byte, VnetHdrLen+28)
	if m, err := q.write(pkt); err != nil || m != len(pkt) {
		t.Fatalf("write = %d, %v", m, err)
	}
	p.Close()
	m, err := q.write(pkt)
	if werr := writeResult(m, err, len(pkt)); werr == nil {
		t.Errorf("write to a closed peer: %d, %v, reported as success", m, err)
	}
	c.Close()
	if _, err := q.write(pkt); err != os.ErrClosed {
		t.Errorf("write to a closed queue: %v, want os.ErrClosed", err)
	}
}

// TestDeviceCloseWakesEndpoint: closing a Device whose queues wait in
// ppoll wakes them; the loops end and the descriptors close.
func TestDeviceCloseWakesEndpoint(t *testing.T) {
	for _, mode := range queueIOModes {
		t.Run(mode, func(t *testing.T) {
			setQueueIO(t, mode)
			netnstest.RequireTun(t, "dp-")
			ns := netnstest.New(t, "dp-wake-")
			var dev *Device
			if err := ns.Do(func() (err error) {
				dev, err = Open(Config{Name: "dp-wake0", Queues: 2})
				return err
			}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			if _, err := dev.Queues()[0].Read(buf); err != unix.EAGAIN && !isEAGAIN(err) {
				t.Errorf("Read of an empty queue: %v, want EAGAIN (never blocks)", err)
			}
			e := NewEndpoint(dev)
			// A Device's queues wait rawWait (the daemon adds Ps for them), not
			// the foreign Conns' foreignRawWait, and only a wake-up ends their
			// blocking wait.
			for i, q := range e.queues {
				if q.rio == nil || q.rio.rawWait != unix.NsecToTimespec(int64(rawWait)) || q.rio.bounded {
					t.Fatalf("queue %d: raw I/O %+v, want a raw wait of %v and an unbounded blocking wait", i, q.rio, rawWait)
				}
			}
			d := &echoDispatcher{e: e, idle: make([]atomic.Int64, 2)}
			e.Attach(d)
			for i := range 2 {
				waitUntil(t, "the queues to be idle", func() bool { return d.idle[i].Load() > 0 })
				requireQueueIO(t, e, i, mode)
			}
			time.Sleep(20 * time.Millisecond)
			closed := make(chan error)
			go func() {
				err := dev.Close()
				e.Wait()
				closed <- err
			}()
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close = %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Device.Close did not end the blocked loops")
			}
			if err := e.Err(); err != nil {
				t.Errorf("loops ended with %v, want nil", err)
			}
			if _, err := ns.Output("ip", "link", "show", "dp-wake0"); err == nil {
				t.Error("interface still there after Close")
			}
		})
	}
}

func isEAGAIN(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == unix.EAGAIN
}

// BenchmarkRawRoundTrip is one packet at a time through an Endpoint's
// queue loop (uring: through its io_uring; raw: read and write by raw
// system calls) and back, over a socketpair, the peer in this process:
// the cost of the loop's wake-up, read, delivery and write, without a
// translator. rawWait is the product's.
func BenchmarkRawRoundTrip(b *testing.B) {
	for _, mode := range queueIOModes {
		b.Run(mode, func(b *testing.B) { benchQueueBurst(b, mode, 1) })
	}
}

// BenchmarkQueueBurst is bursts of 16 packets through a queue's loop and
// back: the peer writes them all, then reads the 16 echoes; ns/op is per
// burst. A loop that batches reads and writes pays fewer system calls per
// packet here.
func BenchmarkQueueBurst(b *testing.B) {
	for _, mode := range queueIOModes {
		b.Run(mode, func(b *testing.B) { benchQueueBurst(b, mode, 16) })
	}
}

func benchQueueBurst(b *testing.B, mode string, burst int) {
	benchQueueBurstWith(b, mode, burst, func(e *Endpoint) gvstack.NetworkDispatcher {
		return &echoDispatcher{e: e, idle: make([]atomic.Int64, 1)}
	})
}

// benchQueueBurstWith is benchQueueBurst with the dispatcher dispatcher
// makes, which must write every packet back once.
func benchQueueBurstWith(b *testing.B, mode string, burst int, dispatcher func(*Endpoint) gvstack.NetworkDispatcher) {
	saved := queueIO
	queueIO = mode
	defer func() { queueIO = saved }()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	c, p := os.NewFile(uintptr(fds[0]), "queue"), os.NewFile(uintptr(fds[1]), "peer")
	defer c.Close()
	defer p.Close()
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	e.Attach(dispatcher(e))
	defer e.Close()
	pkt := make([]byte, VnetHdrLen+64)
	pkt[VnetHdrLen] = 0x45
	buf := make([]byte, 200)
	p.SetReadDeadline(time.Now().Add(time.Minute))
	b.ReportAllocs()
	for range 10 { // the list's first append
		p.Write(pkt)
		p.Read(buf)
	}
	if on := e.queues[0].uringOn.Load(); on != (mode == "uring") {
		b.Fatalf("queue on its io_uring: %v, loop %q", on, mode)
	}
	for b.Loop() {
		for range burst {
			if _, err := p.Write(pkt); err != nil {
				b.Fatal(err)
			}
		}
		for range burst {
			if _, err := p.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// requireRuntimeRuns fails t unless three garbage collections (whose
// stop-the-world needs every P) and 100 goroutines complete while the
// queues wait (how: for the message).
func requireRuntimeRuns(t *testing.T, how string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		for range 3 {
			runtime.GC()
		}
		var wg sync.WaitGroup
		for range 100 {
			wg.Add(1)
			go func() { defer wg.Done(); time.Sleep(time.Millisecond) }()
		}
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("GC and goroutines stuck while every queue waits " + how)
	}
}

// TestRawWaitsKeepTheirLength: every wait of an empty queue lasts its full
// length, not only the first. ppoll(2) writes the time left back into its
// timeout (zero after a wait that timed out), so a loop that hands it the
// same timespec each time waited its length once and then polled without
// waiting: the raw wait that keeps the P ended at once and every packet
// after an idle gap paid the blocking wait's wake-up.
func TestRawWaitsKeepTheirLength(t *testing.T) {
	// The raw wait stays below the runtime's 10 ms preemption of a
	// goroutine that runs on (a signal ends the raw wait early, by design).
	const raw, blocking = 5 * time.Millisecond, 20 * time.Millisecond
	savedRaw, savedForeign := foreignRawWait, foreignWait
	foreignRawWait, foreignWait = raw, blocking
	defer func() { foreignRawWait, foreignWait = savedRaw, savedForeign }()
	c, _ := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0) // not attached: the test reads
	q := e.queues[0]
	if q.rio == nil {
		t.Fatal("no raw I/O over a non-blocking socket")
	}
	wakeFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wakeFd)
	for i := range 3 {
		start := time.Now()
		if _, err := q.rawRead(wakeFd); err != errWoken {
			t.Fatalf("wait %d of an empty queue: %v, want errWoken (the bounded wait's end)", i, err)
		}
		// A lower bound only: a loaded machine makes waits longer, never
		// shorter. With the timeout reused, waits after the first took µs.
		if took := time.Since(start); took < blocking {
			t.Errorf("wait %d of an empty queue took %v, want >= %v (raw %v + blocking %v)", i, took, raw+blocking, raw, blocking)
		}
	}
}

// onOneCPU runs every thread of the process on one CPU (the first it may
// use) until t ends; threads started meanwhile inherit the mask, and all
// get the old one back. A goroutine that the garbage collector wants to
// scan and that only passes through the run queue (Gosched) is then never
// seen there: the collector's thread (suspendG) does not run while the
// goroutine's does. Only a goroutine that parks for the scan lets the
// collection finish, as it must on a loaded machine, where two CPUs give
// no better guarantee.
func onOneCPU(t *testing.T) {
	t.Helper()
	var saved, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &saved); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < len(saved)*64; cpu++ {
		if saved.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	// setAll gives every thread set, and goes round again while new
	// threads appeared, which may have inherited the mask it replaces.
	setAll := func(set *unix.CPUSet) error {
		seen := map[int]bool{}
		for {
			tasks, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			fresh := false
			for _, task := range tasks {
				tid, err := strconv.Atoi(task.Name())
				if err != nil || seen[tid] {
					continue
				}
				seen[tid], fresh = true, true
				if err := unix.SchedSetaffinity(tid, set); err != nil && err != unix.ESRCH {
					return fmt.Errorf("thread %d: %w", tid, err)
				}
			}
			if !fresh {
				return nil
			}
		}
	}
	t.Cleanup(func() {
		if err := setAll(&saved); err != nil {
			t.Errorf("restoring the CPUs of the process: %v", err)
		}
	})
	if err := setAll(&one); err != nil {
		t.Fatalf("moving the process to one CPU: %v", err)
	}
}

// TestRawWaitOutlastsPreemption: a preemption request (here the
// stop-the-world of garbage collections) makes the raw wait yield its P but
// not end: it goes on for the time left. Ending it at the first preemption
// (sysmon sends one after every 10 ms of waiting) made any raw wait longer
// than 10 ms useless. And the garbage collections complete while the raw
// wait is still going on: it never holds them up, neither their
// stop-the-world nor the scan of the waiting goroutine's stack. The test
// ends the wait by its wake eventfd once three collections are done, so
// that a loaded machine only makes it slower, never wrong.
//
// On one CPU (onOneCPU): before rawPpoll gave each ppoll a preemption
// point, the raw wait answered the scan's preemption with a Gosched, which
// let it go on and never parked, and the first collection waited the
// whole raw wait, every time (5 runs of 5). On two CPUs it did so in about
// 1 run in 25 under load, and failed CI's race pass once.
func TestRawWaitOutlastsPreemption(t *testing.T) {
	const raw, blocking = 10 * time.Second, 10 * time.Second
	savedRaw, savedForeign := foreignRawWait, foreignWait
	foreignRawWait, foreignWait = raw, blocking
	defer func() { foreignRawWait, foreignWait = savedRaw, savedForeign }()
	onOneCPU(t)
	c, _ := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0) // not attached: the test reads
	q := e.queues[0]
	wakeFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wakeFd)
	var gcsDone, wokenAt atomic.Int64 // UnixNano
	go func() {
		time.Sleep(20 * time.Millisecond) // let the raw wait begin
		for range 3 {
			runtime.GC()
		}
		gcsDone.Store(time.Now().UnixNano())
		time.Sleep(20 * time.Millisecond) // a wait that ended here would be seen
		wokenAt.Store(time.Now().UnixNano())
		unix.Write(wakeFd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}()
	start := time.Now()
	_, err = q.rawRead(wakeFd)
	ended := time.Now()
	if err != errWoken {
		t.Fatalf("wait of an empty queue: %v, want errWoken (the wake-up)", err)
	}
	switch {
	case gcsDone.Load() == 0:
		t.Fatalf("the wait ended after %v, before three garbage collections were done", ended.Sub(start))
	case wokenAt.Load() == 0 || ended.UnixNano() < wokenAt.Load():
		t.Errorf("the wait ended after %v, at a preemption, before the wake-up", ended.Sub(start))
	case ended.Sub(start) >= raw:
		t.Errorf("the wait took %v: the garbage collections waited for the raw wait (%v) to end", ended.Sub(start), raw)
	}
}

// TestRawWaitRehearses: a queue whose dispatcher rehearses (q.warm) has
// it rehearse every warmEvery of its raw wait, and only then: the raw wait
// still lasts its full length before the blocking wait, a packet still
// ends it at once, and no rehearsal happens in the blocking wait.
func TestRawWaitRehearses(t *testing.T) {
	const raw, blocking, every = 40 * time.Millisecond, 30 * time.Millisecond, 2 * time.Millisecond
	savedRaw, savedForeign, savedWarm := foreignRawWait, foreignWait, warmEvery
	foreignRawWait, foreignWait, warmEvery = raw, blocking, every
	defer func() { foreignRawWait, foreignWait, warmEvery = savedRaw, savedForeign, savedWarm }()
	c, peer := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0) // not attached: the test reads
	q := e.queues[0]
	var warms int
	q.warm = func() { warms++ }
	wakeFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(wakeFd)

	start := time.Now()
	if _, err := q.rawRead(wakeFd); err != errWoken {
		t.Fatalf("wait of an empty queue: %v, want errWoken (the bounded wait's end)", err)
	}
	if took := time.Since(start); took < raw+blocking {
		t.Errorf("wait of an empty queue took %v, want >= %v: rehearsals shortened the raw wait", took, raw+blocking)
	}
	// One per slice of the raw wait: raw/every, less the last one, which
	// ends the raw wait rather than a slice. Preemptions only split slices.
	if max := int(raw / every); warms < max/2 || warms > max {
		t.Errorf("%d rehearsals in a raw wait of %v, want about %d", warms, raw, max-1)
	}

	warms = 0
	go func() {
		time.Sleep(10 * time.Millisecond)
		peer.Write(make([]byte, VnetHdrLen+28))
	}()
	start = time.Now()
	if n, err := q.rawRead(wakeFd); err != nil || n != VnetHdrLen+28 {
		t.Fatalf("read of a packet sent during the raw wait: %d bytes, %v", n, err)
	}
	if took := time.Since(start); took >= raw {
		t.Errorf("a packet sent 10 ms into the raw wait was read after %v", took)
	}
	if warms == 0 || warms >= int(raw/every) {
		t.Errorf("%d rehearsals before a packet 10 ms into the wait, want some, fewer than %d", warms, raw/every)
	}

	warms = 0
	warmEvery = 0
	if _, err := q.rawRead(wakeFd); err != errWoken {
		t.Fatalf("wait of an empty queue: %v, want errWoken", err)
	}
	if warms != 0 {
		t.Errorf("%d rehearsals with warmEvery 0", warms)
	}
}

// warmDispatcher is an echoDispatcher that counts rehearsals.
type warmDispatcher struct {
	echoDispatcher
	warms atomic.Int64
}

func (d *warmDispatcher) WarmQueue(int) { d.warms.Add(1) }

// TestAttachWiresWarmDispatcher: an attached WarmDispatcher is asked to
// rehearse while a queue waits after a packet, and stops being asked once
// the raw wait has ended.
func TestAttachWiresWarmDispatcher(t *testing.T) {
	const raw, every = 50 * time.Millisecond, 2 * time.Millisecond
	savedRaw, savedWarm := foreignRawWait, warmEvery
	foreignRawWait, warmEvery = raw, every
	defer func() { foreignRawWait, warmEvery = savedRaw, savedWarm }()
	c, peer := rawPair(t)
	e := NewEndpointConns([]Conn{c}, 1500, 0)
	d := &warmDispatcher{echoDispatcher: echoDispatcher{idle: make([]atomic.Int64, 1)}}
	d.e = e
	e.Attach(d)
	defer e.Close()
	pkt := make([]byte, VnetHdrLen+28)
	pkt[VnetHdrLen] = 0x45
	if _, err := peer.Write(pkt); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := peer.Read(make([]byte, 100)); err != nil {
		t.Fatalf("echo: %v", err)
	}
	waitUntil(t, "a rehearsal", func() bool { return d.warms.Load() > 0 })
	// The raw wait ends and the blocking wait rehearses nothing: the count
	// stops growing, at no more than one per slice of the raw wait (its
	// length is counted in ppoll's time, so a loaded machine that
	// stretches it in wall-clock time does not add slices).
	waitUntil(t, "rehearsals to stop", func() bool {
		n := d.warms.Load()
		time.Sleep(10 * every)
		return d.warms.Load() == n
	})
	if n := d.warms.Load(); n > int64(raw/every) {
		t.Errorf("%d rehearsals after one packet, want at most %d (one per slice of the raw wait)", n, raw/every)
	}
}
