package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/map646/map646/appliance/config"
)

// Config is the speaker's configuration: one local AS and the neighbors it
// peers with.
type Config struct {
	LocalAS  uint32
	RouterID netip.Addr // BGP identifier; must be IPv4 (RFC 6286 relaxes this, GoBGP does not)
	// ListenPort is the TCP port for incoming sessions (usually 179); 0
	// means the speaker only dials out.
	ListenPort int
	// ListenAddresses restricts where the speaker listens; empty means all.
	ListenAddresses []netip.Addr
	// HoldTime, Keepalive and ConnectRetry are the RFC 4271 timers; zero
	// takes GoBGP's defaults (90 s, 30 s, 120 s).
	HoldTime, Keepalive, ConnectRetry time.Duration
	// IPv4NextHopIPv6 sends the IPv4 prefixes to IPv6 neighbors too, with an
	// IPv6 next hop (RFC 8950).
	IPv4NextHopIPv6 bool
	// PrefixLimitRestart is how long a session ended for sending more than
	// its neighbor's MaxPrefixes stays down before it may come up again;
	// 0 means DefaultPrefixLimitRestart. GoBGP alone would keep it down
	// until an operator intervened, which an unattended appliance cannot
	// wait for.
	PrefixLimitRestart time.Duration
	// SendHoldTime ends a session whose neighbor has accepted no message
	// for this long (RFC 9687, the send hold timer); it must be longer
	// than the hold time. 0 means DefaultSendHoldTime of the hold time.
	SendHoldTime time.Duration
	Neighbors    []Neighbor
}

// DefaultPrefixLimitRestart is the default Config.PrefixLimitRestart: long
// enough that a neighbor flooding routes costs the speaker one bounded
// burst a minute.
const DefaultPrefixLimitRestart = time.Minute

// Neighbor is one BGP peer.
type Neighbor struct {
	Address      netip.Addr
	RemoteAS     uint32
	Password     string     // TCP MD5 signature (RFC 2385); empty for none
	LocalAddress netip.Addr // source address of the session; zero lets the kernel choose
	Port         uint16     // remote port; 0 means 179
	Passive      bool       // wait for the neighbor to connect
	// MaxPrefixes is the most prefixes of one address family the neighbor
	// may send before the session is ended with a Cease NOTIFICATION
	// (RFC 4486 subcode 1, maximum number of prefixes reached); 0 means
	// config.DefaultBGPMaxPrefixes. The speaker imports nothing, but GoBGP
	// keeps every received route in its Adj-RIB-In whatever the import
	// policy says, so this limit is what bounds the memory a neighbor can
	// make the speaker use.
	MaxPrefixes uint32
}

// maxPrefixes is n's limit with the default applied.
func (n Neighbor) maxPrefixes() uint32 {
	if n.MaxPrefixes == 0 {
		return config.DefaultBGPMaxPrefixes
	}
	return n.MaxPrefixes
}

// Validate reports the first problem in c.
func (c *Config) Validate() error {
	if c.LocalAS == 0 {
		return errors.New("bgp: local AS is not set")
	}
	if !c.RouterID.Is4() {
		return fmt.Errorf("bgp: router ID %v is not an IPv4 address", c.RouterID)
	}
	if c.ListenPort < 0 || c.ListenPort > 65535 {
		return fmt.Errorf("bgp: listen port %d is out of range", c.ListenPort)
	}
	if c.Keepalive > 0 && c.HoldTime > 0 && c.Keepalive >= c.HoldTime {
		return fmt.Errorf("bgp: keepalive %v must be shorter than the hold time %v", c.Keepalive, c.HoldTime)
	}
	if c.HoldTime > 0 && c.HoldTime < 3*time.Second {
		return fmt.Errorf("bgp: hold time %v is below 3 s (RFC 4271 section 4.2)", c.HoldTime)
	}
	if c.SendHoldTime < 0 || c.SendHoldTime > 0 && c.SendHoldTime <= c.holdTime() {
		return fmt.Errorf("bgp: send hold time %v must be longer than the hold time %v (RFC 9687 section 3.4)", c.SendHoldTime, c.holdTime())
	}
	seen := map[netip.Addr]bool{}
	for _, n := range c.Neighbors {
		if !n.Address.IsValid() {
			return errors.New("bgp: neighbor without an address")
		}
		if seen[n.Address] {
			return fmt.Errorf("bgp: neighbor %v is listed twice", n.Address)
		}
		seen[n.Address] = true
		if n.RemoteAS == 0 {
			return fmt.Errorf("bgp: neighbor %v has no remote AS", n.Address)
		}
		if n.LocalAddress.IsValid() && n.LocalAddress.Is4() != n.Address.Is4() {
			return fmt.Errorf("bgp: neighbor %v: local address %v is of the other family", n.Address, n.LocalAddress)
		}
		if len(n.Password) > 80 { // TCP_MD5SIG_MAXKEYLEN
			return fmt.Errorf("bgp: neighbor %v: password longer than 80 bytes", n.Address)
		}
	}
	return nil
}

// Speaker is an embedded BGP speaker (GoBGP, in process) that announces the
// prefixes a translator serves. Its methods are safe for concurrent use.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	mu        sync.Mutex
	announced []netip.Prefix // sorted, what is in the RIB now
	healthy   bool
	updates   uint64
	lastErr   string
	closed    bool

	// shown is what Status reports of the fields above, published
	// (publish) before and after each change of announcements. Status
	// reads it and never takes mu, which Update and Close hold across
	// GoBGP's path calls: those wait for GoBGP's server loop as ListPeer
	// does, so a stuck loop held every Status (`map646 stats`, scrapes)
	// behind a stuck Update (review H10).
	shownMu     sync.Mutex // never held while taking mu
	shown       Status
	shownClosed bool

	peers peerQuery // Status's session list

	stopWatch func()
	closeOnce sync.Once
	closeDone chan struct{} // closed when Close's work is done
	closeErr  error         // its outcome, set before closeDone is closed

	limitMu      sync.Mutex             // guards the fields below; never held with mu
	limitHits    map[string]uint64      // sessions ended by the prefix limit, by neighbor
	limitTimers  map[string]*time.Timer // pending restarts after the limit, by neighbor
	limitClosed  bool                   // no more restarts: the server is stopping
	sendHoldHits map[string]uint64      // sessions ended by the send hold timer, by neighbor

	stopSendHold func()        // ends runSendHold
	sendHoldDone chan struct{} // closed when runSendHold has returned
}

// New starts a speaker: it listens, dials its neighbors and announces
// nothing until the first Update.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	srv := server.NewBgpServer(server.LoggerOption(newGoBGPLogger(log), nil))
	go srv.Serve()

	global := &api.Global{
		Asn:        cfg.LocalAS,
		RouterId:   cfg.RouterID.String(),
		ListenPort: int32(cfg.ListenPort),
	}
	if cfg.ListenPort == 0 {
		global.ListenPort = -1 // GoBGP's "do not listen"
	}
	for _, a := range cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: start: %w", err)
	}
	// The policy is in place before the first neighbor exists, so that no
	// session ever sees the default accept-all of GoBGP.
	if err := setPolicy(ctx, srv); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: policy: %w", err)
	}
	s := &Speaker{cfg: cfg, log: log, srv: srv, closeDone: make(chan struct{}),
		limitHits: map[string]uint64{}, limitTimers: map[string]*time.Timer{}, sendHoldHits: map[string]uint64{}}
	s.publish() // Status before the first Update: nothing announced
	s.peers.list = func(ctx context.Context, fn func(*api.Peer)) error {
		return srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, fn)
	}
	if err := s.watchSessions(); err != nil {
		srv.Stop()
		return nil, fmt.Errorf("bgp: watch sessions: %w", err)
	}
	for _, n := range cfg.Neighbors {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(n)}); err != nil {
			srv.Stop()
			return nil, fmt.Errorf("bgp: neighbor %v: %w", n.Address, err)
		}
	}
	sendHoldCtx, stopSendHold := context.WithCancel(context.Background())
	s.stopSendHold, s.sendHoldDone = stopSendHold, make(chan struct{})
	go s.runSendHold(sendHoldCtx, s.sendHoldDone)
	log.Info("bgp speaker started", "local_as", cfg.LocalAS, "router_id", cfg.RouterID,
		"listen_port", cfg.ListenPort, "neighbors", len(cfg.Neighbors), "send_hold_time", cfg.sendHoldTime())
	return s, nil
}

func (s *Speaker) peer(n Neighbor) *api.Peer {
	p := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: n.Address.String(),
			PeerAsn:         n.RemoteAS,
			AuthPassword:    n.Password,
		},
		Transport: &api.Transport{PassiveMode: n.Passive, RemotePort: uint32(n.Port)},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          uint64(s.cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(s.cfg.Keepalive / time.Second),
			ConnectRetry:      uint64(s.cfg.ConnectRetry / time.Second),
			// Only the send hold timer resets sessions (ResetPeer).
			IdleHoldTimeAfterReset: uint64(sendHoldIdle / time.Second),
		}},
	}
	if n.LocalAddress.IsValid() {
		p.Transport.LocalAddress = n.LocalAddress.String()
	}
	for _, f := range Families(n.Address, s.cfg.IPv4NextHopIPv6) {
		p.AfiSafis = append(p.AfiSafis, &api.AfiSafi{
			Config: &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true},
			PrefixLimits: &api.PrefixLimit{
				Family: apiFamily(f), MaxPrefixes: n.maxPrefixes(),
				// GoBGP warns in the log at this share of the limit.
				ShutdownThresholdPct: prefixLimitWarnPct,
			},
		})
	}
	return p
}

// prefixLimitWarnPct is the share of a neighbor's MaxPrefixes at which a
// warning is logged, before the limit ends the session.
const prefixLimitWarnPct = 80

// originatedOnly is the name of the one policy, applied to both import and
// export: accept what this speaker originates, nothing else.
const originatedOnly = "map646-originated-only"

// setPolicy makes the speaker a stub that never carries anyone's routes
// (RFC 8212: no route exchange without an explicit policy). Import: every
// route received from a neighbor is rejected, so none reaches the RIB and
// none can be passed on to another neighbor (the speaker is not a transit
// AS). Export: only the locally originated paths (the mapped IPv4 prefixes
// and the translation prefix that Update adds) are sent. GoBGP runs the
// import policy on locally added paths too, so both directions accept
// exactly the local paths and reject everything else by default.
func setPolicy(ctx context.Context, srv *server.BgpServer) error {
	err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: originatedOnly,
		Statements: []*api.Statement{{
			Name:       originatedOnly + "-local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		}},
	}})
	if err != nil {
		return err
	}
	for _, dir := range []api.PolicyDirection{api.PolicyDirection_POLICY_DIRECTION_IMPORT, api.PolicyDirection_POLICY_DIRECTION_EXPORT} {
		if err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: globalRIB, Direction: dir, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
			Policies: []*api.Policy{{Name: originatedOnly}},
		}}); err != nil {
			return err
		}
	}
	return nil
}

// globalRIB is GoBGP's name for the global table's policy assignments.
const globalRIB = "global"

func apiFamily(f Family) *api.Family {
	if f == IPv4Unicast {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// path builds the locally originated path for p. The next hop is left
// unspecified so that GoBGP puts the session's own address there for each
// neighbor (RFC 4271 section 5.1.3); for an IPv4 prefix on an IPv6 session
// that yields an MP_REACH_NLRI with an IPv6 next hop (RFC 8950).
func path(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	out := &apiutil.Path{Nlri: nlri, Age: time.Now().Unix(),
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}}
	if p.Addr().Is4() {
		nh, err := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		if err != nil {
			return nil, err
		}
		out.Family, out.Attrs = bgp.RF_IPv4_UC, append(out.Attrs, nh)
	} else {
		mp, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, err
		}
		out.Family, out.Attrs = bgp.RF_IPv6_UC, append(out.Attrs, mp)
	}
	return out, nil
}

// Update makes the announced routes those of the announcement: the union of
// ipv4 and ipv6 while healthy, nothing otherwise. Only the difference to
// what is announced now is sent, so a reload that keeps a prefix does not
// make it flap. GoBGP's path calls take no context, so none is used: a
// withdrawal must go through even when the caller is stopping.
func (s *Speaker) Update(_ context.Context, ipv4, ipv6 []netip.Prefix, healthy bool) error {
	want, err := Desired(ipv4, ipv6, healthy)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("bgp: speaker is closed")
	}
	s.updates++
	s.healthy = healthy
	s.publish()
	add, del := Diff(s.announced, want)
	err = s.apply(add, del)
	if err != nil {
		s.lastErr = err.Error()
	} else {
		s.lastErr = ""
	}
	s.publish()
	if len(add)+len(del) > 0 {
		s.log.Info("bgp announcements changed", "healthy", healthy, "announce", add, "withdraw", del)
	}
	return err
}

// apply withdraws del and announces add, keeping s.announced equal to what
// GoBGP actually holds even when a call fails half way. Called with s.mu held.
//
// Withdrawals are one request naming the paths, not their UUIDs: GoBGP
// finds a UUID by walking the whole RIB, so withdrawing n prefixes one
// UUID at a time cost n², during which a dead translator stayed announced
// and the daemon's loop stood still (docs/benchmarks.md).
// Withdrawing everything (unhealthy, Close) is one DeleteAll. GoBGP
// checks every path of a request before it withdraws any, so a failed
// request has withdrawn nothing.
func (s *Speaker) apply(add, del []netip.Prefix) error {
	var errs []error
	if len(del) > 0 {
		req := apiutil.DeletePathRequest{DeleteAll: len(del) == len(s.announced)}
		for _, p := range del {
			if req.DeleteAll {
				break
			}
			ap, err := path(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("bgp: withdraw %v: %w", p, err))
				continue
			}
			req.Paths = append(req.Paths, ap)
		}
		if req.DeleteAll || len(req.Paths) > 0 {
			if err := s.srv.DeletePath(req); err != nil {
				errs = append(errs, fmt.Errorf("bgp: withdraw %d prefixes: %w", len(del), err))
			} else {
				s.announced = slices.DeleteFunc(s.announced, func(p netip.Prefix) bool {
					_, found := slices.BinarySearchFunc(del, p, comparePrefix)
					return found
				})
			}
		}
	}
	for _, p := range add {
		ap, err := path(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %v: %w", p, err))
			continue
		}
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{ap}}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %v: %w", p, err))
			continue
		}
		i, _ := slices.BinarySearchFunc(s.announced, p, comparePrefix)
		s.announced = slices.Insert(s.announced, i, p)
	}
	return errors.Join(errs...)
}

// Close withdraws every route, then ends each session with a Cease
// NOTIFICATION (RFC 4486 subcode 3, peer de-configured) so that neighbors
// drop this translator at once instead of after the hold time. It returns
// when ctx ends even if that work is not done (an Update still running, a
// busy GoBGP): the work goes on in the background and the error says so.
// Later calls wait for the same work.
func (s *Speaker) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { go s.shutdown() })
	select {
	case <-s.closeDone:
		return s.closeErr
	case <-ctx.Done():
		return fmt.Errorf("bgp: stop: %w", ctx.Err())
	}
}

// flushWait is how long Close lets the sessions send the withdrawals:
// each session's sender takes its queue as soon as it can write.
const flushWait = 200 * time.Millisecond

// shutdown is Close's work; it closes s.closeDone when done.
func (s *Speaker) shutdown() {
	s.limitMu.Lock()
	s.limitClosed = true
	for _, t := range s.limitTimers {
		t.Stop()
	}
	s.limitMu.Unlock()

	s.mu.Lock()
	s.closed = true
	s.publish()
	withdrawn := len(s.announced)
	err := s.apply(nil, slices.Clone(s.announced))
	s.publish()
	s.mu.Unlock()
	if withdrawn > 0 && len(s.cfg.Neighbors) > 0 {
		// Let the sessions send the withdrawals before the Cease: GoBGP
		// drops a session's queue at stop without waiting for it to
		// drain (cleanInfiniteChannel). That no longer leaves the
		// queue's goroutine blocked for good with the queued UPDATEs,
		// one per session per restart, as it did when a neighbour had
		// stopped reading (third_party/eapache-channels).
		time.Sleep(flushWait)
	}
	// The send hold timer asks the server for the sessions: it stops
	// first, while the server still answers.
	s.stopSendHold()
	<-s.sendHoldDone
	s.srv.Stop()
	s.stopWatch()
	s.log.Info("bgp speaker stopped")
	s.closeErr = err
	close(s.closeDone)
}

// publish copies what Status reports of the announcements into s.shown.
// Called with s.mu held.
func (s *Speaker) publish() {
	st := Status{
		LocalAS:   s.cfg.LocalAS,
		RouterID:  s.cfg.RouterID.String(),
		Healthy:   s.healthy,
		Updates:   s.updates,
		LastError: s.lastErr,
		Announced: make([]string, 0, len(s.announced)),
	}
	for _, p := range s.announced {
		st.Announced = append(st.Announced, p.String())
	}
	s.shownMu.Lock()
	s.shown, s.shownClosed = st, s.closed
	s.shownMu.Unlock()
}

// watchSessions logs each session reaching or leaving Established at info
// level (the other FSM steps at debug): that is when routes appear and
// disappear at the neighbor.
func (s *Speaker) watchSessions() error {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopWatch = cancel
	var mu sync.Mutex
	up := map[string]bool{}
	return s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			st := ev.Peer.State
			addr := st.NeighborAddress.String()
			established := st.SessionState == bgp.BGP_FSM_ESTABLISHED
			mu.Lock()
			was := up[addr]
			up[addr] = established
			mu.Unlock()
			level := slog.LevelDebug
			if established != was {
				level = slog.LevelInfo
			}
			s.log.Log(ctx, level, "bgp session "+fsmState(st.SessionState), "neighbor", addr, "remote_as", st.PeerASN)
			if was && !established && st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
				s.prefixLimitHit(addr)
			}
		},
	}, server.WatchPeer())
}

// prefixLimitHit counts a session that GoBGP ended because the neighbor
// sent more than its MaxPrefixes (RFC 4486 Cease subcode 1), and lets the
// session come up again after PrefixLimitRestart.
func (s *Speaker) prefixLimitHit(addr string) {
	restart := s.cfg.PrefixLimitRestart
	if restart == 0 {
		restart = DefaultPrefixLimitRestart
	}
	s.limitMu.Lock()
	defer s.limitMu.Unlock()
	s.limitHits[addr]++
	s.log.Warn("bgp session ended: the neighbor sent more prefixes than max_prefixes allows",
		"neighbor", addr, "restart_in", restart)
	if s.limitClosed || s.limitTimers[addr] != nil {
		return
	}
	s.limitTimers[addr] = time.AfterFunc(restart, func() {
		s.limitMu.Lock()
		defer s.limitMu.Unlock()
		delete(s.limitTimers, addr)
		if s.limitClosed {
			return
		}
		if err := s.srv.EnablePeer(context.Background(), &api.EnablePeerRequest{Address: addr}); err != nil {
			s.log.Error("bgp session cannot restart after the prefix limit", "neighbor", addr, "err", err)
		}
	})
}

// Status is what `map646 stats` and the metrics show about the speaker.
type Status struct {
	LocalAS   uint32           `json:"local_as"`
	RouterID  string           `json:"router_id"`
	Healthy   bool             `json:"healthy"`
	Updates   uint64           `json:"updates"`
	LastError string           `json:"last_error,omitempty"`
	Announced []string         `json:"announced"`
	Neighbors []NeighborStatus `json:"neighbors"`
	// NeighborsStale is true when GoBGP did not list the sessions within
	// statusWait: Neighbors are those it listed last (peerQuery).
	NeighborsStale bool `json:"neighbors_stale,omitempty"`
}

// NeighborStatus is one session.
type NeighborStatus struct {
	Address  string `json:"address"`
	RemoteAS uint32 `json:"remote_as"`
	// State is the RFC 4271 FSM state in lower case: idle, connect, active,
	// opensent, openconfirm, established.
	State       string    `json:"state"`
	Since       time.Time `json:"since,omitzero"` // established since, or down since
	Advertised  uint64    `json:"advertised"`     // prefixes sent
	Received    uint64    `json:"received"`       // prefixes received (and ignored: the speaker imports nothing it uses)
	Established bool      `json:"established"`
	Flaps       uint32    `json:"flaps"` // times the session left Established`
	// PrefixLimitHits counts the sessions ended because the neighbor sent
	// more prefixes than its limit.
	PrefixLimitHits uint64 `json:"prefix_limit_hits"`
	// SendHoldExpiries counts the sessions ended because the neighbor
	// accepted no message for the send hold time (RFC 9687).
	SendHoldExpiries uint64 `json:"send_hold_expiries"`
}

// Status reports the sessions and the announced routes.
func (s *Speaker) Status() Status {
	s.shownMu.Lock()
	st, closed := s.shown, s.shownClosed
	st.Announced = slices.Clone(st.Announced)
	s.shownMu.Unlock()
	st.Neighbors = []NeighborStatus{}
	if closed {
		return st
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusWait)
	defer cancel()
	ns, stale := s.peers.neighbors(ctx)
	if ns != nil {
		st.Neighbors = ns
	}
	st.NeighborsStale = stale
	s.limitMu.Lock()
	for i := range st.Neighbors {
		st.Neighbors[i].PrefixLimitHits = s.limitHits[st.Neighbors[i].Address]
		st.Neighbors[i].SendHoldExpiries = s.sendHoldHits[st.Neighbors[i].Address]
	}
	s.limitMu.Unlock()
	slices.SortFunc(st.Neighbors, func(a, b NeighborStatus) int {
		x, _ := netip.ParseAddr(a.Address)
		y, _ := netip.ParseAddr(b.Address)
		return x.Compare(y)
	})
	return st
}

// sessionState names an RFC 4271 section 8.2.2 FSM state as ListPeer
// reports it.
func sessionState(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}

// fsmState names an FSM state as the session events report it, the same
// way as sessionState.
func fsmState(s bgp.FSMState) string {
	switch s {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown(" + strconv.Itoa(int(s)) + ")"
}
