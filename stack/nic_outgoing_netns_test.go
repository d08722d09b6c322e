package stack

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// outgoingOnlyFilter accepts the frames the host sends (PACKET_OUTGOING)
// and nothing else.
var outgoingOnlyFilter = []unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: uint32(skfAdOff + skfAdPktType)},
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_OUTGOING},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},
	{Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

func attachOutgoingOnly(t *testing.T, fd int) {
	t.Helper()
	prog := unix.SockFprog{Len: uint16(len(outgoingOnlyFilter)), Filter: &outgoingOnlyFilter[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		t.Fatal(err)
	}
}

// packetsAccepted is the number of frames the socket's filter passed since
// the last call (PACKET_STATISTICS, which it resets).
func packetsAccepted(t *testing.T, fd int) uint32 {
	t.Helper()
	st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		t.Fatal(err)
	}
	return st.Packets
}

// TestNetnsNICFanoutIgnoresOutgoing: the NIC sockets, which are always in
// a fanout group, do not get the frames sent on their NIC. The sockets'
// PACKET_IGNORE_OUTGOING does not reach the group's hook in the kernel
// (the kernel's fanout selftest says as much): without the group's
// PACKET_FANOUT_FLAG_IGNORE_OUTGOING every frame sent on the NIC reached
// the group, was steered and was dropped only by the socket filter. Here
// the sockets' filter passes only outgoing frames, so that the kernel's
// count of frames they accepted shows whether any reached them; a socket
// outside any group, with the same filter, shows that frames were sent.
func TestNetnsNICFanoutIgnoresOutgoing(t *testing.T) {
	netnstest.Require(t, "dp-")
	ns := netnstest.New(t, "dp-out-")
	peer := netnstest.New(t, "dp-outpeer-")
	netnstest.Veth(t, ns, "x4", peer, "p4")
	ns.Run("ip", "addr", "add", "203.0.113.1/28", "dev", "x4")
	// A neighbour nobody answers for: the frames go out and nothing
	// comes back.
	ns.Run("ip", "neigh", "replace", "203.0.113.9", "lladdr", "02:00:00:00:00:99", "dev", "x4", "nud", "permanent")
	var fds []int
	var rings []*nicRing
	var control int
	t.Cleanup(func() {
		for _, r := range rings {
			r.close()
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("x4")
		if err != nil {
			return err
		}
		p := &nicPort{name: "x4", ifindex: ifc.Index, mtu: ifc.MTU}
		for q := range 2 {
			fd, ring, err := openPacketSocket(ifc.Index, q == 0, p, 16, -1, nil)
			if err != nil {
				return err
			}
			fds, rings = append(fds, fd), append(rings, ring)
			attachOutgoingOnly(t, fd)
		}
		if p.fanoutFlags&unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING == 0 {
			t.Errorf("the fanout group was made without PACKET_FANOUT_FLAG_IGNORE_OUTGOING (flags %#x): this kernel refused it", p.fanoutFlags)
		}
		control, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		fds = append(fds, control)
		attachOutgoingOnly(t, control)
		return unix.Bind(control, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		packetsAccepted(t, fd) // from zero
	}
	const sent = 5
	if err := ns.Do(func() error {
		c, err := net.Dial("udp4", "203.0.113.9:9")
		if err != nil {
			return err
		}
		defer c.Close()
		for range sent {
			if _, err := c.Write([]byte("outgoing")); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := packetsAccepted(t, control); n < sent {
		t.Fatalf("a socket outside any group saw %d frames sent on the NIC, want at least %d: the test sent nothing", n, sent)
	}
	for q, fd := range fds[:2] {
		if n := packetsAccepted(t, fd); n != 0 {
			t.Errorf("NIC socket %d got %d frames the host sent on its NIC, want none", q, n)
		}
	}
}
