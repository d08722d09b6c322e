package bgp

import (
	"context"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// statusWait bounds how long Status waits for GoBGP to list the sessions.
// A variable so that tests need not wait that long.
var statusWait = 2 * time.Second

// peerQuery lists the sessions for Status with at most one GoBGP ListPeer
// call in flight. GoBGP (v4.9.0, mgmtOperation) ignores ListPeer's
// context and waits until its server loop takes the call, so a loop that
// is stuck (a neighbour that never reads, a large RIB walk) would hold
// every Status, and whatever waits on it (`map646 stats`, a scrape),
// for as long. A caller waits for the call in flight until its context
// ends and then gets the sessions the last call that returned listed,
// marked stale; later callers join the call in flight instead of
// starting one each, so a stuck GoBGP costs one goroutine, not one per
// scrape. The call ends when GoBGP answers or stops (Close).
//
// The alternative, sessions kept from the WatchEvent callback the
// speaker already has, needs no call into GoBGP, but the peer events do
// not carry the per-family advertised and received counts that
// map646_bgp_prefixes_advertised and _received report.
type peerQuery struct {
	// list calls fn for each session (GoBGP's ListPeer); set once at
	// construction.
	list func(ctx context.Context, fn func(*api.Peer)) error

	mu       sync.Mutex
	inFlight chan struct{}    // closed when the call in flight returns; nil while none is
	last     []NeighborStatus // what the last call that returned listed
}

// neighbors returns the sessions as a ListPeer call lists them, waiting
// for it until ctx ends; then it returns the last list, and stale.
// The slice is the caller's.
func (q *peerQuery) neighbors(ctx context.Context) (ns []NeighborStatus, stale bool) {
	q.mu.Lock()
	done := q.inFlight
	if done == nil {
		done = make(chan struct{})
		q.inFlight = done
		go q.run(done)
	}
	q.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		stale = true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.last), stale
}

// run is one ListPeer call; it keeps what it listed and closes done.
func (q *peerQuery) run(done chan struct{}) {
	var ns []NeighborStatus
	// No deadline: GoBGP would not honour it, and the call ends when
	// its server answers or stops.
	_ = q.list(context.Background(), func(p *api.Peer) { ns = append(ns, neighborStatus(p)) })
	q.mu.Lock()
	q.last = ns
	q.inFlight = nil
	q.mu.Unlock()
	close(done)
}

// neighborStatus is what ListPeer says of one session.
func neighborStatus(p *api.Peer) NeighborStatus {
	n := NeighborStatus{Address: p.GetConf().GetNeighborAddress(), RemoteAS: p.GetConf().GetPeerAsn()}
	n.State = sessionState(p.GetState().GetSessionState())
	n.Established = p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED
	n.Flaps = p.GetState().GetFlops()
	if t := p.GetTimers().GetState(); t != nil {
		if n.Established && t.GetUptime() != nil {
			n.Since = t.GetUptime().AsTime()
		} else if !n.Established && t.GetDowntime() != nil && t.GetDowntime().GetSeconds() > 0 {
			n.Since = t.GetDowntime().AsTime()
		}
	}
	for _, a := range p.GetAfiSafis() {
		n.Advertised += a.GetState().GetAdvertised()
		n.Received += a.GetState().GetReceived()
	}
	return n
}
