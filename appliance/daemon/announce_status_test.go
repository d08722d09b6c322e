package daemon

import (
	"fmt"
	"testing"
	"time"
)

// TestStuckAnnouncerStatusStallsNothing: while a stats request waits on
// an announcer's Status (a BGP speaker's, whose ListPeer waits on
// GoBGP's loop), the run loop keeps polling health and answers a
// reload; the stats request gets its answer once Status returns. Stats
// once held d.mu across Status, and checkHealth, which takes d.mu,
// stalled behind it: no health poll, no reload, no withdrawal (review
// H4).
func TestStuckAnnouncerStatusStallsNothing(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	dp := h.dp.Load()
	h.ann.statusHold.Lock()
	held := true
	defer func() {
		if held {
			h.ann.statusHold.Unlock()
		}
	}()
	statsDone := make(chan error, 1)
	go func() { _, err := QueryStats(h.sock); statsDone <- err }()
	time.Sleep(100 * time.Millisecond) // the request reaches Status
	select {
	case err := <-statsDone:
		t.Fatalf("stats answered while Status is held (%v): the fake does not hold it", err)
	default:
	}
	polled := dp.checks.Load()
	time.Sleep(time.Second)
	// testHealthInterval is 10 ms: about 100 polls; a stall leaves 0-1.
	n := dp.checks.Load() - polled
	t.Logf("%d health polls in 1 s while a stats request waited on Status", n)
	if n < 10 {
		t.Errorf("%d health polls in 1 s while a stats request waited on an announcer's Status", n)
	}
	reloadDone := make(chan error, 1)
	go func() { _, err := RequestReload(h.sock); reloadDone <- err }()
	select {
	case err := <-reloadDone:
		if err != nil {
			t.Errorf("reload while Status is held: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("no answer to a reload in 2 s while a stats request waited on an announcer's Status")
	}
	h.ann.statusHold.Unlock()
	held = false
	select {
	case err := <-statsDone:
		if err != nil {
			t.Errorf("stats once Status returned: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no answer to the stats request once Status returned")
	}
}
