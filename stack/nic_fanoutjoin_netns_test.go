package stack

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// TestNetnsNICJoinReadsOnce: frames that arrive while a queue's socket is
// bound but not yet in its NIC's fanout group are read once, by the group,
// not also by the socket on its own. Frames are sent after the second
// socket's bind and before its join (openPacketSocket's bound hook); the
// kernel's count of frames each socket's filter accepted
// (PACKET_STATISTICS) must add up to the frames sent. When the socket was
// bound with its final filter, the frames sent in that gap were counted
// by both sockets.
func TestNetnsNICJoinReadsOnce(t *testing.T) {
	netnstest.Require(t, "dp-")
	ns := netnstest.New(t, "dp-join-")
	peer := netnstest.New(t, "dp-joinpeer-")
	netnstest.Veth(t, ns, "x4", peer, "p4")
	ns.Run("ip", "addr", "add", "203.0.113.1/28", "dev", "x4")
	peer.Run("ip", "addr", "add", "203.0.113.2/28", "dev", "p4")
	// Unconnected: x4's port unreachable errors do not fail the writes.
	var conn net.PacketConn
	if err := peer.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", "203.0.113.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var fds []int
	var rings []*nicRing
	t.Cleanup(func() {
		for _, r := range rings {
			r.close()
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	// A socket outside the group, with the NIC sockets' filter, opened
	// first: the kernel runs a device's packet hooks newest first, so
	// when it has counted a frame, the group's hook and the sockets' own
	// have run for it too.
	var control int
	if err := ns.Do(func() (err error) {
		control, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := attachFilter(control, hostIPFilter); err != nil {
			unix.Close(control)
			return err
		}
		ifc, err := net.InterfaceByName("x4")
		if err != nil {
			unix.Close(control)
			return err
		}
		return unix.Bind(control, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(control)
	dst := &net.UDPAddr{IP: net.IPv4(203, 0, 113, 1), Port: 9}
	var sent, seen uint32
	send := func(n int) {
		for range n {
			if _, err := conn.WriteTo([]byte("join"), dst); err != nil {
				t.Error(err)
			}
		}
		sent += uint32(n)
		for deadline := time.Now().Add(5 * time.Second); seen < sent; time.Sleep(time.Millisecond) {
			seen += packetsAccepted(t, control)
			if time.Now().After(deadline) {
				t.Fatalf("a socket outside the group saw %d of the %d frames sent", seen, sent)
			}
		}
	}
	send(1) // the peer learns x4's link address (ARP) before anything counts
	const inGap, after = 3, 4
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("x4")
		if err != nil {
			return err
		}
		p := &nicPort{name: "x4", ifindex: ifc.Index, mtu: ifc.MTU}
		for q := range 2 {
			var bound func()
			if q == 1 {
				bound = func() { send(inGap) }
			}
			fd, ring, err := openPacketSocket(ifc.Index, q == 0, p, 16, -1, bound)
			if err != nil {
				return err
			}
			fds, rings = append(fds, fd), append(rings, ring)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	send(after) // both sockets in the group: each frame reaches one of them
	var total uint32
	for q, fd := range fds {
		n := packetsAccepted(t, fd)
		t.Logf("queue %d accepted %d frames", q, n)
		total += n
	}
	if total != inGap+after {
		t.Errorf("the NIC's sockets accepted %d frames, %d were sent: a frame that arrived between a socket's bind and its fanout join was read twice (or one was lost)", total, inGap+after)
	}
}
