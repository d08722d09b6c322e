package stack

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestFDEndOfFile: an inherited descriptor that is not a datagram or
// seqpacket socket and reads 0 bytes has no more to give (a stream socket
// whose peer shut its side, a pipe whose writer is gone, a file or
// /dev/null handed over by mistake): the data path stops with an error
// naming the descriptor, instead of counting empty reads in a loop that
// spun a CPU and never looked at a stop (Wait hung). A seqpacket socket
// whose peer hung up still stops as before.
func TestFDEndOfFile(t *testing.T) {
	for _, c := range []struct {
		name string
		open func(t *testing.T) int // the descriptor served; it reads 0 bytes
		want string
	}{
		{name: "/dev/null", want: "end of file", open: func(t *testing.T) int {
			fd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			return fd
		}},
		{name: "stream socket, peer shut its side", want: "end of file", open: func(t *testing.T) int {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Shutdown(fds[1], unix.SHUT_WR) // still open: no hang-up
			t.Cleanup(func() { unix.Close(fds[1]) })
			return fds[0]
		}},
		{name: "pipe, writer gone", want: "closed by its peer", open: func(t *testing.T) int {
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			unix.Close(p[1])
			return p[0]
		}},
		{name: "seqpacket socket, peer closed", want: "closed by its peer", open: func(t *testing.T) int {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fds[1])
			return fds[0]
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd := c.open(t)
			defer unix.Close(fd)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			d, err := ServeFDQueues(ctx, testEngine(t), []int{fd}, 1500, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- d.Wait() }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "fd ") {
					t.Errorf("Wait: %v, want an error naming the fd and %q", err, c.want)
				}
			case <-time.After(5 * time.Second):
				cancel()
				select {
				case <-done:
					t.Fatal("the data path went on reading 0 bytes until stopped")
				case <-time.After(5 * time.Second):
					t.Fatal("the data path went on reading 0 bytes, and a stop did not end it")
				}
			}
		})
	}
}

// TestFDEmptyDatagrams: on a datagram socket a read of 0 bytes is an
// empty datagram, counted and passed over: the packets behind it are
// translated, and the data path stops when asked.
func TestFDEmptyDatagrams(t *testing.T) {
	const udp = header.UDPProtocolNumber
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd, peer := fds[0], os.NewFile(uintptr(fds[1]), "peer")
		ctx, cancel := context.WithCancel(context.Background())
		d, err := ServeFDQueues(ctx, testEngine(t), []int{fd}, 1500, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		pkt := ipv4(udp, cli4, srv4, l4(udp, cli4, srv4, payload(20, 1), false), 0, 0)
		for range 3 {
			if _, err := peer.Write(nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := peer.Write(pkt); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 200)
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := peer.Read(buf); err != nil || n != len(pkt)+20 || buf[0]>>4 != 6 {
			t.Fatalf("socket type %d: after empty datagrams: %d bytes, %v", typ, n, err)
		}
		if s := d.LinkStats(); s.NotIP != 3 {
			t.Errorf("socket type %d: link counters %+v, want the 3 empty datagrams counted", typ, s)
		}
		cancel()
		if err := d.Wait(); err != nil {
			t.Errorf("socket type %d: Wait: %v", typ, err)
		}
		peer.Close()
		unix.Close(fd)
	}
}
