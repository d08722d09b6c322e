package bgp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSendHoldTimerObserve follows sessions through observations of their
// sent-message counts: the timer expires once SendHoldTime has passed
// since the count last moved, never earlier, and only for an Established
// session with a non-zero hold time.
func TestSendHoldTimerObserve(t *testing.T) {
	const hold = 10 * time.Second
	t0 := time.Unix(1000, 0)
	up1, up2 := time.Unix(900, 0), time.Unix(1010, 0)
	est := func(sent uint64, up time.Time) peerSend {
		return peerSend{addr: "192.0.2.1", established: true, up: up, sent: sent}
	}
	type step struct {
		at      time.Duration // after t0
		peers   []peerSend
		expired []string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"stalled: expires after SendHoldTime", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{9 * time.Second, []peerSend{est(5, up1)}, nil},
			{10 * time.Second, []peerSend{est(5, up1)}, []string{"192.0.2.1"}},
		}},
		{"each expiry once: the timer restarts after it", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{10 * time.Second, []peerSend{est(5, up1)}, []string{"192.0.2.1"}},
			{11 * time.Second, []peerSend{est(5, up1)}, nil},
			{20 * time.Second, []peerSend{est(5, up1)}, nil},
			{21 * time.Second, []peerSend{est(5, up1)}, []string{"192.0.2.1"}},
		}},
		{"progress restarts the timer", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{9 * time.Second, []peerSend{est(6, up1)}, nil},
			{18 * time.Second, []peerSend{est(7, up1)}, nil},
			{27 * time.Second, []peerSend{est(7, up1)}, nil},
			{28 * time.Second, []peerSend{est(7, up1)}, []string{"192.0.2.1"}},
		}},
		{"a count that went back (GoBGP resets it) is progress", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{9 * time.Second, []peerSend{est(2, up1)}, nil},
			{10 * time.Second, []peerSend{est(2, up1)}, nil},
		}},
		{"a new session restarts the timer even at the same count", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{9 * time.Second, []peerSend{est(5, up2)}, nil},
			{10 * time.Second, []peerSend{est(5, up2)}, nil},
			{19 * time.Second, []peerSend{est(5, up2)}, []string{"192.0.2.1"}},
		}},
		{"not Established: no timer", []step{
			{0, []peerSend{{addr: "192.0.2.1", sent: 5}}, nil},
			{20 * time.Second, []peerSend{{addr: "192.0.2.1", sent: 5}}, nil},
		}},
		{"leaving Established stops the timer", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{5 * time.Second, []peerSend{{addr: "192.0.2.1", sent: 5}}, nil},
			{12 * time.Second, []peerSend{est(5, up1)}, nil},
			{21 * time.Second, []peerSend{est(5, up1)}, nil},
		}},
		{"negotiated hold time 0 stops the timer (RFC 9687 section 3.3)", []step{
			{0, []peerSend{{addr: "192.0.2.1", established: true, holdZero: true, up: up1, sent: 5}}, nil},
			{20 * time.Second, []peerSend{{addr: "192.0.2.1", established: true, holdZero: true, up: up1, sent: 5}}, nil},
		}},
		{"a removed neighbor is forgotten", []step{
			{0, []peerSend{est(5, up1)}, nil},
			{5 * time.Second, nil, nil},
			{10 * time.Second, []peerSend{est(5, up1)}, nil},
			{19 * time.Second, []peerSend{est(5, up1)}, nil},
		}},
		{"sessions are timed apart", []step{
			{0, []peerSend{est(5, up1), {addr: "192.0.2.9", established: true, up: up1, sent: 1}}, nil},
			{6 * time.Second, []peerSend{est(5, up1), {addr: "192.0.2.9", established: true, up: up1, sent: 2}}, nil},
			{10 * time.Second, []peerSend{est(5, up1), {addr: "192.0.2.9", established: true, up: up1, sent: 2}}, []string{"192.0.2.1"}},
			{16 * time.Second, []peerSend{est(5, up1), {addr: "192.0.2.9", established: true, up: up1, sent: 2}}, []string{"192.0.2.9"}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newSendHoldTimer(hold)
			for i, s := range tc.steps {
				if got := h.observe(t0.Add(s.at), s.peers); !slices.Equal(got, s.expired) {
					t.Errorf("step %d (%v): expired %v, want %v", i, s.at, got, s.expired)
				}
			}
		})
	}
}

// TestConfigSendHoldTime checks the default of RFC 9687 section 3.4 and
// that a send hold time not longer than the hold time is refused.
func TestConfigSendHoldTime(t *testing.T) {
	base := Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")}
	tests := []struct {
		name       string
		hold, send time.Duration
		want       time.Duration
		wantErr    string
	}{
		{"defaults: 8 minutes", 0, 0, 8 * time.Minute, ""},
		{"short hold time: 8 minutes", 30 * time.Second, 0, 8 * time.Minute, ""},
		{"long hold time: twice it", 600 * time.Second, 0, 1200 * time.Second, ""},
		{"configured", 3 * time.Second, 4 * time.Second, 4 * time.Second, ""},
		{"equal to the hold time", 30 * time.Second, 30 * time.Second, 0, "longer than the hold time"},
		{"below GoBGP's default hold time", 0, 60 * time.Second, 0, "longer than the hold time 1m30s"},
		{"negative", 0, -time.Second, 0, "longer than the hold time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			c.HoldTime, c.SendHoldTime = tc.hold, tc.send
			err := c.Validate()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Validate: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.sendHoldTime(); got != tc.want {
				t.Errorf("send hold time %v, want %v", got, tc.want)
			}
		})
	}
}

// smallWindowListener listens on addr:port as a neighbor with a small
// receive window and a small MSS, so that the speaker's sender fills the
// window and its own send buffer after a few hundred kilobytes. Linux
// sizes a connection's send buffer from the peer's MSS: with loopback's
// 64 kB MSS it starts at 4 MB, which takes the speaker many seconds of
// UPDATEs to fill.
func smallWindowListener(t *testing.T, addr string, port uint16) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			if serr == nil {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(addr, strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// sendHoldConfig is a speaker with one neighbor on 127.0.0.2:port and the
// shortest timers allowed: hold time 3 s, send hold time 4 s.
func sendHoldConfig(port uint16) Config {
	return Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"),
		HoldTime: 3 * time.Second, Keepalive: time.Second, ConnectRetry: time.Second,
		SendHoldTime: 4 * time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: port,
			LocalAddress: netip.MustParseAddr("127.0.0.1")}},
	}
}

// onlyNeighbor is the status of the speaker's session with 127.0.0.2.
func onlyNeighbor(t *testing.T, s *Speaker) NeighborStatus {
	t.Helper()
	st := s.Status()
	i := slices.IndexFunc(st.Neighbors, func(n NeighborStatus) bool { return n.Address == "127.0.0.2" })
	if i < 0 {
		t.Fatalf("no neighbor 127.0.0.2: %+v", st.Neighbors)
	}
	return st.Neighbors[i]
}

// TestSpeakerSendHoldStalledNeighbor is RFC 9687's case: a neighbor that
// completes the handshake and keeps sending KEEPALIVEs (so the ordinary
// hold timer never expires) but stops reading. Once its window is full
// nothing the speaker sends gets through, withdrawals included. The send
// hold timer must end the session, say why in the log and the metrics,
// and the session must come back once the neighbor reads again. Without
// the send hold timer the session stays Established for good.
func TestSpeakerSendHoldStalledNeighbor(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	ln := smallWindowListener(t, "127.0.0.2", port)
	var logBuf syncBuffer
	cfg := sendHoldConfig(port)
	s := newTestSpeakerLog(t, slog.New(slog.NewTextHandler(&logBuf, nil)), cfg)
	n := acceptRawMode(t, ln)
	waitEstablished(t, s)

	all := manyPrefixes(1 << 14)
	for i := 0; !senderBlocked(); i++ {
		if i == 40 {
			t.Fatal("the speaker's sender never blocked on the neighbor that does not read")
		}
		for _, healthy := range []bool{true, false} {
			if err := s.Update(context.Background(), all, nil, healthy); err != nil {
				t.Fatal(err)
			}
		}
	}
	blocked := time.Now()
	// A withdrawal is now stuck behind the blocked write.
	if err := s.Update(context.Background(), all, nil, false); err != nil {
		t.Fatal(err)
	}
	// The bound is only for failure: the timer expires 4 s after the
	// last message got through, and the session ends right after.
	nb := waitNeighbor(t, s, "127.0.0.2", "ended by the send hold timer", func(n NeighborStatus) bool {
		return n.SendHoldExpiries > 0 && !n.Established
	})
	t.Logf("session ended %v after the sender was seen blocked: %+v", time.Since(blocked), nb)
	if nb.SendHoldExpiries != 1 {
		t.Errorf("send hold expiries %d, want 1", nb.SendHoldExpiries)
	}
	if !slices.ContainsFunc(strings.Split(logBuf.String(), "\n"), func(l string) bool {
		return strings.Contains(l, "level=ERROR") && strings.Contains(l, "Send Hold Timer Expired") && strings.Contains(l, "neighbor=127.0.0.2")
	}) {
		t.Errorf("no error in the log says the send hold timer expired:\n%s", logBuf.String())
	}
	const wantMetric = `
# HELP map646_bgp_send_hold_timer_expired_total Sessions ended because the BGP neighbor accepted no message for send_hold_time (RFC 9687).
# TYPE map646_bgp_send_hold_timer_expired_total counter
map646_bgp_send_hold_timer_expired_total{neighbor="127.0.0.2"} 1
`
	if err := testutil.CollectAndCompare(statusCollector(s.Status), strings.NewReader(wantMetric), "map646_bgp_send_hold_timer_expired_total"); err != nil {
		t.Error(err)
	}
	// The speaker closed the connection: the neighbor reads what was
	// queued, then the end of the stream (or a reset).
	n.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, n.conn); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the speaker did not close the connection: %v", err)
	}

	// The neighbor reads again: the session comes back and stays up for
	// longer than the send hold time.
	if err := s.Update(context.Background(), all[:1], nil, true); err != nil {
		t.Fatal(err)
	}
	acceptRaw(t, ln)
	waitNeighbor(t, s, "127.0.0.2", "established again with the route", func(n NeighborStatus) bool { return n.Established && n.Advertised == 1 })
	time.Sleep(2 * cfg.SendHoldTime)
	if nb := onlyNeighbor(t, s); !nb.Established || nb.SendHoldExpiries != 1 {
		t.Errorf("with a neighbor that reads, the session is not kept: %+v", nb)
	}
}

// TestSpeakerSendHoldSlowNeighbor: a neighbor that reads, but slower than
// the speaker sends, keeps its session. The speaker's sender waits in its
// writes for much longer than the send hold time in all, but each wait is
// shorter: some message always gets through in time.
func TestSpeakerSendHoldSlowNeighbor(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	ln := smallWindowListener(t, "127.0.0.2", port)
	cfg := sendHoldConfig(port)
	s := newTestSpeaker(t, cfg)
	n := acceptRawMode(t, ln)
	waitEstablished(t, s)

	var read atomic.Int64
	go func() { // about 100 kB/s
		buf := make([]byte, 4096)
		for {
			k, err := n.conn.Read(buf)
			read.Add(int64(k))
			if err != nil {
				return
			}
			time.Sleep(40 * time.Millisecond)
		}
	}()

	all := manyPrefixes(1 << 14)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pumped := make(chan struct{})
	go func() { // keep the sender busy: health flaps queue UPDATEs
		defer close(pumped)
		for healthy := true; ctx.Err() == nil; healthy = !healthy {
			if err := s.Update(context.Background(), all, nil, healthy); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Watch for 4 send hold times; the sender must be waiting in its
	// writes over all of it, else the neighbor is not slow enough.
	var first, last time.Time
	samples, blocked := 0, 0
	for end := time.Now().Add(4 * cfg.SendHoldTime); time.Now().Before(end); {
		samples++
		if senderBlocked() {
			blocked++
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
		}
		if nb := onlyNeighbor(t, s); !nb.Established || nb.SendHoldExpiries != 0 {
			t.Fatalf("the slow neighbor's session was ended: %+v", nb)
		}
	}
	cancel()
	<-pumped
	t.Logf("sender waiting in a write in %d of %d samples, from %v to %v; the neighbor read %d kB",
		blocked, samples, first.Format("15:04:05.000"), last.Format("15:04:05.000"), read.Load()>>10)
	if first.IsZero() || last.Sub(first) < 2*cfg.SendHoldTime {
		t.Fatalf("the sender was not held up by the neighbor for long enough to test anything")
	}
	if nb := onlyNeighbor(t, s); !nb.Established || nb.SendHoldExpiries != 0 || nb.Flaps != 0 {
		t.Errorf("the slow neighbor's session was disturbed: %+v", nb)
	}
}
