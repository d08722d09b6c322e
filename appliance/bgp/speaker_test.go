package bgp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/map646/map646/internal/testenv"
)

const (
	speakerAS = 64496
	peerAS    = 64500
)

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// freePort returns a TCP port that was free on addr a moment ago.
func freePort(t *testing.T, addr string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		testenv.SkipOrFailf(t, "cannot listen on %s: %v", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// testPeer is a second GoBGP server in this process standing for the
// upstream router: it listens passively on addr:port and accepts the
// speaker from speakerAddr.
type testPeer struct {
	srv *server.BgpServer
}

func startPeer(t *testing.T, addr string, port uint16, speakerAddr string) *testPeer {
	t.Helper()
	return startPeerAS(t, peerAS, "192.0.2.1", addr, port, speakerAddr)
}

// startPeerAS is startPeer for a router in AS as with BGP identifier id.
// GoBGP sends no path back to the router whose identifier it came from, so
// routers that must see each other's paths need distinct identifiers.
func startPeerAS(t *testing.T, as uint32, id, addr string, port uint16, speakerAddr string) *testPeer {
	t.Helper()
	ctx := context.Background()
	srv := server.NewBgpServer(server.LoggerOption(newGoBGPLogger(testLogger(t).With("side", "peer")), nil))
	go srv.Serve()
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: as, RouterId: id, ListenPort: int32(port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	peer := &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: speakerAddr, PeerAsn: speakerAS},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: addr},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: apiFamily(IPv4Unicast), Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: apiFamily(IPv6Unicast), Enabled: true}},
		},
	}
	if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	return &testPeer{srv: srv}
}

// route is what the peer learned for one prefix.
type route struct {
	NextHop string
	ASPath  string
	Age     int64 // when the peer received it, in whole seconds (GoBGP's resolution)
}

func bgpFamily(f Family) bgp.Family {
	if f == IPv4Unicast {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

// rib returns the peer's best paths of both families.
func (p *testPeer) rib(t *testing.T) map[string]route {
	t.Helper()
	out := map[string]route{}
	for _, f := range []Family{IPv4Unicast, IPv6Unicast} {
		err := p.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgpFamily(f)},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				for _, path := range paths {
					if !path.Best {
						continue
					}
					r := route{Age: path.Age}
					for _, a := range path.Attrs {
						switch a := a.(type) {
						case *bgp.PathAttributeNextHop:
							r.NextHop = a.Value.String()
						case *bgp.PathAttributeMpReachNLRI:
							r.NextHop = a.Nexthop.String()
						case *bgp.PathAttributeAsPath:
							for _, seg := range a.Value {
								for _, as := range seg.GetAS() {
									r.ASPath = strings.TrimSpace(r.ASPath + " " + strconv.Itoa(int(as)))
								}
							}
						}
					}
					out[prefix.String()] = r
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// waitRIB polls until the peer's prefixes are exactly want, and returns them.
func (p *testPeer) waitRIB(t *testing.T, want ...string) map[string]route {
	t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := p.rib(t)
		keys := slices.Sorted(maps.Keys(got))
		if slices.Equal(keys, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer RIB = %v, want prefixes %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitEstablished(t *testing.T, s *Speaker) Status {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.Status()
		if len(st.Neighbors) > 0 && !slices.ContainsFunc(st.Neighbors, func(n NeighborStatus) bool { return !n.Established }) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions not established: %+v", st.Neighbors)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer that GoBGP's goroutines may log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTestSpeaker(t *testing.T, cfg Config) *Speaker {
	return newTestSpeakerLog(t, testLogger(t).With("side", "speaker"), cfg)
}

func newTestSpeakerLog(t *testing.T, log *slog.Logger, cfg Config) *Speaker {
	t.Helper()
	s, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// TestSpeakerIPv4Neighbor follows one translator through its life against an
// IPv4 neighbor: announce, become unhealthy, recover, reload, close.
func TestSpeakerIPv4Neighbor(t *testing.T) {
	port := freePort(t, "127.0.0.2")
	peer := startPeer(t, "127.0.0.2", port, "127.0.0.1")
	var logBuf syncBuffer
	s := newTestSpeakerLog(t, slog.New(slog.NewTextHandler(&logBuf, nil)), Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"),
		ConnectRetry: time.Second,
		Neighbors: []Neighbor{{
			Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: port,
			LocalAddress: netip.MustParseAddr("127.0.0.1"),
		}},
	})
	ctx := context.Background()
	v4 := prefixes("198.51.100.0/24", "203.0.113.0/25")
	v6 := prefixes("2001:db8:64::/96")
	if err := s.Update(ctx, v4, v6, true); err != nil {
		t.Fatal(err)
	}
	st := waitEstablished(t, s)
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logBuf.String(), `msg="bgp session established" neighbor=127.0.0.2`); {
		if time.Now().After(deadline) {
			t.Fatalf("no info line for the established session in:\n%s", logBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Neighbors[0].State != "established" || st.Neighbors[0].Address != "127.0.0.2" || st.Neighbors[0].RemoteAS != peerAS {
		t.Errorf("neighbor status = %+v", st.Neighbors[0])
	}

	// The IPv4 neighbor learns the IPv4 prefixes, next hop self, our AS;
	// the translation prefix is for IPv6 neighbors.
	got := peer.waitRIB(t, "198.51.100.0/24", "203.0.113.0/25")
	for p, r := range got {
		if r.NextHop != "127.0.0.1" || r.ASPath != strconv.Itoa(speakerAS) {
			t.Errorf("%s: next hop %s, AS path %q; want 127.0.0.1, %d", p, r.NextHop, r.ASPath, speakerAS)
		}
	}
	if st := s.Status(); !slices.Equal(st.Announced, []string{"198.51.100.0/24", "203.0.113.0/25", "2001:db8:64::/96"}) || !st.Healthy {
		t.Errorf("status announced %v healthy %v", st.Announced, st.Healthy)
	}
	// The metrics endpoint shows the live session and what is announced.
	live := `
# HELP map646_bgp_session_established 1 while the BGP session with the neighbor is Established.
# TYPE map646_bgp_session_established gauge
map646_bgp_session_established{neighbor="127.0.0.2",remote_as="64500"} 1
# HELP map646_bgp_announced_prefixes Prefixes the BGP speaker announces, by address family.
# TYPE map646_bgp_announced_prefixes gauge
map646_bgp_announced_prefixes{family="ipv4"} 2
map646_bgp_announced_prefixes{family="ipv6"} 1
# HELP map646_bgp_healthy 1 while the BGP speaker announces the translator's prefixes (the data path is healthy).
# TYPE map646_bgp_healthy gauge
map646_bgp_healthy 1
`
	if err := testutil.CollectAndCompare(statusCollector(s.Status), strings.NewReader(live),
		"map646_bgp_session_established", "map646_bgp_announced_prefixes", "map646_bgp_healthy"); err != nil {
		t.Error(err)
	}

	// Unhealthy: everything is withdrawn, the session stays up.
	if err := s.Update(ctx, v4, v6, false); err != nil {
		t.Fatal(err)
	}
	peer.waitRIB(t)
	if st := s.Status(); len(st.Announced) != 0 || st.Healthy || !st.Neighbors[0].Established {
		t.Errorf("unhealthy status = %+v", st)
	}

	// Healthy again: announced again.
	if err := s.Update(ctx, v4, v6, true); err != nil {
		t.Fatal(err)
	}
	before := peer.waitRIB(t, "198.51.100.0/24", "203.0.113.0/25")

	// Reload: one prefix replaced; the kept one is not re-sent (its age in
	// the peer's RIB, in whole seconds, does not change), so it does not
	// flap.
	time.Sleep(1100 * time.Millisecond)
	if err := s.Update(ctx, prefixes("198.51.100.0/24", "203.0.113.128/25"), v6, true); err != nil {
		t.Fatal(err)
	}
	after := peer.waitRIB(t, "198.51.100.0/24", "203.0.113.128/25")
	if before["198.51.100.0/24"].Age != after["198.51.100.0/24"].Age {
		t.Errorf("kept prefix was re-announced on reload: age %d -> %d", before["198.51.100.0/24"].Age, after["198.51.100.0/24"].Age)
	}

	// Bad input changes nothing.
	if err := s.Update(ctx, v6, nil, true); err == nil {
		t.Error("IPv6 prefix accepted as IPv4")
	}
	peer.waitRIB(t, "198.51.100.0/24", "203.0.113.128/25")

	// Close: withdrawn and the session torn down.
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	peer.waitRIB(t)
	if err := s.Update(ctx, v4, v6, true); err == nil {
		t.Error("Update after Close succeeded")
	}
}

// TestSpeakerIPv6NeighborExtendedNextHop checks that an IPv6 neighbor gets
// the translation prefix, and, with IPv4NextHopIPv6, the IPv4 prefixes with
// an IPv6 next hop (RFC 8950).
func TestSpeakerIPv6NeighborExtendedNextHop(t *testing.T) {
	for _, extNH := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv4_nexthop_ipv6=%v", extNH), func(t *testing.T) {
			port := freePort(t, "::1")
			peer := startPeer(t, "::1", port, "::1")
			s := newTestSpeaker(t, Config{
				LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"),
				ConnectRetry: time.Second, IPv4NextHopIPv6: extNH,
				Neighbors: []Neighbor{{Address: netip.MustParseAddr("::1"), RemoteAS: peerAS, Port: port}},
			})
			if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), prefixes("2001:db8:64::/96"), true); err != nil {
				t.Fatal(err)
			}
			waitEstablished(t, s)
			want := []string{"2001:db8:64::/96"}
			if extNH {
				want = append(want, "198.51.100.0/24")
			}
			for p, r := range peer.waitRIB(t, want...) {
				if r.NextHop != "::1" {
					t.Errorf("%s: next hop %s, want ::1", p, r.NextHop)
				}
			}
		})
	}
}
