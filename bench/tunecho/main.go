// Command tunecho is the floor of any tun translator: it reads each packet
// from a tun's queues and writes the same bytes back unchanged. No
// translation, no gVisor, no batching: one OS thread per queue, a blocking
// read(2) and a write(2) per packet (or GSO super-packet); with -uring, one
// io_uring_enter(2) per packet instead, as map646's queue loop submits.
//
// The netns harness (bench/netns, setup tun-echo) routes native IPv6 traffic
// from the router namespace into the tun with policy routing and lets the
// kernel route what tunecho writes back (input interface: the tun) through
// the main table on to its destination. What that costs against plain
// forwarding is what a tun detour costs by itself, for any translator that
// uses one: two copies (kernel to user, user to kernel), two system calls,
// the reader's wake-up and the kernel's second routing pass. A translator
// on the same tun can only be slower.
//
// The harness opens the tun (IFF_TUN|IFF_NO_PI|IFF_VNET_HDR, multi-queue
// when more than one, with map646's virtio_net_hdr size and offloads) and
// hands its queues over as descriptors 3 onwards; -queues says how many.
// Every packet carries its virtio_net_hdr, which goes back with it: the
// kernel then rebuilds the same GSO super-packet and partial checksum it
// handed out (Documentation/networking/tuntap.rst; virtio spec 5.1.6).
//
// It is a measuring instrument, not part of the product: it lives outside
// the product packages and the map646 binary.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// firstFD is the descriptor of the first inherited queue (the first of
// exec.Cmd.ExtraFiles).
const firstFD = 3

// bufSize holds the largest packet a tun hands out with TSO/USO offloads:
// a 64 KiB IP datagram behind a virtio_net_hdr (12 bytes at most).
const bufSize = 12 + 65535

// queueStats counts what one queue read and how many of those packets the
// kernel refused to take back. Each queue's counters sit on a
// cache line of their own: the threads never share a written line.
type queueStats struct {
	packets, bytes, writeErrs atomic.Uint64
	_                         [64 - 24]byte
}

func main() {
	queues := flag.Int("queues", 1, "tun queue descriptors inherited from fd 3 onwards")
	uring := flag.Bool("uring", false, "echo through an io_uring per queue: one io_uring_enter per packet (the write linked to the next read) instead of a read and a write")
	flag.Parse()
	if *queues < 1 || *queues > 256 {
		fmt.Fprintf(os.Stderr, "tunecho: -queues %d: want 1..256\n", *queues)
		os.Exit(2)
	}
	stats := make([]queueStats, *queues)
	fail := make(chan error, *queues)
	for i := range *queues {
		fd := firstFD + i
		name, err := tunName(fd)
		if err != nil {
			fmt.Fprintf(os.Stderr, "tunecho: descriptor %d: %v\n", fd, err)
			os.Exit(1)
		}
		// Blocking reads: the thread sleeps in read(2) until a packet
		// comes, as a plain translator's reader does.
		if err := unix.SetNonblock(fd, false); err != nil {
			fmt.Fprintf(os.Stderr, "tunecho: descriptor %d: %v\n", fd, err)
			os.Exit(1)
		}
		loop := "read/write"
		if *uring {
			loop = "io_uring"
		}
		fmt.Fprintf(os.Stderr, "tunecho: queue %d: fd %d, tun %s, %s\n", i, fd, name, loop)
		go func() {
			runtime.LockOSThread()
			buf := make([]byte, bufSize)
			if *uring {
				fail <- echoURing(fd, &stats[i], buf)
			} else {
				fail <- echo(fd, &stats[i], buf)
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	code := 0
	select {
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "tunecho: %v\n", s)
	case err := <-fail:
		fmt.Fprintf(os.Stderr, "tunecho: %v\n", err)
		code = 1
	}
	for i := range stats {
		s := &stats[i]
		fmt.Fprintf(os.Stderr, "tunecho: queue %d: %d packets, %d bytes, %d write errors\n",
			i, s.packets.Load(), s.bytes.Load(), s.writeErrs.Load())
	}
	os.Exit(code)
}

// echo copies every packet of one queue back into it, on the caller's
// locked thread, until a read fails for good. A failed write (a packet the
// kernel refuses to take back) is counted and the packet dropped.
func echo(fd int, s *queueStats, buf []byte) error {
	for {
		n, err := unix.Read(fd, buf)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			return fmt.Errorf("read fd %d: %w", fd, err)
		}
		s.packets.Add(1)
		s.bytes.Add(uint64(n))
		if _, err := unix.Write(fd, buf[:n]); err != nil {
			s.writeErrs.Add(1)
		}
	}
}

// tunName asks the kernel which tun the descriptor is attached to
// (TUNGETIFF), so that a wrong descriptor is an error, not a silent hang.
func tunName(fd int) (string, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return "", fmt.Errorf("not an attached tun queue (TUNGETIFF): %w", err)
	}
	return ifr.Name(), nil
}
