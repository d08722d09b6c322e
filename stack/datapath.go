package stack

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// StallTimeout is how long a queue may spend on one packet before Healthy
// reports the data path as stalled (as seen by calls of Check at least
// that far apart). A queue waiting for packets is never
// stalled.
const StallTimeout = 2 * time.Second

// progress is what a Handler queue publishes for the health check: no
// clock is read per packet; the check notices a queue that stays busy on
// the same delivery (its Reads count) for longer than the stall timeout.
type progress struct {
	busy atomic.Bool // while a packet is being handled
}

// stallWatch is what Check remembers of one queue between calls.
type stallWatch struct {
	reads uint64 // the delivery the queue was busy with
	since int64  // monoNow when Check first saw it busy with it
}

// epoch anchors the monotonic clock that progress timestamps use.
var epoch = time.Now()

func monoNow() int64 { return int64(time.Since(epoch)) }

// Datapath is a Handler running over a link endpoint's dispatch loops
// (ServeLink, ServeTun, ServeFDQueues, ServeTap, ServeNIC). It stops when the context given to them
// is cancelled, when the link is closed, or when a dispatch loop fails.
type Datapath struct {
	log        *slog.Logger
	stallAfter time.Duration // StallTimeout; shorter in tests
	handler    *Handler
	// exited reports whether queue i's dispatch loop has ended.
	exited func(i int) bool
	// linkStats adds the endpoint's own counters.
	linkStats func(*LinkStats)
	done      chan struct{} // closed when every dispatch loop has ended

	watchMu sync.Mutex
	watch   []stallWatch // per queue, for Check
	// queues counts the queues of the inherited multi-queue tuns served
	// (nil: none), for Check (watchQueues).
	queues *queueCheck
	// queuesClosed is closed once queues' descriptors are: Wait returns
	// only then, so a caller sees no descriptor of the data path left.
	queuesClosed chan struct{}

	errOnce sync.Once
	err     error
	stopped atomic.Bool // the context was cancelled: stopping is not a fault
}

func (d *Datapath) fail(err error) {
	if err != nil {
		d.errOnce.Do(func() { d.err = err })
	}
}

// Wait blocks until every dispatch loop has exited and returns the error
// that stopped one, or nil if they stopped because the context was
// cancelled or the link was closed.
func (d *Datapath) Wait() error {
	<-d.done
	if d.queuesClosed != nil {
		<-d.queuesClosed // the queue count's descriptors are closed too
	}
	return d.err
}

// Check returns nil if every queue is served and none has spent more than
// StallTimeout on one packet; otherwise an error naming the first fault.
func (d *Datapath) Check() error {
	if d.stopped.Load() {
		return errors.New("datapath stopped")
	}
	now := monoNow()
	d.watchMu.Lock()
	defer d.watchMu.Unlock()
	if d.watch == nil {
		d.watch = make([]stallWatch, len(d.handler.queues))
	}
	var stalled error
	for i, q := range d.handler.queues {
		if d.exited(i) {
			return fmt.Errorf("queue %d: dispatch loop exited", i)
		}
		w := &d.watch[i]
		reads := q.stats.Reads.Load()
		if !q.progress.busy.Load() || reads != w.reads {
			// Idle, or moved on since the last check.
			*w = stallWatch{reads: reads, since: now}
			continue
		}
		if stuck := time.Duration(now - w.since); stuck > d.stallAfter && stalled == nil {
			stalled = fmt.Errorf("queue %d: stalled on one packet for over %v", i, stuck.Round(time.Millisecond))
		}
	}
	if stalled != nil {
		return stalled
	}
	return d.queues.check()
}

// watchQueues makes Check count the queues of the tuns qc watches, until
// the data path has stopped: a queue attached to one of them after it
// started (by a process that kept a descriptor of it) takes flows that
// nobody here reads.
func (d *Datapath) watchQueues(qc *queueCheck) {
	if qc == nil || len(qc.tuns) == 0 {
		return
	}
	d.queues = qc
	d.queuesClosed = make(chan struct{})
	go func() {
		<-d.done
		qc.close()
		close(d.queuesClosed)
	}()
}

// Healthy reports whether the data path is forwarding: every queue is
// served and none is stuck (Check returns nil). The daemon withdraws its
// routes (BGP) when it is not.
func (d *Datapath) Healthy() bool { return d.Check() == nil }

// LinkStats sums the link-level counters of the endpoint and the Handler.
func (d *Datapath) LinkStats() LinkStats {
	s := d.handler.Stats()
	if d.linkStats != nil {
		d.linkStats(&s)
	}
	return s
}
