package tun

import (
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitKeepingP: an empty queue's loop waits in ppoll for the next
// packet up to PollWait while fewer than GOMAXPROCS-1 queues do, and
// reports a packet that arrives meanwhile; past the limit it does not wait
// at all.
func TestWaitKeepingP(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("with GOMAXPROCS 1 no queue may keep the only P")
	}
	defer func(p time.Duration) { PollWait = p }(PollWait)
	PollWait = 200 * time.Millisecond
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "queue"), os.NewFile(uintptr(fds[1]), "peer")
	defer a.Close()
	defer b.Close()
	e := NewEndpointConns([]Conn{a}, 1500, 0)
	q := e.queues[0]
	q.maxPollers = int32(runtime.GOMAXPROCS(0) - 1) // as Attach sets it
	wait := func() (ok bool, took time.Duration) {
		start := time.Now()
		q.raw.Control(func(fd uintptr) { ok = q.waitKeepingP(fd) })
		return ok, time.Since(start)
	}

	go func() {
		time.Sleep(20 * time.Millisecond)
		b.Write([]byte{1, 2, 3})
	}()
	// A signal (the runtime's preemption, the race detector's) may end a
	// wait early, as it should: try again then.
	start := time.Now()
	for ok := false; !ok; {
		if ok, _ = wait(); !ok && time.Since(start) > PollWait {
			t.Fatalf("packet after 20ms not seen in %v", time.Since(start))
		}
	}
	buf := make([]byte, 10)
	if n, err := unix.Read(fds[0], buf); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}

	PollWait = 30 * time.Millisecond
	if ok, took := wait(); ok || took > 10*PollWait {
		t.Errorf("no packet: ready %v after %v, want false after %v", ok, took, PollWait)
	}

	e.pollers.Store(int32(runtime.GOMAXPROCS(0) - 1)) // every spare P is taken
	if ok, took := wait(); ok || took >= PollWait {
		t.Errorf("at the limit: ready %v after %v, want false at once", ok, took)
	}
	if e.pollers.Load() != int32(runtime.GOMAXPROCS(0)-1) {
		t.Errorf("pollers %d after the refused wait", e.pollers.Load())
	}
}
