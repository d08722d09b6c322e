package stack

import (
	"context"
	"errors"
	"log/slog"

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

// ServeLink runs the translator over a tun.Endpoint: it attaches a Handler
// with one worker of eng per queue and returns at once. Each queue's
// dispatch goroutine reads a packet, translates it and writes the result
// itself. The dispatch loops stop (Attach(nil)) when ctx is cancelled or
// when one of them fails, whose error Wait then returns; the endpoint
// itself stays the caller's.
func ServeLink(ctx context.Context, eng *xlat.Engine, ep *tun.Endpoint, log *slog.Logger) (*Datapath, error) {
	if eng == nil || ep == nil {
		return nil, errors.New("stack: ServeLink needs an engine and an endpoint")
	}
	return serveLink(ctx, func() Translator { return eng.NewWorker() }, ep, log)
}

func serveLink(ctx context.Context, newTranslator func() Translator, ep *tun.Endpoint, log *slog.Logger) (*Datapath, error) {
	if ep.Queues() == 0 {
		return nil, errors.New("stack: endpoint without queues")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := NewHandler(ep, ep.Queues(), newTranslator, log)
	d := &Datapath{
		log:        log,
		stallAfter: StallTimeout,
		handler:    h,
		exited:     ep.Exited,
		linkStats: func(s *LinkStats) {
			es := ep.Stats()
			s.ReadErrors += es.ReadErrors
			s.ShortVnetHdr += es.ShortVnetHdr
			s.InvalidVnetHdr += es.InvalidVnetHdr
			s.NotIP += es.NotIP
		},
		done: make(chan struct{}),
	}
	ep.Attach(h)
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
		}
		ep.Attach(nil) // stops the other dispatch loops and waits for them
		if err := ep.Err(); err != nil {
			log.Error("data path stopped", "err", err)
			d.fail(err)
		}
	}()
	return d, nil
}
