package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"

	"github.com/map646/map646/stack/xlat"
)

// ServeFD runs the translator over an already open file descriptor that
// carries one bare IP packet per read and write: a tun opened without
// IFF_VNET_HDR and inherited from a supervisor, or a datagram/seqpacket
// socket. It uses gVisor's fdbased endpoint (one readv and one writev per
// packet, no offloads: the slow, generic path) with a Handler attached.
// ServeFD makes fd non-blocking but does not own it: close it after Wait
// returns. It returns at once; the endpoint stops when ctx is cancelled.
func ServeFD(ctx context.Context, eng *xlat.Engine, fd int, mtu int, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeFD needs an engine")
	}
	return serveFD(ctx, eng.NewWorker(), fd, mtu, log)
}

func serveFD(ctx context.Context, tr Translator, fd int, mtu int, log *slog.Logger) (*Datapath, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if mtu <= 0 || mtu > maxPacket {
		return nil, fmt.Errorf("stack: fd %d: MTU %d out of range", fd, mtu)
	}
	d := &Datapath{log: log, stallAfter: StallTimeout}
	var h *Handler
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                  []int{fd},
		MTU:                  uint32(mtu),
		ProcessorsPerChannel: 1, // deliver on the reading goroutine: one Translator
		ClosedFunc: func(e tcpip.Error) {
			h.progress.done.Store(true)
			if e != nil && !d.stopped.Load() {
				h.stats.readErrors.Add(1)
				log.Error("fd endpoint stopped", "fd", fd, "err", e)
				d.fail(fmt.Errorf("fd %d: reading stopped (peer closed or read failed): %s", fd, e))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
	}
	h = NewHandler(tr, ep)
	d.counters = []*linkCounters{&h.stats}
	d.progress = []*progress{&h.progress}
	d.wait = ep.Wait
	ep.Attach(h)
	context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		ep.Attach(nil) // stops the dispatch loop and waits for it
	})
	return d, nil
}
