package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"

	"github.com/map646/map646/stack/xlat"
)

// ServeFD runs the translator over an already open file descriptor that
// carries one bare IP packet per read and write: a tun opened without
// IFF_VNET_HDR and inherited from a supervisor, or a datagram/seqpacket
// socket. It uses gVisor's fdbased endpoint (one readv and one writev per
// packet, no offloads: the slow, generic path) with a Handler attached,
// which copies each packet into its own buffer to translate it.
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
	d := newDatapath(log)
	var readErrors atomic.Uint64
	d.linkStats = func(s *LinkStats) { s.ReadErrors += readErrors.Load() }
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                  []int{fd},
		MTU:                  uint32(mtu),
		ProcessorsPerChannel: 1, // one delivering goroutine: one Handler queue
		ClosedFunc: func(e tcpip.Error) {
			if e != nil && !d.stopped.Load() {
				readErrors.Add(1)
				d.log.Error("fd endpoint stopped", "fd", fd, "err", e)
				d.fail(fmt.Errorf("fd %d: reading stopped (peer closed or read failed): %s", fd, e))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
	}
	serveEndpoint(ctx, d, newTranslator, ep)
	return d, nil
}
