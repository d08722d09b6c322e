package stack

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/stack/tun"
)

// usesTunLoop reports whether d runs over tun mode's queue loop (a
// tun.Endpoint) rather than fd_tap.go's endpoints.
func usesTunLoop(d *Datapath) bool {
	_, ok := d.handler.link.(*tun.Endpoint)
	return ok
}

// serveTunFDsIn opens a tun of queues queues with a virtio_net_hdr of
// vnet bytes (0: none) in ns, routes the translator's IPv4 pool into it,
// and serves its descriptors through ServeFDQueues until ctx is done.
func serveTunFDsIn(t *testing.T, ns *netnstest.NS, ctx context.Context, queues, vnet int) (*Datapath, []int) {
	t.Helper()
	fds := openTunIn(t, ns, queues, vnet)
	d, err := ServeFDQueues(ctx, testEngine(t), fds, 1520, vnet, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, fds
}

// openTunIn opens serveTunFDsIn's tun.
func openTunIn(t *testing.T, ns *netnstest.NS, queues, vnet int) []int {
	t.Helper()
	var fds []int
	if err := ns.Do(func() (err error) {
		fds, err = openTunQueues("dp-fdq", queues, vnet)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	ns.Run("ip", "link", "set", "dp-fdq", "mtu", "1520", "up")
	ns.Run("ip", "route", "add", "198.51.100.0/24", "dev", "dp-fdq")
	return fds
}

// TestNetnsFDTunLoop: the descriptors of a tun, with or without a
// virtio_net_hdr, run tun mode's queue loop; a socket keeps fd_tap.go's.
func TestNetnsFDTunLoop(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	for _, vnet := range []int{0, tun.VnetHdrLen, maxVnetHdr} {
		t.Run(fmt.Sprintf("vnet=%d", vnet), func(t *testing.T) {
			ns := netnstest.New(t, "dp-loop-")
			ctx, cancel := context.WithCancel(context.Background())
			d, _ := serveTunFDsIn(t, ns, ctx, 2, vnet)
			if !usesTunLoop(d) {
				t.Errorf("a tun's descriptors run %T, not the tun queue loop", d.handler.link)
			}
			cancel()
			if err := d.Wait(); err != nil {
				t.Error(err)
			}
		})
	}
	fds := dgramPair(t)
	d, err := ServeFDQueues(context.Background(), testEngine(t), []int{fds[0]}, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if usesTunLoop(d) {
		t.Error("a socket runs the tun queue loop")
	}
	d.stopped.Store(true)
	for _, ep := range d.handler.link.(fdQueues) {
		ep.Attach(nil)
	}
	d.Wait()
}

// TestNetnsFDQueueSpread: the flows through a two-queue tun handed over
// as two descriptors are spread over both, each translated by its own
// queue (TestNetnsQueueSpread through fd mode).
func TestNetnsFDQueueSpread(t *testing.T) {
	tp := newModeTopology(t, modeFD, 1520, 2)
	if !usesTunLoop(tp.dp) || len(tp.dp.handler.queues) != 2 {
		t.Fatalf("fd mode over two tun queues: %T with %d queues", tp.dp.handler.link, len(tp.dp.handler.queues))
	}
	queueSpread(t, tp)
}

// TestNetnsFDStopPrompt: cancelling the context stops a tun's queue loops
// at once, idle (each waits in a raw ppoll that only a wake-up ends
// before rawWait) or under a flood (the queues never run dry), closes the
// duplicates the loops read and leaves the caller's descriptors open.
func TestNetnsFDStopPrompt(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	for _, flood := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "flood"}[flood], func(t *testing.T) {
			ns := netnstest.New(t, "dp-stop-")
			fds := openTunIn(t, ns, 2, maxVnetHdr)
			var c net.Conn
			if err := ns.Do(func() (err error) {
				c, err = net.Dial("udp4", "198.51.100.7:9")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			before := netnstest.OpenFDs(t)
			ctx, cancel := context.WithCancel(context.Background())
			d, err := ServeFDQueues(ctx, testEngine(t), fds, 1520, maxVnetHdr, nil)
			if err != nil {
				t.Fatal(err)
			}
			stopFlood := make(chan struct{})
			flooding := make(chan struct{})
			if flood {
				go func() {
					defer close(flooding)
					msg := make([]byte, 64)
					for {
						select {
						case <-stopFlood:
							return
						default:
							c.Write(msg)
						}
					}
				}()
				waitFor(t, "the flood to reach the translator", func() bool { return d.LinkStats().Reads > 1000 })
			} else {
				close(flooding)
				time.Sleep(50 * time.Millisecond) // into the raw wait
			}
			start := time.Now()
			cancel()
			done := make(chan error, 1)
			go func() { done <- d.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Wait: %v", err)
				}
				if took := time.Since(start); took > 500*time.Millisecond {
					t.Errorf("stop took %v", took)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait did not return after the context was cancelled")
			}
			close(stopFlood)
			<-flooding
			for _, fd := range fds {
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
					t.Errorf("the caller's fd %d: %v", fd, err)
				}
			}
			after := netnstest.OpenFDs(t)
			for fd := range after {
				if !before[fd] {
					t.Errorf("fd %s opened by the data path is still open", fd)
				}
			}
		})
	}
}

// TestNetnsFDQueueFails: one of a tun's queues failing stops the whole
// data path, and Wait returns its error, naming the descriptor. The queue
// is made to fail by putting a directory in place of the duplicate it
// reads (dup2): every read fails (EISDIR), tun.MaxReadErrors in a row end
// its loop. (A tun gives no way to break one queue alone: a deleted
// interface fails them all, a detached queue only goes quiet.)
func TestNetnsFDQueueFails(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fail-")
	fds := openTunIn(t, ns, 2, maxVnetHdr)
	before := netnstest.OpenFDs(t)
	d, err := ServeFDQueues(context.Background(), testEngine(t), fds, 1520, maxVnetHdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	dup := -1 // a duplicate the data path reads: a new descriptor on the tun
	for fd := range 1024 {
		if link, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && !before[fmt.Sprint(fd)] && link == "/dev/net/tun" {
			dup = fd
			break
		}
	}
	if dup < 0 {
		t.Fatal("no duplicate of the tun's descriptors")
	}
	dir, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dir)
	if err := unix.Dup3(dir, dup, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		// Which of the caller's descriptors the broken duplicate is a
		// copy of is not visible from here: either will do.
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("fd %d: read: ", fds[0])) && !strings.Contains(err.Error(), fmt.Sprintf("fd %d: read: ", fds[1])) {
			t.Errorf("Wait: %v, want a read error naming fd %d or %d", err, fds[0], fds[1])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after a queue failed")
	}
	if d.Healthy() {
		t.Error("healthy after a queue failed")
	}
	if s := d.LinkStats(); s.ReadErrors < tun.MaxReadErrors {
		t.Errorf("%d read errors counted, want %d", s.ReadErrors, tun.MaxReadErrors)
	}
}

// TestNetnsFDTunOutOfPoller: the duplicates the tun loop reads are not in
// the runtime poller's epoll set (as a Device's queues are not): the
// loop waits for them itself, and an epoll watching them would wake an
// idle runtime thread at every packet.
func TestNetnsFDTunOutOfPoller(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-poll-")
	fds := openTunIn(t, ns, 2, maxVnetHdr)
	callers := map[string]bool{}
	for _, fd := range fds {
		callers[fmt.Sprint(fd)] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := ServeFDQueues(ctx, testEngine(t), fds, 1520, maxVnetHdr, nil)
	if err != nil {
		t.Fatal(err)
	}
	var dups []string
	var watched string
	for fd := range netnstest.OpenFDs(t) {
		link, _ := os.Readlink("/proc/self/fd/" + fd)
		switch {
		case link == "/dev/net/tun" && !callers[fd]:
			dups = append(dups, fd)
		case link == "anon_inode:[eventpoll]":
			b, _ := os.ReadFile("/proc/self/fdinfo/" + fd)
			watched += string(b)
		}
	}
	if len(dups) != len(fds) {
		t.Fatalf("%d duplicates of the tun's %d descriptors", len(dups), len(fds))
	}
	for _, fd := range dups {
		if strings.Contains(watched, "tfd: "+strings.Repeat(" ", max(0, 8-len(fd)))+fd+" ") {
			t.Errorf("the runtime poller watches fd %s, a duplicate the loop reads", fd)
		}
	}
	for _, fd := range fds {
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Errorf("the caller's fd %d is not left non-blocking: flags %#x, %v", fd, fl, err)
		}
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Error(err)
	}
}
