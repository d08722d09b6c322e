package bgp

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// as4PathBeforeASPath is the UPDATE of GHSA-8rxh-r2p6-7f2q (CVE-2026-41643)
// from a neighbor in AS as that lacks 4-octet AS numbers (RFC 6793): ORIGIN,
// NEXT_HOP, an AS4_PATH, and the AS_PATH last. GoBGP v3 merges AS4_PATH into
// AS_PATH (RFC 6793 section 4.2.3) assuming AS_PATH came first and indexes
// out of range: a panic in its receive goroutine, which ends the process.
func as4PathBeforeASPath(t testing.TB, as uint16, nh *bgp.PathAttributeNextHop) *bgp.BGPMessage {
	t.Helper()
	p, err := bgp.NewIPAddrPrefix(netip.MustParsePrefix("203.0.113.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	return bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		nh,
		bgp.NewPathAttributeAs4Path([]*bgp.As4PathParam{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{uint32(as)})}),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAsPathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint16{as})}),
	}, []bgp.PathNLRI{{NLRI: p}})
}

// rawNeighbor is a configured neighbor that speaks BGP by hand, so that it
// can send what no correct implementation would.
type rawNeighbor struct {
	conn   net.Conn
	notify chan uint8 // error code of each NOTIFICATION the speaker sent
	closed chan struct{}
}

// acceptRaw accepts the speaker's session on ln and completes the handshake
// as a 2-octet-AS-only router (RFC 6793: no capability 65) in AS peerAS.
func acceptRaw(t *testing.T, ln net.Listener) *rawNeighbor {
	t.Helper()
	n := acceptRawMode(t, ln)
	go n.read()
	return n
}

// acceptRawMode is acceptRaw without the reader: what the speaker sends
// stays in the socket, whose buffers fill, unless the caller reads it.
func acceptRawMode(t *testing.T, ln net.Listener) *rawNeighbor {
	t.Helper()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the speaker did not connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	open, err := bgp.NewBGPOpenMessage(peerAS, 30, netip.MustParseAddr("192.0.2.1"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC)})})
	if err != nil {
		t.Fatal(err)
	}
	n := &rawNeighbor{conn: c, notify: make(chan uint8, 4), closed: make(chan struct{})}
	n.send(t, open)
	n.send(t, bgp.NewBGPKeepAliveMessage())
	go func() { // keep the hold timer fed
		ka, _ := bgp.NewBGPKeepAliveMessage().Serialize()
		for {
			select {
			case <-n.closed:
				return
			case <-time.After(time.Second):
				if _, err := c.Write(ka); err != nil {
					return
				}
			}
		}
	}()
	return n
}

func (n *rawNeighbor) send(t *testing.T, m *bgp.BGPMessage) {
	t.Helper()
	b, err := m.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.conn.Write(b); err != nil {
		t.Fatal(err)
	}
}

// read drains what the speaker sends and reports NOTIFICATIONs.
func (n *rawNeighbor) read() {
	defer close(n.closed)
	r := bufio.NewReader(n.conn)
	hdr := make([]byte, bgp.BGP_HEADER_LENGTH)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		l := int(hdr[16])<<8 | int(hdr[17])
		if l < bgp.BGP_HEADER_LENGTH {
			return
		}
		body := make([]byte, l-bgp.BGP_HEADER_LENGTH)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		if hdr[18] == bgp.BGP_MSG_NOTIFICATION && len(body) > 0 {
			select {
			case n.notify <- body[0]:
			default:
			}
		}
	}
}

// TestSpeakerSurvivesAS4PathBeforeASPath is the regression test of
// GHSA-8rxh-r2p6-7f2q: a configured neighbor sends the crafted UPDATE. The
// process survives (with GoBGP v3 the test binary dies of the panic); the
// UPDATE is parsed, treated as a withdraw (RFC 7606) or the session reset,
// and never imported; the other neighbor's session never notices and keeps
// the translator's routes.
func TestSpeakerSurvivesAS4PathBeforeASPath(t *testing.T) {
	portA, portB := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", portA))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b := startPeer(t, "127.0.0.3", portB, "127.0.0.1")
	s := newTestSpeaker(t, Config{
		LocalAS: speakerAS, RouterID: netip.MustParseAddr("192.0.2.2"), ConnectRetry: time.Second,
		Neighbors: []Neighbor{
			{Address: netip.MustParseAddr("127.0.0.2"), RemoteAS: peerAS, Port: portA, LocalAddress: netip.MustParseAddr("127.0.0.1")},
			{Address: netip.MustParseAddr("127.0.0.3"), RemoteAS: peerAS, Port: portB, LocalAddress: netip.MustParseAddr("127.0.0.1")},
		},
	})
	if err := s.Update(context.Background(), prefixes("198.51.100.0/24"), nil, true); err != nil {
		t.Fatal(err)
	}
	a := acceptRaw(t, ln)
	waitNeighbor(t, s, "127.0.0.2", "established", func(n NeighborStatus) bool { return n.Established })
	waitNeighbor(t, s, "127.0.0.3", "established", func(n NeighborStatus) bool { return n.Established })
	b.waitRIB(t, "198.51.100.0/24")

	nh, err := bgp.NewPathAttributeNextHop(netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	a.send(t, as4PathBeforeASPath(t, peerAS, nh))

	// Give the speaker time to process the UPDATE (or to die of it), and
	// watch for a session reset meanwhile.
	select {
	case code := <-a.notify:
		t.Logf("session reset by the speaker: NOTIFICATION error code %d", code)
	case <-a.closed:
		t.Log("session closed by the speaker")
	case <-time.After(3 * time.Second):
		t.Log("session kept: the UPDATE was treated as withdraw or its AS4_PATH discarded")
	}
	st := s.Status()
	if len(st.Announced) != 1 || st.Announced[0] != "198.51.100.0/24" || !st.Healthy {
		t.Errorf("speaker status after the crafted UPDATE: %+v", st)
	}
	for _, n := range st.Neighbors {
		if n.Address == "127.0.0.3" && (!n.Established || n.Flaps != 0) {
			t.Errorf("the other session was disturbed: %+v", n)
		}
	}
	// Whatever GoBGP kept of it in the neighbor's Adj-RIB-In, the import
	// policy keeps it out of the RIB, so it goes nowhere.
	if err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(prefix bgp.NLRI, _ []*apiutil.Path) {
			if prefix.String() != "198.51.100.0/24" {
				t.Errorf("speaker RIB has %s", prefix)
			}
		}); err != nil {
		t.Fatal(err)
	}
	b.waitRIB(t, "198.51.100.0/24")
}
