package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/xlat"
)

// ServeFD runs the translator over an already open file descriptor that
// carries one bare IP packet per read and write: a tun opened without
// IFF_VNET_HDR and inherited from a supervisor, or a datagram/seqpacket
// socket. One goroutine reads a packet into a frame with headroom, the
// Handler translates it there and the result is written with one writev:
// no copy besides the read and the write, no allocation per packet, and
// the engine's counters published whenever the descriptor has nothing to
// read (the endpoint of fd_tap.go, without Ethernet). gVisor's fdbased
// endpoint did this before at a higher cost per packet (a PacketBuffer
// and view per read, a copy into the Handler's frame, two allocations per
// write), which on one queue shared by both directions and a flood is
// what decides how many packets (pings among them) the kernel drops at
// the fd's full queue.
// ServeFD makes fd non-blocking but does not own it: close it after Wait
// returns. It returns at once; the endpoint stops when ctx is cancelled.
func ServeFD(ctx context.Context, eng *xlat.Engine, fd int, mtu int, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeFD needs an engine")
	}
	return serveFD(ctx, func() Translator { return eng.NewWorker() }, fd, mtu, log)
}

func serveFD(ctx context.Context, newTranslator func() Translator, fd int, mtu int, log *slog.Logger) (*Datapath, error) {
	if mtu <= 0 || mtu > maxPacket {
		return nil, fmt.Errorf("stack: fd %d: MTU %d out of range", fd, mtu)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
	}
	d := newDatapath(log)
	serveFDEndpoint(ctx, d, newRawFDEndpoint(fd, mtu, d.log), newTranslator)
	return d, nil
}
