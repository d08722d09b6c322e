package ra

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

var allNodes = netip.MustParseAddr("ff02::1")
var allRouters = netip.MustParseAddr("ff02::2")

// minDelayBetweenRAs is MIN_DELAY_BETWEEN_RAS (RFC 4861 section 10): the
// least time between two multicast advertisements sent in answer to
// solicitations.
const minDelayBetweenRAs = 3 * time.Second

// maxRADelay is MAX_RA_DELAY_TIME (RFC 4861 section 10): the longest random
// delay before answering a solicitation.
const maxRADelay = 500 * time.Millisecond

// linkLocalWait bounds how long Start waits for the interface's link-local
// address to leave DAD.
const linkLocalWait = 5 * time.Second

// Advertiser sends router advertisements on one interface: one at start,
// then every Interval, and multicast answers to valid Router Solicitations
// at most once per MIN_DELAY_BETWEEN_RAS (RFC 4861 section 6.2.6).
// Its methods are safe for concurrent use.
type Advertiser struct {
	cfg Config
	log *slog.Logger
	ifi *net.Interface
	c   *ndp.Conn
	src netip.Addr

	mu      sync.Mutex
	routes  []netip.Prefix // advertised with the configured lifetime
	gone    []netip.Prefix // sent once more with lifetime 0, then forgotten
	healthy bool
	closed  bool
	st      Status
	// lastMulticast is when the last advertisement went to all nodes, of
	// any kind; nextPeriodic when the next unsolicited one is due;
	// solicitAt when the pending answer to solicitations is due (zero:
	// none pending).
	lastMulticast, nextPeriodic, solicitAt time.Time

	wake    chan struct{} // the routes changed: advertise now
	resched chan struct{} // a solicitation set solicitAt
	done    chan struct{}
	wg      sync.WaitGroup
}

// Status counts what the advertiser did.
type Status struct {
	Interface  string   `json:"interface"`
	Source     string   `json:"source"`
	Healthy    bool     `json:"healthy"`
	Routes     []string `json:"routes"`
	Sent       uint64   `json:"sent"`        // all advertisements
	Solicited  uint64   `json:"solicited"`   // of which answers to solicitations
	Goodbyes   uint64   `json:"goodbyes"`    // of which with lifetime 0
	RSReceived uint64   `json:"rs_received"` // router solicitations seen
	// RSBadHopLimit and RSInvalid count solicitations ignored as invalid
	// (RFC 4861 section 6.1.1): with an IP hop limit other than 255 (so
	// possibly from off the link), or malformed.
	RSBadHopLimit uint64 `json:"rs_bad_hop_limit"`
	RSInvalid     uint64 `json:"rs_invalid"`
	// RSRateLimited counts valid solicitations that got no advertisement
	// of their own: an answer was already scheduled, and one multicast
	// advertisement answers them all (RFC 4861 section 6.2.6).
	RSRateLimited uint64    `json:"rs_rate_limited"`
	SendErrors    uint64    `json:"send_errors"`
	LastError     string    `json:"last_error,omitempty"`
	LastSent      time.Time `json:"last_sent,omitzero"`
}

// Start opens the interface and begins advertising. Until the first healthy
// Update it sends nothing: an appliance that cannot translate yet must not
// attract traffic.
// It must run in the network namespace of the interface; the socket stays
// there.
func Start(cfg Config, log *slog.Logger) (*Advertiser, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "ra", "interface", cfg.Interface)
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("ra: interface %s: %w", cfg.Interface, err)
	}
	// Router advertisements must come from the link-local address (RFC 4861
	// section 4.2); it cannot be bound while DAD runs, so wait a little.
	var c *ndp.Conn
	var src netip.Addr
	deadline := time.Now().Add(linkLocalWait)
	for {
		c, src, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("ra: %s: no usable link-local address: %w", cfg.Interface, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("ra: %s: %w", cfg.Interface, err)
	}
	// The hop limit of each solicitation tells one sent on the link (255)
	// from one forwarded by a router (RFC 4861 section 6.1.1).
	if err := c.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		c.Close()
		return nil, fmt.Errorf("ra: %s: %w", cfg.Interface, err)
	}
	if err := c.JoinGroup(allRouters); err != nil {
		c.Close()
		return nil, fmt.Errorf("ra: %s: join ff02::2: %w", cfg.Interface, err)
	}
	a := &Advertiser{
		cfg: cfg, log: log, ifi: ifi, c: c, src: src,
		wake:    make(chan struct{}, 1),
		resched: make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	a.st.Interface = cfg.Interface
	a.st.Source = src.String()
	a.wg.Add(2)
	go a.periodic()
	go a.solicitations()
	log.Info("router advertisements started", "source", src, "interval", cfg.Interval,
		"route_lifetime", cfg.RouteLifetime, "preference", cfg.Preference)
	return a, nil
}

// Update sets the routes to advertise. A change is advertised at once;
// routes that disappear are advertised once with lifetime 0. While
// unhealthy the advertiser says goodbye (all lifetimes 0) and keeps quiet.
func (a *Advertiser) Update(routes []netip.Prefix, healthy bool) error {
	want := make([]netip.Prefix, 0, len(routes))
	for _, p := range routes {
		if !p.IsValid() || !p.Addr().Is6() || p.Addr().Is4In6() {
			return fmt.Errorf("ra: %v is not an IPv6 prefix", p)
		}
		want = append(want, p.Masked())
	}
	slices.SortFunc(want, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return x.Bits() - y.Bits()
	})
	want = slices.Compact(want)

	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return errors.New("ra: advertiser is closed")
	}
	changed := healthy != a.healthy || !slices.Equal(want, a.routes)
	var goodbye bool
	var msg *ndp.RouterAdvertisement
	var err error
	switch {
	case !changed:
	case !healthy && a.healthy:
		// Going down: withdraw everything now, from this goroutine, so the
		// caller knows the goodbye was sent.
		msg, err = Message(a.cfg, a.routes, a.gone, a.ifi.HardwareAddr, true)
		goodbye = true
		a.gone = nil
	case healthy:
		for _, p := range a.routes {
			if !slices.Contains(want, p) && !slices.Contains(a.gone, p) {
				a.gone = append(a.gone, p)
			}
		}
		a.gone = slices.DeleteFunc(a.gone, func(p netip.Prefix) bool { return slices.Contains(want, p) })
	}
	a.routes = want
	a.healthy = healthy
	a.st.Healthy = healthy
	a.mu.Unlock()
	if err != nil {
		return err
	}
	if msg != nil {
		return a.send(msg, allNodes, false, goodbye)
	}
	if changed && healthy {
		select {
		case a.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// current builds the advertisement to send now and forgets the withdrawn
// routes once they have been sent with lifetime 0. ok is false when there is
// nothing to say (unhealthy and already said goodbye).
func (a *Advertiser) current() (msg *ndp.RouterAdvertisement, ok bool, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.healthy {
		return nil, false, nil
	}
	msg, err = Message(a.cfg, a.routes, a.gone, a.ifi.HardwareAddr, false)
	a.gone = nil
	return msg, err == nil, err
}

func (a *Advertiser) send(msg *ndp.RouterAdvertisement, dst netip.Addr, solicited, goodbye bool) error {
	err := a.c.WriteTo(msg, nil, dst)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.st.SendErrors++
		a.st.LastError = err.Error()
		return fmt.Errorf("ra: %s: send: %w", a.cfg.Interface, err)
	}
	a.st.Sent++
	a.st.LastSent = time.Now()
	if dst.IsMulticast() {
		a.lastMulticast = a.st.LastSent
	}
	if solicited {
		a.st.Solicited++
	}
	if goodbye {
		a.st.Goodbyes++
	}
	return nil
}

// periodic sends the unsolicited advertisements, and the multicast
// answers to solicitations when they are due.
func (a *Advertiser) periodic() {
	defer a.wg.Done()
	a.mu.Lock()
	a.nextPeriodic = time.Now()
	a.mu.Unlock()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		a.mu.Lock()
		due := a.nextPeriodic
		if !a.solicitAt.IsZero() && a.solicitAt.Before(due) {
			due = a.solicitAt
		}
		a.mu.Unlock()
		t.Reset(time.Until(due))
		solicited := false
		select {
		case <-a.done:
			return
		case <-a.resched:
			continue
		case <-a.wake:
		case <-t.C:
			now := time.Now()
			a.mu.Lock()
			periodic := !now.Before(a.nextPeriodic)
			solicited = !periodic && !a.solicitAt.IsZero() && !now.Before(a.solicitAt)
			a.mu.Unlock()
			if !periodic && !solicited {
				continue
			}
		}
		// Whatever the reason, this advertisement answers the pending
		// solicitations and restarts the interval (RFC 4861 section 6.2.6).
		// It counts as the last multicast one from now, so that a
		// solicitation arriving while it is being sent waits its turn.
		a.mu.Lock()
		now := time.Now()
		a.solicitAt = time.Time{}
		a.nextPeriodic = now.Add(a.cfg.Interval)
		a.lastMulticast = now
		a.mu.Unlock()
		if msg, ok, err := a.current(); err != nil {
			a.log.Error("cannot build router advertisement", "err", err)
		} else if ok {
			if err := a.send(msg, allNodes, solicited, false); err != nil {
				a.log.Warn("router advertisement not sent", "err", err)
			}
		}
	}
}

// answerAt decides when to answer a valid solicitation received at now
// (RFC 4861 section 6.2.6): after a random delay (up to MAX_RA_DELAY_TIME),
// and no sooner than MIN_DELAY_BETWEEN_RAS after the last multicast
// advertisement. If an answer is already pending (due at pending), or the
// next unsolicited advertisement (due at nextPeriodic) comes first, that
// one answers and schedule is false.
func answerAt(now, lastMulticast, nextPeriodic, pending time.Time, delay time.Duration) (at time.Time, schedule bool) {
	if !pending.IsZero() {
		return pending, false
	}
	at = now.Add(delay)
	if !lastMulticast.IsZero() && now.Sub(lastMulticast) < minDelayBetweenRAs {
		at = lastMulticast.Add(minDelayBetweenRAs + delay)
	}
	if !nextPeriodic.IsZero() && at.After(nextPeriodic) {
		return nextPeriodic, false
	}
	return at, true
}

// solicitationProblem says why b, an ICMPv6 message received with control
// message cm from src, is not a valid Router Solicitation (RFC 4861 section
// 6.1.1), or "" if it is. The kernel has checked the ICMPv6 checksum.
func solicitationProblem(b []byte, cm *ipv6.ControlMessage, src netip.Addr) (reason string) {
	if cm == nil || cm.HopLimit != ndp.HopLimit {
		return "hop_limit"
	}
	// Type 133, code 0, at least 8 octets.
	if len(b) < 8 || b[0] != byte(ipv6.ICMPTypeRouterSolicitation) || b[1] != 0 {
		return "invalid"
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		return "invalid" // among others, an option of length 0
	}
	rs, ok := m.(*ndp.RouterSolicitation)
	if !ok {
		return "invalid"
	}
	if src.IsUnspecified() {
		for _, o := range rs.Options {
			if l, ok := o.(*ndp.LinkLayerAddress); ok && l.Direction == ndp.Source {
				return "invalid"
			}
		}
	}
	return ""
}

// solicitations reads Router Solicitations, ignores the invalid ones and
// schedules one multicast answer for each burst of valid ones
// (RFC 4861 section 6.2.6). The answer is always multicast: a unicast
// answer per solicitation would let a flood of solicitations from many
// source addresses draw as many advertisements.
func (a *Advertiser) solicitations() {
	defer a.wg.Done()
	b := make([]byte, max(a.ifi.MTU, 1280))
	for {
		n, cm, from, err := a.c.ReadRaw(b)
		if err != nil {
			select {
			case <-a.done:
				return
			default:
			}
			a.log.Warn("reading router solicitations", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if from == a.src {
			continue // looped back from this socket
		}
		problem := solicitationProblem(b[:n], cm, from)
		a.mu.Lock()
		a.st.RSReceived++
		schedule := false
		switch problem {
		case "hop_limit":
			a.st.RSBadHopLimit++
		case "":
			var at time.Time
			at, schedule = answerAt(time.Now(), a.lastMulticast, a.nextPeriodic, a.solicitAt, rand.N(maxRADelay))
			if schedule {
				a.solicitAt = at
			} else {
				a.st.RSRateLimited++
			}
		default:
			a.st.RSInvalid++
		}
		a.mu.Unlock()
		if schedule {
			select {
			case a.resched <- struct{}{}:
			default:
			}
		}
	}
}

// Close sends the final advertisement with router and route lifetimes 0
// (unless one was already sent because the translator became unhealthy),
// then stops.
func (a *Advertiser) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	var msg *ndp.RouterAdvertisement
	var err error
	if a.healthy {
		msg, err = Message(a.cfg, a.routes, a.gone, a.ifi.HardwareAddr, true)
	}
	a.healthy = false
	a.mu.Unlock()
	if msg != nil {
		err = errors.Join(err, a.send(msg, allNodes, false, true))
	}
	close(a.done)
	err = errors.Join(err, a.c.Close())
	a.wg.Wait()
	a.log.Info("router advertisements stopped")
	return err
}

// Status returns the counters.
func (a *Advertiser) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.Routes = make([]string, 0, len(a.routes))
	for _, p := range a.routes {
		st.Routes = append(st.Routes, p.String())
	}
	return st
}
