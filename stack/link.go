package stack

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	gvstack "gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// ServeTun runs the translator over dev: ServeLink over tun.NewEndpoint(dev).
// dev stays the caller's; close it after Wait returns (closing it earlier
// also stops the data path).
func ServeTun(ctx context.Context, eng *xlat.Engine, dev *tun.Device, log *slog.Logger) (*Datapath, error) {
	if eng == nil || dev == nil {
		return nil, errors.New("stack: ServeTun needs an engine and a device")
	}
	return ServeLink(ctx, eng, tun.NewEndpoint(dev), log)
}

// ServeLink runs the translator over a gVisor link endpoint: it attaches a
// Handler and returns at once; the endpoint itself stays the caller's.
//
// Over a tun.Endpoint the Handler has one worker of eng per queue, and
// each queue's dispatch goroutine reads a packet, translates it in its
// frame and writes the result itself. The dispatch loops stop
// (Attach(nil)) when ctx is cancelled or when one of them fails, whose
// error Wait then returns.
//
// Any other endpoint gets a Handler with one worker (queue 0): it must
// deliver from one goroutine at a time, or stamp PacketBuffer.Hash with a
// queue index per delivering goroutine and be served by a Handler made for
// that many queues (NewHandler). It stops when ctx is cancelled.
func ServeLink(ctx context.Context, eng *xlat.Engine, ep gvstack.LinkEndpoint, log *slog.Logger) (*Datapath, error) {
	if eng == nil || ep == nil {
		return nil, errors.New("stack: ServeLink needs an engine and an endpoint")
	}
	newTranslator := func() Translator { return eng.NewWorker() }
	if te, ok := ep.(*tun.Endpoint); ok {
		return serveLink(ctx, newTranslator, te, log)
	}
	d := newDatapath(log)
	serveEndpoint(ctx, d, newTranslator, ep)
	return d, nil
}

func newDatapath(log *slog.Logger) *Datapath {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Datapath{log: log, stallAfter: StallTimeout, done: make(chan struct{})}
}

// serveEndpoint attaches a one-queue Handler to ep, a link endpoint with
// one delivering goroutine, for d.
func serveEndpoint(ctx context.Context, d *Datapath, newTranslator func() Translator, ep gvstack.LinkEndpoint) {
	var exited atomic.Bool
	d.exited = func(int) bool { return exited.Load() }
	d.handler = NewHandler(ep, 1, newTranslator, d.log)
	ep.Attach(d.handler)
	go func() {
		ep.Wait()
		exited.Store(true)
		close(d.done)
	}()
	context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		ep.Attach(nil) // stops the dispatch loop and waits for it
	})
}

func serveLink(ctx context.Context, newTranslator func() Translator, ep *tun.Endpoint, log *slog.Logger) (*Datapath, error) {
	return serveLinkHooks(ctx, newTranslator, ep, log, linkHooks{})
}

// linkHooks are what a data path over a tun.Endpoint adds to serveLink's:
// NIC mode's, over its sockets.
type linkHooks struct {
	// dispatcher, if set, is what the endpoint delivers to in front of
	// the Handler (it must pass its frames and idle notices on).
	dispatcher func(*Handler) gvstack.NetworkDispatcher
	stats      func(*LinkStats) // adds counters of its own
	fail       <-chan error     // an error on it stops the data path with it
	stopped    func()           // called once every dispatch loop has ended
}

func serveLinkHooks(ctx context.Context, newTranslator func() Translator, ep *tun.Endpoint, log *slog.Logger, hooks linkHooks) (*Datapath, error) {
	if ep.Queues() == 0 {
		return nil, errors.New("stack: endpoint without queues")
	}
	d := newDatapath(log)
	h := NewHandler(ep, ep.Queues(), newTranslator, d.log)
	d.handler = h
	d.exited = ep.Exited
	d.linkStats = func(s *LinkStats) {
		es := ep.Stats()
		s.ReadErrors += es.ReadErrors
		s.ShortVnetHdr += es.ShortVnetHdr
		s.InvalidVnetHdr += es.InvalidVnetHdr
		s.NotIP += es.NotIP
		// A write a queue's io_uring makes after WritePackets returned
		// (the Handler counted it in Writes) can fail there: the
		// endpoint counts those, the Handler the ones that failed at once.
		s.WriteErrors += es.WriteErrors
		if hooks.stats != nil {
			hooks.stats(s)
		}
	}
	var disp gvstack.NetworkDispatcher = h
	if hooks.dispatcher != nil {
		disp = hooks.dispatcher(h)
	}
	ep.Attach(disp)
	failed := ep.Failed()
	ended := make(chan struct{})
	go func() {
		ep.Wait()
		close(ended)
	}()
	go func() {
		defer close(d.done)
		select {
		case <-ctx.Done():
			d.stopped.Store(true)
		case <-failed:
		case <-ended:
		case err := <-hooks.fail:
			d.log.Error("data path stopped", "err", err)
			d.fail(err)
		}
		ep.Attach(nil) // stops the other dispatch loops and waits for them
		if err := ep.Err(); err != nil {
			d.log.Error("data path stopped", "err", err)
			d.fail(err)
		}
		if hooks.stopped != nil {
			hooks.stopped()
		}
	}()
	return d, nil
}
