package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/xlat"
)

// ServeFDQueues runs the translator over descriptors that each carry one
// bare IP packet per read and write: typically the queues of one tun
// opened with IFF_MULTI_QUEUE (the kernel spreads flows over them, so a
// flood on one does not fill the queue of another flow, pings included),
// or one descriptor. Each has one goroutine that reads a packet into a
// frame with headroom; the Handler translates it there, on that
// descriptor's own queue (translator, counters), and the result is
// written back to the same descriptor with one writev: no copy besides
// the read and the write, no allocation per packet, and the engine's
// counters published whenever a descriptor has nothing to read (the
// endpoint of fd_tap.go, without Ethernet). gVisor's fdbased endpoint did
// this before at a higher cost per packet (a PacketBuffer and view per
// read, a copy into the Handler's frame, two allocations per write).
// ServeFDQueues makes the descriptors non-blocking but does not own them:
// close them after Wait returns. It returns at once; the data path stops
// when ctx is cancelled or any descriptor fails.
func ServeFDQueues(ctx context.Context, eng *xlat.Engine, fds []int, mtu int, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeFDQueues needs an engine")
	}
	return serveFDs(ctx, func() Translator { return eng.NewWorker() }, fds, mtu, log)
}

func serveFDs(ctx context.Context, newTranslator func() Translator, fds []int, mtu int, log *slog.Logger) (*Datapath, error) {
	if len(fds) == 0 {
		return nil, errors.New("stack: no descriptor to serve")
	}
	if mtu <= 0 || mtu > maxPacket {
		return nil, fmt.Errorf("stack: fd %d: MTU %d out of range", fds[0], mtu)
	}
	d := newDatapath(log)
	var eps fdQueues
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
		}
		eps = append(eps, newRawFDEndpoint(fd, mtu, d.log))
	}
	serveFDEndpoints(ctx, d, eps, newTranslator)
	return d, nil
}
