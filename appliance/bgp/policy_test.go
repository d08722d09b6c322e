package bgp

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/map646/map646/appliance/config"
)

// TestPolicyAssignments checks the policy a new speaker runs with: import
// and export accept only locally originated paths and reject the rest
// (RFC 8212).
func TestPolicyAssignments(t *testing.T) {
	s := newTestSpeaker(t, Config{LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2")})
	ctx := context.Background()
	got := map[api.PolicyDirection]*api.PolicyAssignment{}
	if err := s.srv.ListPolicyAssignment(ctx, &api.ListPolicyAssignmentRequest{Name: globalRIB}, func(a *api.PolicyAssignment) {
		got[a.Direction] = a
	}); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []api.PolicyDirection{api.PolicyDirection_POLICY_DIRECTION_IMPORT, api.PolicyDirection_POLICY_DIRECTION_EXPORT} {
		a := got[dir]
		if a == nil || a.DefaultAction != api.RouteAction_ROUTE_ACTION_REJECT || len(a.Policies) != 1 || a.Policies[0].Name != originatedOnly {
			t.Errorf("%v assignment %v: want default reject and policy %s", dir, a, originatedOnly)
		}
	}
	var stmts []*api.Statement
	if err := s.srv.ListPolicy(ctx, &api.ListPolicyRequest{Name: originatedOnly}, func(p *api.Policy) {
		stmts = append(stmts, p.Statements...)
	}); err != nil {
		t.Fatal(err)
	}
	if len(stmts) != 1 {
		t.Fatalf("policy statements %v, want one", stmts)
	}
	c, a := stmts[0].GetConditions(), stmts[0].GetActions()
	if c.GetRouteType() != api.Conditions_ROUTE_TYPE_LOCAL || a.GetRouteAction() != api.RouteAction_ROUTE_ACTION_ACCEPT ||
		c.GetPrefixSet() != nil || c.GetNeighborSet() != nil || c.GetAsPathSet() != nil {
		t.Errorf("statement %v: want only 'route type local: accept'", stmts[0])
	}
}

// TestPeerPrefixLimit checks the per-neighbor max-prefix limit handed to
// GoBGP, for every negotiated family, with the default when unset.
func TestPeerPrefixLimit(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        Neighbor
		extNH    bool
		families int
		want     uint32
	}{
		{"ipv4 default", Neighbor{Address: netip.MustParseAddr("192.0.2.1")}, false, 1, config.DefaultBGPMaxPrefixes},
		{"ipv4 set", Neighbor{Address: netip.MustParseAddr("192.0.2.1"), MaxPrefixes: 7}, false, 1, 7},
		{"ipv6 default", Neighbor{Address: netip.MustParseAddr("2001:db8::1")}, false, 1, config.DefaultBGPMaxPrefixes},
		{"ipv6 with ipv4 set", Neighbor{Address: netip.MustParseAddr("2001:db8::1"), MaxPrefixes: 100000}, true, 2, 100000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Speaker{cfg: Config{IPv4NextHopIPv6: tc.extNH}}
			p := s.peer(tc.n)
			if len(p.AfiSafis) != tc.families {
				t.Fatalf("%d families, want %d", len(p.AfiSafis), tc.families)
			}
			for _, af := range p.AfiSafis {
				l := af.GetPrefixLimits()
				if l.GetMaxPrefixes() != tc.want || l.GetShutdownThresholdPct() != prefixLimitWarnPct ||
					l.GetFamily().GetAfi() != af.GetConfig().GetFamily().GetAfi() {
					t.Errorf("family %v: prefix limit %v, want %d", af.GetConfig().GetFamily(), l, tc.want)
				}
			}
		})
	}
	if config.DefaultBGPMaxPrefixes == 0 {
		t.Error("default max prefixes is 0: GoBGP reads that as no limit")
	}
}

// originate makes the test peer announce prefixes of its own.
func (p *testPeer) originate(t *testing.T, ps ...string) {
	t.Helper()
	for _, s := range ps {
		ap, err := path(netip.MustParsePrefix(s))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{ap}}); err != nil {
			t.Fatal(err)
		}
	}
}

// withdrawAll makes the test peer withdraw everything it originated.
func (p *testPeer) withdrawAll(t *testing.T) {
	t.Helper()
	for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
		fam := bgpFamily(f)
		if err := p.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true, DeleteFamily: &fam}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitNeighbor polls the speaker until cond holds for the neighbor at addr.
func waitNeighbor(t *testing.T, s *Speaker, addr, what string, cond func(NeighborStatus) bool) NeighborStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := s.Status()
		i := slices.IndexFunc(st.Neighbors, func(n NeighborStatus) bool { return n.Address == addr })
		if i >= 0 && cond(st.Neighbors[i]) {
			return st.Neighbors[i]
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbor %s: not %s: %+v", addr, what, st.Neighbors)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSpeakerNoTransit peers the speaker with two routers in different ASes
// and with different identifiers (so that neither AS-path loop detection
// nor GoBGP's split horizon can hide a leak) that each announce a prefix of
// their own: each must learn only the translator's prefixes, never the
// other router's (the speaker is not a transit AS), and the speaker's own
// RIB holds none of them.
func TestSpeakerNoTransit(t *testing.T) {
	const peerASB = 64501
	portA, portB := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	a := startPeer(t, "127.0.0.2", portA, "127.0.0.1")
	b := startPeerAS(t, peerASB, "192.0.2.3", "127.0.0.3", portB, "127.0.0.1")
	a.originate(t, "192.0.2.0/25")
	b.originate(t, "192.0.2.128/25")
	s := newTestSpeaker(t, Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"), ConnectRetry: time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: portA, LocalAddress: netip.MustParseAddr("127.0.0.1")},
			{Address: netip.MustParseAddr("127.0.0.3"), RemoteAS: peerASB, Port: portB, LocalAddress: netip.MustParseAddr("127.0.0.1")},
		},
	})
	if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), prefixes("2001:db8:64::/96"), true); err != nil {
		t.Fatal(err)
	}
	// Both routers' prefixes have reached the speaker...
	for _, addr := range []string{"127.0.0.2", "127.0.0.3"} {
		waitNeighbor(t, s, addr, "established with its route received", func(n NeighborStatus) bool {
			return n.Established && n.Received == 1
		})
	}
	// ...and neither went further: each router has its own prefix and the
	// translator's, not the other router's.
	a.waitRIB(t, "192.0.2.0/25", "198.51.100.0/24")
	b.waitRIB(t, "192.0.2.128/25", "198.51.100.0/24")
	time.Sleep(time.Second) // a re-announcement would take well under this on loopback
	a.waitRIB(t, "192.0.2.0/25", "198.51.100.0/24")
	b.waitRIB(t, "192.0.2.128/25", "198.51.100.0/24")

	for _, n := range s.Status().Neighbors {
		if n.Advertised != 1 {
			t.Errorf("neighbor %s was sent %d prefixes, want 1 (198.51.100.0/24)", n.Address, n.Advertised)
		}
	}

	// The speaker's RIB holds only what it originates.
	for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
		if err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgpFamily(f)}, func(prefix bgp.NLRI, _ []*apiutil.Path) {
			if p := prefix.String(); p != "198.51.100.0/24" && p != "2001:db8:64::/96" {
				t.Errorf("speaker RIB has %s, learned from a neighbor", p)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSpeakerMaxPrefixes floods the speaker from one router with more
// routes than its limit: the session with that router ends, is counted,
// comes up again after PrefixLimitRestart and is ended again, while the
// speaker's other session stays up. Once the router sends no more than the
// limit, the session comes back and stays.
func TestSpeakerMaxPrefixes(t *testing.T) {
	portA, portB := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	a := startPeer(t, "127.0.0.2", portA, "127.0.0.1")
	b := startPeer(t, "127.0.0.3", portB, "127.0.0.1")
	var flood []string
	for i := range 12 {
		flood = append(flood, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(16 * i)}), 28).String())
	}
	a.originate(t, flood...)
	var logBuf syncBuffer
	s := newTestSpeakerLog(t, slog.New(slog.NewTextHandler(&logBuf, nil)), Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"), ConnectRetry: time.Second,
		PrefixLimitRestart: 2 * time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: portA, LocalAddress: netip.MustParseAddr("127.0.0.1"), MaxPrefixes: 10},
			{Address: netip.MustParseAddr("127.0.0.3"), RemoteAS: peerAS, Port: portB, LocalAddress: netip.MustParseAddr("127.0.0.1"), MaxPrefixes: 10},
		},
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("speaker log:\n%s", logBuf.String())
		}
	})
	if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), nil, true); err != nil {
		t.Fatal(err)
	}
	waitNeighbor(t, s, "127.0.0.3", "established", func(n NeighborStatus) bool { return n.Established })
	b.waitRIB(t, "198.51.100.0/24")
	// 12 > 10 routes: ended, restarted after 2 s, ended again.
	start := time.Now()
	waitNeighbor(t, s, "127.0.0.2", "ended twice by the limit", func(n NeighborStatus) bool { return n.PrefixLimitHits >= 2 })
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("session ended twice in %v: the restart did not wait PrefixLimitRestart", d)
	}
	if !strings.Contains(logBuf.String(), "more prefixes than max_prefixes allows") {
		t.Errorf("no warning about the limit in the log:\n%s", logBuf.String())
	}
	for range 3 {
		n := waitNeighbor(t, s, "127.0.0.2", "any state", func(NeighborStatus) bool { return true })
		if n.Established && n.Received > 10 {
			t.Fatalf("session established holding %d routes, limit 10", n.Received)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := waitNeighbor(t, s, "127.0.0.3", "established", func(NeighborStatus) bool { return true }); !n.Established || n.Flaps != 0 || n.PrefixLimitHits != 0 {
		t.Errorf("the other session was disturbed: %+v", n)
	}

	// Router A now sends 10 routes, at the limit: the session comes back
	// and keeps them (ignored).
	a.withdrawAll(t)
	a.originate(t, flood[:10]...)
	n := waitNeighbor(t, s, "127.0.0.2", "back with 10 routes", func(n NeighborStatus) bool { return n.Established && n.Received == 10 })
	time.Sleep(3 * time.Second)
	if m := waitNeighbor(t, s, "127.0.0.2", "still established", func(NeighborStatus) bool { return true }); !m.Established || m.Flaps != n.Flaps || m.PrefixLimitHits != n.PrefixLimitHits {
		t.Errorf("session at the limit did not stay up: %+v then %+v", n, m)
	}
}
