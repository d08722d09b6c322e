package ra

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/map646/map646/internal/netnstest"
)

func TestAnswerAt(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	const delay = 200 * time.Millisecond
	for _, tc := range []struct {
		name                                 string
		lastMulticast, nextPeriodic, pending time.Time
		want                                 time.Time
		schedule                             bool
	}{
		{"quiet link: after the random delay", time.Time{}, at(30 * time.Second), time.Time{}, at(delay), true},
		{"last multicast long ago", at(-10 * time.Second), at(20 * time.Second), time.Time{}, at(delay), true},
		{"last multicast 1 s ago: 3 s after it, plus the delay", at(-time.Second), at(29 * time.Second), time.Time{}, at(2*time.Second + delay), true},
		{"last multicast exactly 3 s ago", at(-3 * time.Second), at(27 * time.Second), time.Time{}, at(delay), true},
		{"answer already pending: it answers this one too", at(-time.Second), at(29 * time.Second), at(2 * time.Second), at(2 * time.Second), false},
		{"periodic advertisement comes first", time.Time{}, at(100 * time.Millisecond), time.Time{}, at(100 * time.Millisecond), false},
		{"periodic before the rate-limited answer", at(-time.Second), at(time.Second), time.Time{}, at(time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, schedule := answerAt(t0, tc.lastMulticast, tc.nextPeriodic, tc.pending, delay)
			if !got.Equal(tc.want) || schedule != tc.schedule {
				t.Errorf("answerAt = %v, %v; want %v, %v", got.Sub(t0), schedule, tc.want.Sub(t0), tc.schedule)
			}
		})
	}
	// Whatever the state, a burst gets at most one answer per
	// MIN_DELAY_BETWEEN_RAS: simulate one solicitation every 10 ms for 10 s.
	var last, pending time.Time
	answers := 0
	for now := t0; now.Before(t0.Add(10 * time.Second)); now = now.Add(10 * time.Millisecond) {
		if !pending.IsZero() && !now.Before(pending) {
			answers++
			last, pending = pending, time.Time{}
		}
		if a, ok := answerAt(now, last, t0.Add(time.Hour), pending, maxRADelay); ok {
			pending = a
		}
	}
	if answers > 4 { // at 0.5 s, 4 s, 7.5 s: 3 answers in 10 s
		t.Errorf("%d answers to a 10 s burst, want at most 4", answers)
	}
}

func TestSolicitationProblem(t *testing.T) {
	rs := func(opts ...ndp.Option) []byte {
		b, err := ndp.MarshalMessage(&ndp.RouterSolicitation{Options: opts})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sll := &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 1}}
	ll := netip.MustParseAddr("fe80::1")
	hop := func(h int) *ipv6.ControlMessage { return &ipv6.ControlMessage{HopLimit: h} }
	code1 := rs()
	code1[1] = 1
	zeroLenOpt := append(rs(), 1, 0, 0, 0, 0, 0, 0, 0)
	for _, tc := range []struct {
		name string
		b    []byte
		cm   *ipv6.ControlMessage
		src  netip.Addr
		want string
	}{
		{"valid", rs(), hop(255), ll, ""},
		{"valid with source link-layer address", rs(sll), hop(255), ll, ""},
		{"valid from the unspecified address", rs(), hop(255), netip.IPv6Unspecified(), ""},
		{"hop limit 64", rs(), hop(64), ll, "hop_limit"},
		{"hop limit 254", rs(), hop(254), ll, "hop_limit"},
		{"no control message", rs(), nil, ll, "hop_limit"},
		{"code 1", code1, hop(255), ll, "invalid"},
		{"short", rs()[:7], hop(255), ll, "invalid"},
		{"not a solicitation", []byte{134, 0, 0, 0, 0, 0, 0, 0}, hop(255), ll, "invalid"},
		{"option of length 0", zeroLenOpt, hop(255), ll, "invalid"},
		{"unspecified source with link-layer address", rs(sll), hop(255), netip.IPv6Unspecified(), "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := solicitationProblem(tc.b, tc.cm, tc.src); got != tc.want {
				t.Errorf("problem %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAdvertiserSolicitationFlood sends router solicitations from a host on
// the link: one with hop limit 64 (as if forwarded from off the link) gets
// no answer; a valid one gets a multicast answer, no sooner than
// MIN_DELAY_BETWEEN_RAS after the previous advertisement; a flood of
// solicitations gets a bounded number of advertisements, all counted.
func TestAdvertiserSolicitationFlood(t *testing.T) {
	netnstest.Require(t, "ra-")
	r := netnstest.New(t, "ra-r-")
	h := netnstest.New(t, "ra-h-")
	netnstest.Veth(t, r, "xlat0", h, "srv0")
	// The capture binds the host's link-local address: wait for it.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(h.Run("ip", "-6", "addr", "show", "dev", "srv0", "scope", "link"), "fe80::"); {
		if time.Now().After(deadline) {
			t.Fatal("no link-local address on srv0")
		}
		time.Sleep(50 * time.Millisecond)
	}
	capt := newCapture(t, h, "srv0")
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var a *Advertiser
	if err := r.Do(func() (err error) {
		// A long interval: every advertisement after the first is an
		// answer to a solicitation.
		a, err = Start(Config{Interface: "xlat0", Interval: 600 * time.Second}, log)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Update([]netip.Prefix{netip.MustParsePrefix("2001:db8:64::/96")}, true); err != nil {
		t.Fatal(err)
	}
	capt.next(t, "the first advertisement", func(*ndp.RouterAdvertisement) bool { return true })
	firstAt := time.Now()
	allRouters := netip.MustParseAddr("ff02::2")
	var ifi *net.Interface
	if err := h.Do(func() (err error) {
		ifi, err = net.InterfaceByName("srv0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	solicit := func(hopLimit int) {
		t.Helper()
		if err := capt.c.WriteTo(&ndp.RouterSolicitation{}, &ipv6.ControlMessage{HopLimit: hopLimit, IfIndex: ifi.Index}, allRouters); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus := func(what string, ok func(Status) bool) Status {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := a.Status()
			if ok(st) {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("status %+v: not %s", st, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	quiet := func(d time.Duration) {
		t.Helper()
		select {
		case ra := <-capt.ch:
			t.Fatalf("unexpected advertisement %+v", ra)
		case <-time.After(d):
		}
	}

	// Hop limit 64: ignored and counted, even once the rate limit allows
	// an answer.
	time.Sleep(time.Until(firstAt.Add(minDelayBetweenRAs + 200*time.Millisecond)))
	solicit(64)
	waitStatus("counting the hop limit 64 solicitation", func(st Status) bool { return st.RSBadHopLimit == 1 })
	quiet(maxRADelay + 500*time.Millisecond)

	// Hop limit 255: answered by multicast within MAX_RA_DELAY_TIME.
	sent := time.Now()
	solicit(255)
	capt.next(t, "the answer to a valid solicitation", func(*ndp.RouterAdvertisement) bool { return true })
	if d := time.Since(sent); d > maxRADelay+300*time.Millisecond {
		t.Errorf("answer after %v, want within MAX_RA_DELAY_TIME", d)
	}
	answeredAt := time.Now()
	waitStatus("one solicited advertisement", func(st Status) bool { return st.Solicited == 1 })

	// A flood: 300 solicitations over about 4 s. Answers come at least
	// MIN_DELAY_BETWEEN_RAS apart (the first one counted from the answer
	// above), so a 4 s flood gets one or two, however slow the machine.
	const flood = 300
	var at []time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range flood {
			if err := capt.c.WriteTo(&ndp.RouterSolicitation{}, &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifi.Index}, allRouters); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(4 * time.Second / flood)
		}
	}()
	// Collect while flooding, so that each advertisement is timed when it
	// arrives.
	var floodEnd time.Time
	var end <-chan time.Time
collect:
	for {
		select {
		case <-capt.ch:
			at = append(at, time.Now())
		case <-done:
			floodEnd, done = time.Now(), nil
			end = time.After(minDelayBetweenRAs + maxRADelay + 500*time.Millisecond)
		case <-end:
			break collect
		}
	}
	got := len(at)
	// Answers possible: one per MIN_DELAY_BETWEEN_RAS from the answer
	// above to the end of the flood, plus the one due just after it.
	most := int(floodEnd.Sub(answeredAt)/minDelayBetweenRAs) + 1
	if got == 0 || got > most {
		t.Errorf("%d advertisements for %d solicitations over %v, want 1 to %d", got, flood, floodEnd.Sub(answeredAt), most)
	}
	prev := answeredAt
	for _, x := range at {
		if d := x.Sub(prev); d < minDelayBetweenRAs-100*time.Millisecond {
			t.Errorf("an answer %v after the previous one, want at least MIN_DELAY_BETWEEN_RAS", d)
		}
		prev = x
	}
	st := waitStatus("counting the flood", func(st Status) bool { return st.RSReceived == flood+2 })
	if st.Solicited != uint64(1+got) || st.RSRateLimited != uint64(flood-got) || st.RSBadHopLimit != 1 || st.RSInvalid != 0 {
		t.Errorf("status %+v: want %d solicited, %d rate limited, 1 bad hop limit", st, 1+got, flood-got)
	}
}
