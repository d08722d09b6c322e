package stack

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/map646/map646/stack/tun"
)

// readResult is what a nicConn.Read that a test runs in the background
// returned.
type readResult struct {
	n   int
	err error
}

// readInBackground runs conn.Read on a goroutine of its own and returns
// the channel its outcome arrives on.
func readInBackground(conn *nicConn) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		buf := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
		n, err := conn.Read(buf)
		out <- readResult{n, err}
	}()
	return out
}

// expectRead fails t unless the background read got returns pkt (behind
// its virtio_net_hdr) within 5 s; when says which read it was.
func expectRead(t *testing.T, got <-chan readResult, pkt []byte, when string) {
	t.Helper()
	select {
	case r := <-got:
		if r.err != nil || r.n != tun.VnetHdrLen+len(pkt) {
			t.Fatalf("%s: read %d bytes, %v; want %d", when, r.n, r.err, tun.VnetHdrLen+len(pkt))
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: packet not read after 5 s", when)
	}
}

// inRawWait reports whether a goroutine is in a NIC queue's wait that
// keeps its P (nicConn.rawWait); the test's only queue.
func inRawWait() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "(*nicConn).rawWait")
}

// setNICRawWait sets nicRawWait for the test.
func setNICRawWait(t *testing.T, d time.Duration) {
	saved := nicRawWait
	nicRawWait = d
	t.Cleanup(func() { nicRawWait = saved })
}

// TestNetnsNICRawWaitKeepsItsLength: a NIC queue that finds its ring empty
// waits nicRawWait keeping its P, and only then in the runtime poller;
// preemption requests (here garbage collections every 5 ms, besides
// sysmon's every 10 ms) make it yield the P but not end; and every wait
// for a packet starts afresh (not from a timeout a previous wait used up).
// With the wait at 1 ms, a packet a second paid a park and an unpark in
// the poller.
func TestNetnsNICRawWaitKeepsItsLength(t *testing.T) {
	const raw = 400 * time.Millisecond
	setNICRawWait(t, raw)
	_, _, conn, send := ringQueue(t, 16)
	stop := make(chan struct{})
	var gcs atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				runtime.GC()
				gcs.Add(1)
			}
		}
	}()
	defer close(stop)
	for i := range 2 {
		start := time.Now()
		got := readInBackground(conn)
		// The wait ends no sooner than raw after the read began (a
		// loaded machine makes it seem later, never sooner).
		entered := false
		for time.Since(start) < 10*time.Second {
			in := inRawWait()
			entered = entered || in
			if entered && !in {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		switch {
		case !entered:
			t.Fatalf("wait %d: the queue never waited in the raw wait", i)
		case took < raw:
			t.Errorf("wait %d: the raw wait ended %v after the read began, want >= %v (%d garbage collections so far)", i, took, raw, gcs.Load())
		case took >= 10*time.Second:
			t.Errorf("wait %d: still in the raw wait after %v, want the poller's after %v", i, took, raw)
		}
		pkt := ipv6(header.UDPProtocolNumber, cli6, srv6, make([]byte, 8+byte(i)))
		send(pkt)
		expectRead(t, got, pkt, fmt.Sprintf("wait %d", i))
	}
	if gcs.Load() == 0 {
		t.Error("no garbage collection ran during the waits: the raw wait kept the P")
	}
}

// TestNetnsNICRawWaitStops: a read deadline in the past (the endpoint
// stopping the queue) ends a raw wait at once through the wake eventfd,
// not when the wait would have ended (here an hour); clearing the
// deadline (the next attachment) makes the next wait last again, and it
// reads the next packet.
func TestNetnsNICRawWaitStops(t *testing.T) {
	setNICRawWait(t, time.Hour)
	_, _, conn, send := ringQueue(t, 16)
	got := readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	if !inRawWait() {
		t.Fatal("an idle queue is not in the raw wait")
	}
	start := time.Now()
	conn.SetReadDeadline(time.Unix(1, 0))
	select {
	case r := <-got:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Errorf("read stopped by a past deadline: %d bytes, %v", r.n, r.err)
		}
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Errorf("stopping a queue in the raw wait took %v, want < 100 ms", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a past deadline did not end the raw wait in 5 s")
	}
	conn.SetReadDeadline(time.Time{})
	got = readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-got:
		t.Fatalf("read with no deadline returned at once: %d bytes, %v (the stop's wake-up left behind)", r.n, r.err)
	default:
	}
	if !inRawWait() {
		t.Error("the queue started again is not in the raw wait")
	}
	pkt := ipv6(header.UDPProtocolNumber, cli6, srv6, make([]byte, 8))
	send(pkt)
	expectRead(t, got, pkt, "started again")
}

// TestNetnsNICRawWaitKeepsNoP: with GOMAXPROCS 1 and the one P's queue in
// the raw wait (for an hour: only a preemption request can take the P
// from it), the runtime still runs everything else: garbage collections
// (whose stop-the-world needs every P) complete and goroutines run.
func TestNetnsNICRawWaitKeepsNoP(t *testing.T) {
	setNICRawWait(t, time.Hour)
	_, _, conn, _ := ringQueue(t, 16)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	got := readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	if !inRawWait() {
		t.Fatal("an idle queue is not in the raw wait")
	}
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
		t.Fatal("GC and goroutines stuck while the queue waits in the raw wait")
	}
	conn.SetReadDeadline(time.Unix(1, 0))
	if r := <-got; !errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Errorf("read stopped by a past deadline: %d bytes, %v", r.n, r.err)
	}
}

// TestNetnsNICRawWaitLinkDown: a NIC that goes down while its queue is in
// the raw wait leaves an error on the socket (ENETDOWN), which ppoll
// reports at once for as long as it stays: the queue takes it and waits
// in the poller instead of spinning on it for the rest of the raw wait;
// with the NIC up again it reads the next packet.
func TestNetnsNICRawWaitLinkDown(t *testing.T) {
	setNICRawWait(t, time.Hour)
	ns, _, conn, send := ringQueue(t, 16)
	// The queue tells the Handler it is idle each time it finds its ring
	// empty: once per wait, or at every turn of a spin.
	var idles atomic.Int64
	conn.idle = func() { idles.Add(1) }
	got := readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	if !inRawWait() {
		t.Fatal("an idle queue is not in the raw wait")
	}
	before := idles.Load()
	ns.Run("ip", "link", "set", "x6", "down")
	time.Sleep(300 * time.Millisecond)
	if n := idles.Load() - before; n > 10 {
		t.Errorf("the queue found its ring empty %d times in 300 ms after its NIC went down: it spins on the socket's error", n)
	}
	ns.Run("ip", "link", "set", "x6", "up")
	time.Sleep(100 * time.Millisecond) // the veth's carrier
	pkt := ipv6(header.UDPProtocolNumber, cli6, srv6, make([]byte, 8))
	send(pkt)
	expectRead(t, got, pkt, "with the NIC up again")
}

// pingTimes sends count pings interval apart from the topology's client to
// the server through the translator and returns their round trips, sorted.
func pingTimes(t *testing.T, tp *topology, count int, interval string) []time.Duration {
	t.Helper()
	out := tp.cli.Run("ping", "-n", "-c", strconv.Itoa(count), "-i", interval, "-W", "2", serverV4)
	var rtts []time.Duration
	for _, line := range strings.Split(out, "\n") {
		// 64 bytes from 198.51.100.10: icmp_seq=1 ttl=63 time=0.291 ms
		_, after, ok := strings.Cut(line, " time=")
		if !ok {
			continue
		}
		ms, err := strconv.ParseFloat(strings.TrimSuffix(after, " ms"), 64)
		if err != nil {
			t.Fatalf("ping line %q: %v", line, err)
		}
		rtts = append(rtts, time.Duration(ms*float64(time.Millisecond)))
	}
	if len(rtts) < count/2 {
		t.Fatalf("%d of %d pings answered:\n%s", len(rtts), count, out)
	}
	slices.Sort(rtts)
	return rtts
}

// TestNetnsNICPollerHandOff: packets that come after a NIC queue's raw
// wait has lapsed are read at once. Until session 7 such a queue parked in
// the runtime poller, and a raw wait taken after a wake-up through the
// poller kept the poller's thread: a ping's reply, on the other NIC's
// socket whose queue was parked, waited until the request's queue ended
// its raw wait or sysmon polled (every 10 ms; 1 ms late with a 1 ms raw
// wait). The queues now wait in a blocking ppoll of their own and never
// in the poller. Here the raw wait (50 ms) lapses between pings (200 ms
// apart), so that every request and reply is read from the blocking wait,
// with 2 queues, as the daemon runs them.
func TestNetnsNICPollerHandOff(t *testing.T) {
	setNICRawWait(t, 50*time.Millisecond)
	const queues = 2
	// The daemon's Ps: one per CPU and one per NIC socket (procsForQueues).
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(runtime.NumCPU() + 2*queues))
	tp := newModeTopology(t, modeNIC, 1520, queues)
	tp.cli.Run("ping", "-c", "3", "-i", "0.05", "-W", "2", serverV4) // neighbours
	rtts := pingTimes(t, tp, 21, "0.2")
	med := rtts[len(rtts)/2]
	t.Logf("ping RTT after lapsed raw waits: median %v, min %v, max %v", med, rtts[0], rtts[len(rtts)-1])
	if med > 4*time.Millisecond {
		t.Errorf("median ping RTT %v with every packet read after a lapsed raw wait, want < 4 ms (a reply waited for sysmon's poll)", med)
	}
}

// TestNetnsNICPairedWait: a queue that reads two NICs' sockets (pair)
// waits for both: in the raw wait and in the blocking wait a packet on
// either ends the wait; the sockets and the pair's epoll instance are out
// of the runtime poller (registered, every packet also woke the poller's
// thread); packets waiting on both are read in turns, so
// neither direction starves the other; a past deadline still ends the raw
// wait at once; and the other NIC going down does not make the queue spin
// on its socket's error (the pair's epoll instance reports it as
// readable), and it reads again when the NIC is back up.
func TestNetnsNICPairedWait(t *testing.T) {
	setNICRawWait(t, time.Hour)
	ns, conn, send6, sendOther := pairedQueue(t, 16)
	var idles atomic.Int64
	conn.idle = func() { idles.Add(1) }
	pkt := func(n int) []byte { return ipv6(header.UDPProtocolNumber, cli6, srv6, make([]byte, 8+n)) }
	// A file the runtime poller does not hold has no deadlines.
	for _, f := range []*os.File{conn.file, conn.other.file, conn.waitFile} {
		if err := f.SetReadDeadline(time.Time{}); !errors.Is(err, os.ErrNoDeadline) {
			t.Errorf("%s: SetReadDeadline = %v, want os.ErrNoDeadline: the runtime poller holds it", f.Name(), err)
		}
	}

	for i, send := range []func([]byte){sendOther, send6, sendOther} {
		got := readInBackground(conn)
		time.Sleep(50 * time.Millisecond)
		if !inRawWait() {
			t.Fatalf("packet %d: an idle queue is not in the raw wait", i)
		}
		send(pkt(i))
		expectRead(t, got, pkt(i), fmt.Sprintf("raw wait, packet %d", i))
	}

	// Three packets waiting on each socket: read in turns.
	for i := range 3 {
		send6(pkt(10 + i))
		sendOther(pkt(20 + i))
	}
	time.Sleep(50 * time.Millisecond)
	buf := make([]byte, tun.VnetHdrLen+tun.GSOMaxSize)
	var order []int
	for range 6 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, n-tun.VnetHdrLen-header.IPv6MinimumSize-8)
	}
	for i := 1; i < len(order); i++ {
		if order[i]/10 == order[i-1]/10 {
			t.Errorf("reads in the order of payloads %v: not in turns", order)
			break
		}
	}

	// The other NIC down, in the raw wait: no spin.
	got := readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	before := idles.Load()
	ns.Run("ip", "link", "set", "y6", "down")
	time.Sleep(300 * time.Millisecond)
	if n := idles.Load() - before; n > 10 {
		t.Errorf("the queue found its rings empty %d times in 300 ms after the other NIC went down: it spins on the socket's error", n)
	}
	ns.Run("ip", "link", "set", "y6", "up")
	time.Sleep(100 * time.Millisecond) // the veth's carrier
	sendOther(pkt(30))
	expectRead(t, got, pkt(30), "with the other NIC up again")

	// The blocking wait: a raw wait that lapses at once.
	setNICRawWait(t, time.Millisecond)
	got = readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	if inRawWait() {
		t.Fatal("the queue is still in a raw wait of 1 ms after 50 ms")
	}
	sendOther(pkt(31))
	expectRead(t, got, pkt(31), "in the blocking wait, a packet on the other socket")
	got = readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	send6(pkt(32))
	expectRead(t, got, pkt(32), "in the blocking wait, a packet on the queue's own socket")

	// A past deadline ends the raw wait at once.
	setNICRawWait(t, time.Hour)
	got = readInBackground(conn)
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	conn.SetReadDeadline(time.Unix(1, 0))
	select {
	case r := <-got:
		if !errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Errorf("read stopped by a past deadline: %d bytes, %v", r.n, r.err)
		}
		if took := time.Since(start); took > 100*time.Millisecond {
			t.Errorf("stopping a paired queue in the raw wait took %v, want < 100 ms", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a past deadline did not end the paired queue's raw wait in 5 s")
	}
}
