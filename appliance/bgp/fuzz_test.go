package bgp

import (
	"net/netip"
	"testing"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// fuzzSeeds are well-formed messages of each type a neighbor sends (RFC
// 4271 section 4): the fuzzer mutates them into the malformed ones.
func fuzzSeeds(t testing.TB) [][]byte {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	prefix := func(s string) bgp.PathNLRI {
		t.Helper()
		p, err := bgp.NewIPAddrPrefix(netip.MustParsePrefix(s))
		must(err)
		return bgp.PathNLRI{NLRI: p}
	}
	open, err := bgp.NewBGPOpenMessage(64512, 90, netip.MustParseAddr("192.0.2.1"), []bgp.OptionParameterInterface{
		bgp.NewOptionParameterCapability([]bgp.ParameterCapabilityInterface{
			bgp.NewCapMultiProtocol(bgp.RF_IPv4_UC),
			bgp.NewCapMultiProtocol(bgp.RF_IPv6_UC),
			bgp.NewCapRouteRefresh(),
			bgp.NewCapFourOctetASNumber(4200000000),
			bgp.NewCapExtendedNexthop([]*bgp.CapExtendedNexthopTuple{bgp.NewCapExtendedNexthopTuple(bgp.RF_IPv4_UC, bgp.AFI_IP6)}),
			bgp.NewCapAddPath([]*bgp.CapAddPathTuple{bgp.NewCapAddPathTuple(bgp.RF_IPv4_UC, bgp.BGP_ADD_PATH_BOTH)}),
			bgp.NewCapGracefulRestart(false, false, 120, []*bgp.CapGracefulRestartTuple{bgp.NewCapGracefulRestartTuple(bgp.RF_IPv4_UC, true)}),
		}),
	})
	must(err)
	nh, err := bgp.NewPathAttributeNextHop(netip.MustParseAddr("192.0.2.1"))
	must(err)
	v4 := bgp.NewBGPUpdateMessage(
		[]bgp.PathNLRI{prefix("198.51.100.0/24")},
		[]bgp.PathAttributeInterface{
			bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
			bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, []uint32{64512, 4200000000})}),
			nh,
			bgp.NewPathAttributeMultiExitDisc(10),
			bgp.NewPathAttributeCommunities([]uint32{0xfde80001}),
			bgp.NewPathAttributeLargeCommunities([]*bgp.LargeCommunity{bgp.NewLargeCommunity(64512, 1, 2)}),
		},
		[]bgp.PathNLRI{prefix("203.0.113.0/24")})
	reach6, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{prefix("2001:db8:6::/64")}, netip.MustParseAddr("2001:db8::1"))
	must(err)
	unreach6, err := bgp.NewPathAttributeMpUnreachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{prefix("2001:db8:7::/48")})
	must(err)
	v6 := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_EGP),
		bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{bgp.NewAsPathParam(bgp.BGP_ASPATH_ATTR_TYPE_SET, []uint16{64512, 64513})}),
		reach6, unreach6,
	}, nil)
	// An IPv4 prefix with an IPv6 next hop (RFC 8950).
	reach4, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv4_UC, []bgp.PathNLRI{prefix("198.51.100.0/24")}, netip.MustParseAddr("2001:db8::1"))
	must(err)
	v4v6 := bgp.NewBGPUpdateMessage(nil, []bgp.PathAttributeInterface{
		bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP),
		bgp.NewPathAttributeAsPath(nil),
		reach4,
	}, nil)
	msgs := []*bgp.BGPMessage{
		open, v4, v6, v4v6, as4PathBeforeASPath(t, 64500, nh),
		bgp.NewBGPKeepAliveMessage(),
		bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_CEASE, bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN, append([]byte{5}, "bye!!"...)),
		bgp.NewBGPNotificationMessage(bgp.BGP_ERROR_UPDATE_MESSAGE_ERROR, bgp.BGP_ERROR_SUB_MALFORMED_ATTRIBUTE_LIST, nil),
		bgp.NewBGPRouteRefreshMessage(uint16(bgp.AFI_IP), 0, uint8(bgp.SAFI_UNICAST)),
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := m.Serialize()
		if err != nil {
			t.Fatalf("seed %v: %v", m.Header.Type, err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzBGPMessage feeds a neighbor's hostile bytes through what the
// speaker's GoBGP sessions do with a received message (its FSM,
// pkg/server/fsm.go recvMessageWithError and opensent): parse the header
// and body (RFC 4271 section 4) with ADD-PATH (RFC 7911) negotiated or
// not and with a neighbor that has or lacks 4-octet AS numbers (RFC 6793), validate the message, an OPEN against this speaker's AS and
// identifier (section 6.2), an UPDATE's attributes for the families the
// speaker enables (section 6.3, RFC 7606). A malformed message must come
// back as an error, which ends only that session; a panic would end the
// daemon and with it every translated flow.
func FuzzBGPMessage(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	rfs := map[bgp.Family]bgp.BGPAddPathMode{bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_NONE, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_NONE}
	addPath := &bgp.MarshallingOption{AddPath: map[bgp.Family]bgp.BGPAddPathMode{
		bgp.RF_IPv4_UC: bgp.BGP_ADD_PATH_BOTH, bgp.RF_IPv6_UC: bgp.BGP_ADD_PATH_BOTH}}
	twoByteAS := &bgp.MarshallingOption{AddPath: rfs, Use2ByteAS: true}
	myID := netip.MustParseAddr("192.0.2.254")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, opts := range [][]*bgp.MarshallingOption{nil, {addPath}, {twoByteAS}} {
			var hd bgp.BGPHeader
			if hd.DecodeFromBytes(data) != nil {
				return
			}
			if int(hd.Len) > len(data) || hd.Len < bgp.BGP_HEADER_LENGTH {
				return // the FSM reads exactly hd.Len bytes, or fails the read
			}
			m, err := bgp.ParseBGPBody(&hd, data[bgp.BGP_HEADER_LENGTH:hd.Len], opts...)
			if m == nil {
				continue
			}
			// GoBGP's FSM (fsm.go handlingError) asserts that the
			// error of an UPDATE parsed this far is a MessageError:
			// anything else would panic there.
			if _, ok := err.(*bgp.MessageError); err != nil && m.Header.Type == bgp.BGP_MSG_UPDATE && !ok {
				t.Fatalf("UPDATE error %T %v is not a *bgp.MessageError: GoBGP's FSM would panic", err, err)
			}
			// RFC 7606: an UPDATE whose error is handled by
			// treat-as-withdraw or attribute discard goes on into
			// the FSM; anything else resets the session.
			if me, ok := err.(*bgp.MessageError); err != nil && (!ok || me.ErrorHandling == bgp.ERROR_HANDLING_SESSION_RESET || me.ErrorHandling == bgp.ERROR_HANDLING_NONE) {
				continue
			}
			switch body := m.Body.(type) {
			case *bgp.BGPOpen:
				_, _ = bgp.ValidateOpenMsg(body, 64512, 64496, myID)
				_, _ = bgp.ValidateOpenMsg(body, 0, 64496, myID)
			case *bgp.BGPUpdate:
				for _, ebgp := range []bool{true, false} {
					_, _ = bgp.ValidateUpdateMsg(body, rfs, ebgp, false, false)
				}
				// Debug logs print the attributes; the RIB
				// serializes them again.
				for _, a := range body.PathAttributes {
					_ = a.String()
				}
				_, _ = m.Serialize(opts...)
			case *bgp.BGPNotification:
				_, _ = m.Serialize()
			}
		}
	})
}
