package stack

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// tapResolverGoroutines counts the goroutines that run a tap's resolver
// or its neighbour upkeep: both write to the tap's fd.
func tapResolverGoroutines() int {
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for _, g := range strings.Split(dump, "\n\n") {
		if strings.Contains(g, "stack.(*resolver).run") || strings.Contains(g, "stack.(*tapEndpoint).maintain") {
			n++
		}
	}
	return n
}

// TestTapWaitEndsFDWriters: when Wait returns, the goroutines that write
// to the tap's fd besides the queue (the resolver sending parked packets,
// the upkeep sending solicitations) have ended, so a caller that closes
// the fd then cannot have a reuse of its number written to. Until session
// 8 they were only told to stop; Wait did not wait for them.
func TestTapWaitEndsFDWriters(t *testing.T) {
	eng := testEngine(t)
	if n := tapResolverGoroutines(); n != 0 {
		t.Fatalf("%d resolver goroutines before the test", n)
	}
	for i := range 20 {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		dp, err := ServeTap(ctx, eng, TapConfig{FD: fds[0], MTU: 1500, MAC: tapMAC, IPv6Gateway: gw6}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := dp.Wait(); err != nil {
			t.Errorf("Wait: %v", err)
		}
		n := tapResolverGoroutines()
		unix.Close(fds[0])
		unix.Close(fds[1])
		if n != 0 {
			t.Fatalf("start and stop %d: %d goroutines writing to the fd still ran after Wait returned", i, n)
		}
	}
}

// TestTapParkedSendErrorCounted: a parked packet whose send fails once
// its next hop answered is a write error: its Write had succeeded, so
// nothing else counts it (NIC mode counts the same).
func TestTapParkedSendErrorCounted(t *testing.T) {
	eng := testEngine(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	defer unix.Close(fds[0])
	ctx, cancel := context.WithCancel(context.Background())
	dp, err := ServeTap(ctx, eng, TapConfig{FD: fds[0], MTU: 1500, MAC: tapMAC, IPv6Gateway: gw6}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := dp.Wait(); err != nil {
			t.Errorf("Wait: %v", err)
		}
	}()
	peer := tapPeer{t, fds[1]}
	v4 := ipv4(header.UDPProtocolNumber, cli4, srv4, l4(header.UDPProtocolNumber, cli4, srv4, payload(32, 1), false), 0, 0)
	peer.send(tapMAC, peerMAC, ethTypeIP4, v4)
	if f := peer.recv(); f == nil || !isND(f[ethHdrLen:]) {
		t.Fatalf("no NS for the gateway: %x", f)
	}
	// Fill the peer's receive queue through the translator's end, so
	// that the translator's next write to it fails (EAGAIN).
	filler := make([]byte, 1500)
	for {
		if err := unix.Sendto(fds[0], filler, unix.MSG_DONTWAIT, nil); err != nil {
			if err != unix.EAGAIN {
				t.Fatal(err)
			}
			break
		}
	}
	before := dp.LinkStats().WriteErrors
	peer.send(tapMAC, peerMAC, ethTypeIP6, ndPacket(header.ICMPv6NeighborAdvert, gw6.String(), "fe80::5eff:fe10:1", gw6.String(), 255, 0x60, peerMAC[:]))
	deadline := time.Now().Add(5 * time.Second)
	for dp.LinkStats().WriteErrors == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := dp.LinkStats(); s.WriteErrors != before+1 || s.Writes != 1 {
		t.Errorf("writes %d, write errors %d (before the answer %d): want 1 written by the Handler, 1 lost when sent", s.Writes, s.WriteErrors, before)
	}
}
