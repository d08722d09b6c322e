package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// Translator is the engine as the data path sees it; *xlat.Worker
// implements it. One Translator is used by one goroutine only.
type Translator interface {
	Process(buf []byte, start, end int, off *xlat.Offload, sink xlat.Sink) xlat.Result
}

// LinkStats are the link-level counters of a Datapath, summed over its
// queues. What the engine did with each packet (per direction, protocol and
// drop reason) is in the engine's own counters (xlat.Engine.Totals).
type LinkStats struct {
	Reads          uint64 // packets (or super-packets) read from the link
	Writes         uint64 // packets written to the link, translated or engine-made
	ReadErrors     uint64 // failed reads
	WriteErrors    uint64 // failed or short writes; the packet is lost
	ShortVnetHdr   uint64 // reads shorter than a virtio_net_hdr
	InvalidVnetHdr uint64 // virtio_net_hdr the kernel would refuse (tun.ValidateOffload)
	NoNextHop      uint64 // NIC mode: no route or link address yet for the destination; also in WriteErrors
}

// linkCounters are one queue's LinkStats; the queue goroutine is the only
// writer.
type linkCounters struct {
	reads, writes, readErrors, writeErrors, shortVnetHdr, invalidVnetHdr atomic.Uint64
}

func (c *linkCounters) addTo(s *LinkStats) {
	s.Reads += c.reads.Load()
	s.Writes += c.writes.Load()
	s.ReadErrors += c.readErrors.Load()
	s.WriteErrors += c.writeErrors.Load()
	s.ShortVnetHdr += c.shortVnetHdr.Load()
	s.InvalidVnetHdr += c.invalidVnetHdr.Load()
}

// StallTimeout is how long a worker may spend on one packet before Healthy
// reports the data path as stalled. A worker waiting for packets is never
// stalled.
const StallTimeout = 2 * time.Second

// progress is what a worker publishes for the health check.
type progress struct {
	busy  atomic.Bool  // between returning from a read and starting the next
	since atomic.Int64 // monotonic nanoseconds when it last returned from a read
	done  atomic.Bool  // the worker has exited
}

// epoch anchors the monotonic clock that progress timestamps use.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// Datapath is the translating handler running over an endpoint: one
// goroutine per tun queue (Serve) or gVisor's fdbased dispatch loop
// (ServeFD). It stops when the context given to Serve is cancelled.
type Datapath struct {
	log        *slog.Logger
	stallAfter time.Duration // StallTimeout; shorter in tests
	counters   []*linkCounters
	progress   []*progress
	wg         sync.WaitGroup

	errOnce sync.Once
	err     error
	stopped atomic.Bool // the context was cancelled: stopping is not a fault

	// wait replaces wg.Wait for ServeFD and ServeLink, whose goroutines
	// belong to the endpoint.
	wait func()
	// extraStats adds an endpoint's own counters (ServeLink).
	extraStats func(*LinkStats)
}

func (d *Datapath) fail(err error) {
	d.errOnce.Do(func() { d.err = err })
}

// Wait blocks until every worker has exited and returns the first error that
// stopped one, or nil if they stopped because the context was cancelled or
// the device was closed.
func (d *Datapath) Wait() error {
	if d.wait != nil {
		d.wait()
	} else {
		d.wg.Wait()
	}
	return d.err
}

// Check returns nil if every worker is alive and none has spent more than
// StallTimeout on one packet; otherwise an error naming the first fault.
func (d *Datapath) Check() error {
	if d.stopped.Load() {
		return errors.New("datapath stopped")
	}
	now := monoNow()
	for i, p := range d.progress {
		if p.done.Load() {
			return fmt.Errorf("queue %d: worker exited", i)
		}
		if p.busy.Load() {
			if stuck := time.Duration(now - p.since.Load()); stuck > d.stallAfter {
				return fmt.Errorf("queue %d: stalled on one packet for %v", i, stuck.Round(time.Millisecond))
			}
		}
	}
	return nil
}

// Healthy reports whether the data path is forwarding: every worker is
// alive and none is stuck (Check returns nil). The daemon withdraws its
// routes (BGP) when it is not.
func (d *Datapath) Healthy() bool { return d.Check() == nil }

// LinkStats sums the link-level counters of all queues.
func (d *Datapath) LinkStats() LinkStats {
	var s LinkStats
	for _, c := range d.counters {
		c.addTo(&s)
	}
	if d.extraStats != nil {
		d.extraStats(&s)
	}
	return s
}

// Serve starts one goroutine per queue of dev, each translating with its
// own worker of eng, and returns at once. The workers stop when ctx is
// cancelled (dev stays open: closing it is the caller's) or when dev is
// closed.
func Serve(ctx context.Context, eng *xlat.Engine, dev *tun.Device, log *slog.Logger) (*Datapath, error) {
	if eng == nil || dev == nil {
		return nil, errors.New("stack: Serve needs an engine and a device")
	}
	qs := dev.Queues()
	conns := make([]packetConn, len(qs))
	for i, q := range qs {
		conns[i] = q
	}
	return serveConns(ctx, conns, func() Translator { return eng.NewWorker() }, log)
}

// packetConn is one queue of a link: one packet per Read and per Write,
// each prefixed by a virtio_net_hdr. *tun.Queue implements it; tests use
// socketpairs.
type packetConn interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

func serveConns(ctx context.Context, conns []packetConn, newTranslator func() Translator, log *slog.Logger) (*Datapath, error) {
	if len(conns) == 0 {
		return nil, errors.New("stack: device without queues")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Datapath{log: log, stallAfter: StallTimeout}
	workers := make([]*queueWorker, len(conns))
	for i, c := range conns {
		// A previous Datapath's stop left a deadline in the past.
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			return nil, fmt.Errorf("stack: queue %d: %w", i, err)
		}
		w := newQueueWorker(i, c, newTranslator(), log)
		workers[i] = w
		d.counters = append(d.counters, &w.stats)
		d.progress = append(d.progress, &w.progress)
	}
	stopAfter := context.AfterFunc(ctx, func() {
		d.stopped.Store(true)
		for _, w := range workers {
			w.stop()
		}
	})
	for _, w := range workers {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer w.progress.done.Store(true)
			if err := w.run(); err != nil {
				d.fail(err)
			}
		}()
	}
	go func() {
		d.wg.Wait()
		stopAfter()
	}()
	return d, nil
}
