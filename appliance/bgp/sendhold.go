package bgp

import (
	"context"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// DefaultSendHoldTime is RFC 9687 section 3.4's suggested SendHoldTime for
// a session with hold time hold: the greater of 8 minutes and twice the
// hold time.
func DefaultSendHoldTime(hold time.Duration) time.Duration {
	return max(8*time.Minute, 2*hold)
}

// sendHoldTime is c's SendHoldTime with the defaults applied.
func (c *Config) sendHoldTime() time.Duration {
	if c.SendHoldTime > 0 {
		return c.SendHoldTime
	}
	return DefaultSendHoldTime(c.holdTime())
}

// holdTime is c's hold time with GoBGP's default applied.
func (c *Config) holdTime() time.Duration {
	if c.HoldTime > 0 {
		return c.HoldTime
	}
	return defaultHoldTime
}

// defaultHoldTime is the hold time GoBGP uses when none is configured.
const defaultHoldTime = 90 * time.Second

// sendHoldIdle is how long a session ended by its send hold timer waits in
// Idle before it connects again (GoBGP's IdleHoldTimeAfterReset, whole
// seconds). RFC 9687 section 3.3 zeroes the ConnectRetryTimer: the session
// is to come back as soon as the neighbor reads again. These are GoBGP's
// 5 s after any other session end, so a neighbor that keeps stalling costs
// one connection per SendHoldTime.
const sendHoldIdle = 5 * time.Second

// sendHoldCommunication is the shutdown communication (RFC 9003) of the
// Cease NOTIFICATION that ends a session whose send hold timer expired:
// GoBGP can send no other error code than Cease, so the reason travels as
// text.
const sendHoldCommunication = "send hold timer expired (RFC 9687)"

// peerSend is what the send hold timer needs to know about one session at
// one moment.
type peerSend struct {
	addr        string
	established bool
	// holdZero: the negotiated hold time is 0, which stops the send hold
	// timer (RFC 9687 section 3.3).
	holdZero bool
	up       time.Time // when the session reached Established: which session it is
	sent     uint64    // messages GoBGP completed writing to the socket
}

// sendProgress is the last progress seen on one session.
type sendProgress struct {
	up   time.Time
	sent uint64
	at   time.Time // when sent was first seen at its value
}

// sendHoldTimer is RFC 9687's SendHoldTimer for every session, driven by
// observations of GoBGP's per-session count of sent messages.
//
// GoBGP counts a message as sent after its write to the socket returned
// (fsm.go sendMessageloop: bgpMessageStateUpdate follows conn.Write), so
// the count stands still exactly while the session's sender is waiting for
// the neighbor's TCP window and moves whenever any KEEPALIVE, UPDATE or
// NOTIFICATION got through, which is what restarts the timer (RFC 9687
// section 3.3). An Established session with a non-zero hold time sends a
// KEEPALIVE at least every keepalive interval, which is shorter than the
// hold time and so than any SendHoldTime (section 3.4: SendHoldTime is
// greater than HoldTime), so a count that stands still that long means
// the sender could not write, not that it had nothing to say.
//
// The timer expires no earlier than SendHoldTime after the last message
// got through: a change is timed from the observation that saw it, which
// comes after the write.
type sendHoldTimer struct {
	hold     time.Duration
	sessions map[string]sendProgress
}

func newSendHoldTimer(hold time.Duration) *sendHoldTimer {
	return &sendHoldTimer{hold: hold, sessions: map[string]sendProgress{}}
}

// observe takes the sessions as seen at now and returns the neighbors
// whose send hold timer expired. A session is forgotten when it leaves
// Established, when its hold time is 0 and when its timer expires, so
// each stall expires once.
func (h *sendHoldTimer) observe(now time.Time, peers []peerSend) (expired []string) {
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		seen[p.addr] = true
		if !p.established || p.holdZero {
			delete(h.sessions, p.addr)
			continue
		}
		last, ok := h.sessions[p.addr]
		if !ok || !last.up.Equal(p.up) || last.sent != p.sent {
			h.sessions[p.addr] = sendProgress{up: p.up, sent: p.sent, at: now}
			continue
		}
		if now.Sub(last.at) >= h.hold {
			expired = append(expired, p.addr)
			delete(h.sessions, p.addr)
		}
	}
	for addr := range h.sessions {
		if !seen[addr] {
			delete(h.sessions, addr)
		}
	}
	return expired
}

// sendHoldPoll is how often the send hold timer looks at the sessions for
// a SendHoldTime of hold: a timer expires at most this late.
func sendHoldPoll(hold time.Duration) time.Duration {
	return min(max(hold/16, 100*time.Millisecond), 10*time.Second)
}

// runSendHold drives the send hold timer until ctx ends, then closes done.
func (s *Speaker) runSendHold(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	hold := s.cfg.sendHoldTime()
	timer := newSendHoldTimer(hold)
	tick := time.NewTicker(sendHoldPoll(hold))
	defer tick.Stop()
	var peers []peerSend
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		peers = peers[:0]
		err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			st := p.GetState()
			peers = append(peers, peerSend{
				addr:        p.GetConf().GetNeighborAddress(),
				established: st.GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED,
				holdZero:    p.GetTimers().GetState().GetNegotiatedHoldTime() == 0,
				up:          p.GetTimers().GetState().GetUptime().AsTime(),
				sent:        st.GetMessages().GetSent().GetTotal(),
			})
		})
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("bgp send hold timer: cannot list the sessions", "err", err)
			}
			continue
		}
		for _, addr := range timer.observe(time.Now(), peers) {
			s.sendHoldExpired(ctx, addr, hold)
		}
	}
}

// sendHoldExpired ends the session with addr, whose sender has not got a
// message through for hold (RFC 9687 section 4), counts it and logs it as
// an error (RFC 9687 sections 3.3 and 5). RFC 9687
// asks for a NOTIFICATION with error code 8 (Send Hold Timer Expired);
// GoBGP can only reset a session with Cease, subcode 4 (Administrative
// Reset, RFC 4486), which carries sendHoldCommunication. GoBGP gives that
// NOTIFICATION one second to be written; with the neighbor's window still
// closed it is not, and the connection is closed all the same.
func (s *Speaker) sendHoldExpired(ctx context.Context, addr string, hold time.Duration) {
	s.limitMu.Lock()
	s.sendHoldHits[addr]++
	s.limitMu.Unlock()
	s.log.Error("bgp session ended: the neighbor has accepted no message for send_hold_time (RFC 9687 Send Hold Timer Expired)",
		"neighbor", addr, "send_hold_time", hold)
	if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr, Communication: sendHoldCommunication}); err != nil && ctx.Err() == nil {
		s.log.Error("bgp session cannot be reset after its send hold timer expired", "neighbor", addr, "err", err)
	}
}
