package bgp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// manyPrefixes returns n distinct IPv4 /24s of 10.0.0.0/8 (never sent
// anywhere: the speakers of these tests have no neighbor or a test one).
func manyPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	for i := range out {
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	return out
}

// TestSpeakerWithdrawMany withdraws 10000 announced prefixes in the two
// ways a translator does: a reload that drops half of them (withdrawn by
// path) and a failed health check that drops all (one DeleteAll). Each
// took seconds to minutes while GoBGP looked up every path by UUID; the
// bound here is an order of magnitude above what the linear withdrawal
// needs on a loaded machine, so it cannot flake yet catches the quadratic
// one.
func TestSpeakerWithdrawMany(t *testing.T) {
	s := newTestSpeaker(t, Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")})
	ctx := context.Background()
	all := manyPrefixes(10000)
	if err := s.Update(ctx, all, nil, true); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.Update(ctx, all[:5000], nil, true); err != nil {
		t.Fatal(err)
	}
	half := time.Since(t0)
	if st := s.Status(); len(st.Announced) != 5000 || st.Announced[0] != all[0].String() || st.Announced[4999] != all[4999].String() {
		t.Fatalf("after withdrawing half: %d announced, from %v", len(st.Announced), st.Announced[:1])
	}
	if got := s.ribSize(t); got != 5000 {
		t.Fatalf("GoBGP's RIB holds %d paths after withdrawing half, want 5000", got)
	}
	t0 = time.Now()
	if err := s.Update(ctx, all, nil, false); err != nil {
		t.Fatal(err)
	}
	rest := time.Since(t0)
	if st := s.Status(); len(st.Announced) != 0 {
		t.Fatalf("unhealthy: still %d announced", len(st.Announced))
	}
	if got := s.ribSize(t); got != 0 {
		t.Fatalf("GoBGP's RIB holds %d paths after withdrawing all", got)
	}
	t.Logf("withdrew 5000 of 10000 in %v, the other 5000 in %v", half, rest)
	if half > 10*time.Second || rest > 10*time.Second {
		t.Errorf("withdrawing 5000 prefixes took %v and %v: not linear", half, rest)
	}
}

// TestSpeakerCloseDeadline checks that Close returns when its context ends
// even while the withdrawal cannot proceed (here: the speaker's lock is
// held, as by an Update stuck in GoBGP), and that the withdrawal and stop
// still happen in the background once it can.
func TestSpeakerCloseDeadline(t *testing.T) {
	s, err := New(context.Background(), Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(context.Background(), manyPrefixes(10000), nil, true); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock() // an Update in progress
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = s.Close(ctx)
	d := time.Since(t0)
	s.mu.Unlock()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close past its deadline returned %v, want a deadline error", err)
	}
	if d > 5*time.Second {
		t.Errorf("Close with a 200 ms deadline returned after %v", d)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close, once the lock was free: %v", err)
	}
	if st := s.Status(); len(st.Announced) != 0 {
		t.Errorf("closed with %d prefixes announced", len(st.Announced))
	}
}

// ribSize is how many prefixes GoBGP's global RIB holds, both families.
func (s *Speaker) ribSize(t *testing.T) int {
	t.Helper()
	n := 0
	for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
		if err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgpFamily(f)},
			func(bgp.NLRI, []*apiutil.Path) { n++ }); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestSpeakerRestartNoLeak closes and starts the speaker as a reload that
// changes the bgp block does, with a live session each time: the
// goroutines return to what they were after the first restart. With GoBGP
// v3 each restart left its server's loop running (and the server with
// it), one goroutine and a whole RIB per reload.
func TestSpeakerRestartNoLeak(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	startPeer(t, "127.0.0.2", port, "127.0.0.1")
	cfg := Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"), ConnectRetry: time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: port,
			LocalAddress: netip.MustParseAddr("127.0.0.1")}},
	}
	run := func() {
		t.Helper()
		s, err := New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), nil, true); err != nil {
			t.Error(err)
		}
		waitEstablished(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// settle waits for the goroutine count to drop to at most want (the
	// peer's side of the ended session winds down asynchronously).
	settle := func(want int) int {
		var n int
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= want {
				break
			}
		}
		return n
	}
	run()
	// The baseline is the lowest count over two seconds once the first
	// session has wound down.
	base := runtime.NumGoroutine()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		base = min(base, runtime.NumGoroutine())
	}
	const restarts = 4
	for range restarts {
		run()
	}
	// The test peer's side of the last session may still be winding down;
	// a leak of one goroutine per restart would exceed this slack.
	const slack = 2
	n := settle(base + slack)
	t.Logf("goroutines: %d after the first restart, %d after %d more", base, n, restarts)
	if n > base+slack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d after the first restart, %d after %d more:\n%s", base, n, restarts, buf[:runtime.Stack(buf, true)])
	}
}

// TestSpeakerRestartStalledNeighborNoLeak restarts the speaker as a
// reload that changes the bgp block does, each time with a neighbor that
// completes the handshake, keeps the session up with KEEPALIVEs and then
// never reads: health flaps of 65536 prefixes fill its socket, GoBGP's
// sender blocks in its write, and the UPDATEs after that queue behind it.
// Close must return within its deadline, and each restart must leave no
// goroutine behind. With the original github.com/eapache/channels, GoBGP's
// stop left the goroutine of the session's queue blocked for good, holding
// the queued UPDATEs (tens of MB here): one per restart, so a neighbor
// that stops reading made the speaker grow with every reload
// (third_party/eapache-channels).
func TestSpeakerRestartStalledNeighborNoLeak(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"), ConnectRetry: time.Second,
		Neighbors: []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: port,
			LocalAddress: netip.MustParseAddr("127.0.0.1")}},
	}
	all := manyPrefixes(1 << 16) // 65536 /24s: about 330 kB of UPDATEs, as much to withdraw them
	run := func() time.Duration {
		t.Helper()
		s, err := New(context.Background(), cfg, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		n := acceptRawMode(t, ln)
		defer n.conn.Close()
		waitEstablished(t, s)
		// Health flaps announce and withdraw everything until the
		// socket's buffers (which grow to megabytes) are full and
		// GoBGP's sender is stuck in its write.
		for i := 0; !senderBlocked(); i++ {
			if i == 40 {
				t.Fatal("the speaker's sender never blocked on the neighbor that does not read")
			}
			if i > 0 && i%10 == 0 {
				t.Logf("%d health flaps and the sender still writes", i)
			}
			for _, healthy := range []bool{true, false} {
				if err := s.Update(context.Background(), all, nil, healthy); err != nil {
					t.Fatal(err)
				}
			}
		}
		// And a last change queued behind the blocked write.
		if err := s.Update(context.Background(), all, nil, true); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeDeadline)
		defer cancel()
		t0 := time.Now()
		err = s.Close(ctx)
		d := time.Since(t0)
		if d > closeDeadline+time.Second {
			t.Errorf("Close with a %v deadline returned after %v (%v)", closeDeadline, d, err)
		}
		if err != nil {
			// Past its deadline (withdrawing 65536 prefixes on a loaded
			// machine): the work goes on in the background; wait for it,
			// so that what is left after it is what counts.
			t.Logf("Close: %v", err)
			wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
			defer wcancel()
			if err := s.Close(wctx); err != nil {
				t.Fatalf("Close, waited for: %v", err)
			}
		}
		return d
	}
	// heap is the live heap after a collection.
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	// settle waits for the goroutine count to drop to at most want.
	settle := func(want int) int {
		var n int
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= want {
				break
			}
		}
		return n
	}
	d := run()
	base := runtime.NumGoroutine()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		base = min(base, runtime.NumGoroutine())
	}
	heap0 := heap()
	const restarts = 4
	for range restarts {
		d = max(d, run())
	}
	const slack = 2
	n := settle(base + slack)
	heap1 := heap()
	t.Logf("goroutines: %d after the first restart, %d after %d more; live heap %d MB, then %d MB; the slowest Close took %v",
		base, n, restarts, heap0>>20, heap1>>20, d)
	// The leak held about 100 MB of queued UPDATEs per restart.
	if !raceDetector && heap1 > heap0+64<<20 {
		t.Errorf("live heap grew from %d to %d MB over %d restarts", heap0>>20, heap1>>20, restarts)
	}
	if n > base+slack {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines %d after the first restart, %d after %d more:\n%s", base, n, restarts, buf[:runtime.Stack(buf, true)])
	}
}

// closeDeadline is the deadline a reload gives an announcer's Close
// (announcerStopTimeout in appliance/daemon).
const closeDeadline = 5 * time.Second

// senderBlocked reports whether a session's sender (GoBGP's
// sendMessageloop) is waiting in a write, as it does once the neighbor's
// socket is full; it looks a few times, for a write that is only slow.
func senderBlocked() bool {
	buf := make([]byte, 1<<22)
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		blocked := false
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "sendMessageloop") && strings.Contains(g, "(*FD).Write") {
				blocked = true
			}
		}
		if !blocked {
			return false
		}
	}
	return true
}
