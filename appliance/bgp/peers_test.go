package bgp

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/map646/map646/appliance/metrics"
)

// stuckLister is a ListPeer whose server loop a test holds: each call
// waits for a value on release and lists one session with that address.
type stuckLister struct {
	calls   atomic.Int32
	release chan string
}

func (l *stuckLister) list(_ context.Context, fn func(*api.Peer)) error {
	l.calls.Add(1)
	fn(&api.Peer{Conf: &api.PeerConf{NeighborAddress: <-l.release, PeerAsn: peerAS}})
	return nil
}

// TestPeerQueryBoundedWhileGoBGPStuck: while GoBGP does not answer
// ListPeer (its mgmtOperation ignores the context), Status returns
// within its wait with the last list, marked stale, and callers share
// the one call in flight instead of piling up one goroutine each.
func TestPeerQueryBoundedWhileGoBGPStuck(t *testing.T) {
	l := &stuckLister{release: make(chan string)}
	q := peerQuery{list: l.list}
	bounded := func(step string) ([]NeighborStatus, bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		type answer struct {
			ns    []NeighborStatus
			stale bool
		}
		got := make(chan answer, 1)
		go func() { ns, stale := q.neighbors(ctx); got <- answer{ns, stale} }()
		select {
		case a := <-got:
			return a.ns, a.stale
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: neighbors still waiting 2 s after its 50 ms context ended", step)
			return nil, false
		}
	}
	for i := range 3 {
		if ns, stale := bounded("stuck before any answer"); !stale || len(ns) != 0 {
			t.Errorf("call %d while stuck before any answer: %v stale %v, want none, stale", i, ns, stale)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Errorf("%d ListPeer calls for 3 Status calls while one was in flight, want 1", n)
	}
	l.release <- "192.0.2.1" // GoBGP answers the call in flight
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
		q.mu.Lock()
		idle := q.inFlight == nil
		q.mu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the call GoBGP answered is still in flight after 2 s")
		}
	}
	// The next call finds none in flight and starts one, answered at once.
	go func() { l.release <- "192.0.2.2" }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	ns, stale := q.neighbors(ctx)
	cancel()
	if stale || len(ns) != 1 || ns[0].Address != "192.0.2.2" || ns[0].RemoteAS != peerAS {
		t.Errorf("after GoBGP answered: %+v stale %v, want 192.0.2.2 fresh", ns, stale)
	}
	// Stuck again: the last list, stale.
	ns, stale = bounded("stuck after an answer")
	if !stale || len(ns) != 1 || ns[0].Address != "192.0.2.2" {
		t.Errorf("stuck after an answer: %+v stale %v, want the last list (192.0.2.2), stale", ns, stale)
	}
	ns[0].Address = "changed by the caller"
	if ns, _ := bounded("stuck, again"); ns[0].Address != "192.0.2.2" {
		t.Errorf("a caller's change to its list reached the kept one: %q", ns[0].Address)
	}
	if n := l.calls.Load(); n != 3 {
		t.Errorf("%d ListPeer calls, want 3 (two answered, one in flight)", n)
	}
	l.release <- "192.0.2.3"
}

// TestStatusBoundedWhileGoBGPStuck: a speaker's Status returns within
// statusWait while its ListPeer is held, with NeighborsStale set and the
// speaker's own state (announced, healthy) as usual, and
// map646_bgp_neighbors_stale says so.
func TestStatusBoundedWhileGoBGPStuck(t *testing.T) {
	defer func(w time.Duration) { statusWait = w }(statusWait)
	statusWait = 50 * time.Millisecond
	s := newTestSpeaker(t, Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")})
	if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), nil, true); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.NeighborsStale {
		t.Fatalf("stale with GoBGP answering: %+v", st)
	}
	l := &stuckLister{release: make(chan string)}
	s.peers.list = l.list
	defer func() { l.release <- "192.0.2.1" }()
	got := make(chan Status, 1)
	go func() { got <- s.Status() }()
	var st Status
	select {
	case st = <-got:
	case <-time.After(2 * time.Second):
		t.Fatal("Status still waiting 2 s while GoBGP is stuck (statusWait 50 ms)")
	}
	if !st.NeighborsStale || !st.Healthy || len(st.Announced) != 1 {
		t.Errorf("Status while GoBGP is stuck: %+v, want stale, healthy, one prefix", st)
	}
	var stale float64 = -1
	st.Collect(func(name, _ string, _ metrics.Kind, v float64, _ ...string) {
		if name == "map646_bgp_neighbors_stale" {
			stale = v
		}
	})
	if stale != 1 {
		t.Errorf("map646_bgp_neighbors_stale %v while stale, want 1", stale)
	}
}

// TestStatusNotHeldByAStuckUpdate: Update and Close hold the speaker's
// lock across GoBGP's path calls, which wait for GoBGP's server loop as
// ListPeer does. Status reads what the last change published and never
// takes that lock, so a stuck Update (here: the lock held) does not hold
// `map646 stats` and scrapes too (review H10: Status took it).
func TestStatusNotHeldByAStuckUpdate(t *testing.T) {
	defer func(w time.Duration) { statusWait = w }(statusWait)
	statusWait = 50 * time.Millisecond
	s := newTestSpeaker(t, Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")})
	if st := s.Status(); st.LocalAS != speakerAS || st.RouterID != "192.0.2.2" || st.Healthy || len(st.Announced) != 0 {
		t.Fatalf("Status before the first Update: %+v", st)
	}
	if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), nil, true); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock() // an Update waiting inside GoBGP
	got := make(chan Status, 1)
	go func() { got <- s.Status() }()
	var st Status
	select {
	case st = <-got:
	case <-time.After(2 * time.Second):
		s.mu.Unlock()
		<-got
		t.Fatal("Status still waiting 2 s behind an Update that holds the speaker's lock")
	}
	s.mu.Unlock()
	if !st.Healthy || st.Updates != 1 || len(st.Announced) != 1 || st.Announced[0] != "198.51.100.0/24" {
		t.Errorf("Status behind a stuck Update: %+v, want healthy, 1 update, 198.51.100.0/24", st)
	}
}
