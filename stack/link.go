package stack

import (
	"context"
	"errors"
	"log/slog"

	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// ServeLink runs the translator over a gVisor link endpoint: it attaches a
// Handler, translating with one worker of eng, and returns at once. The
// endpoint's dispatch loops stop (Attach(nil)) when ctx is cancelled; the
// endpoint itself stays the caller's.
//
// With tun.NewEndpoint(dev) this is the general path over the same queues
// that Serve reads directly: every packet becomes a gVisor PacketBuffer
// and passes through the Handler's lock, which is what the package comment
// measures against Serve's zero-allocation path. The LinkStats of a
// tun.Endpoint include its short, invalid and non-IP reads.
func ServeLink(ctx context.Context, eng *xlat.Engine, ep gvstack.LinkEndpoint, log *slog.Logger) (*Datapath, error) {
	if eng == nil || ep == nil {
		return nil, errors.New("stack: ServeLink needs an engine and an endpoint")
	}
	return serveLink(ctx, eng.NewWorker(), ep, log), nil
}

func serveLink(ctx context.Context, tr Translator, ep gvstack.LinkEndpoint, log *slog.Logger) *Datapath {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Datapath{log: log, stallAfter: StallTimeout}
	h := NewHandler(tr, ep)
	d.counters = []*linkCounters{&h.stats}
	d.progress = []*progress{&h.progress}
	if te, ok := ep.(*tun.Endpoint); ok {
		d.extraStats = func(s *LinkStats) {
			es := te.Stats()
			s.ReadErrors += es.ReadErrors
			s.ShortVnetHdr += es.ShortVnetHdr
			s.InvalidVnetHdr += es.InvalidVnetHdr + es.NotIP
		}
	}
	ep.Attach(h)
	done := make(chan struct{})
	d.wait = func() { <-done }
	stopAfter := context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		ep.Attach(nil) // stops the dispatch loops and waits for them
	})
	go func() {
		ep.Wait()
		h.progress.done.Store(true)
		stopAfter()
		close(done)
	}()
	return d
}
