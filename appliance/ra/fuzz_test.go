package ra

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// FuzzSolicitation feeds hostile ICMPv6 messages from the link, as the
// advertiser's socket reads them, to solicitationProblem (RFC 4861
// section 6.1.1): it must answer with a reason, never panic, and call
// valid only a Router Solicitation, code 0, whose options parse.
func FuzzSolicitation(f *testing.F) {
	for _, m := range []ndp.Message{
		&ndp.RouterSolicitation{},
		&ndp.RouterSolicitation{Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 1}},
			&ndp.MTU{MTU: 1500},
			ndp.NewNonce(),
		}},
		&ndp.RouterAdvertisement{CurrentHopLimit: 64, Options: []ndp.Option{&ndp.PrefixInformation{PrefixLength: 64, Prefix: netip.MustParseAddr("2001:db8::")}}},
	} {
		b, err := ndp.MarshalMessage(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(255), false)
	}
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0}, uint8(255), true)
	ll := netip.MustParseAddr("fe80::1")
	f.Fuzz(func(t *testing.T, b []byte, hopLimit uint8, unspecified bool) {
		src := ll
		if unspecified {
			src = netip.IPv6Unspecified()
		}
		cm := &ipv6.ControlMessage{HopLimit: int(hopLimit)}
		switch got := solicitationProblem(b, cm, src); got {
		case "":
			if hopLimit != 255 || len(b) < 8 || b[0] != byte(ipv6.ICMPTypeRouterSolicitation) || b[1] != 0 {
				t.Fatalf("% x with hop limit %d taken for a valid solicitation", b, hopLimit)
			}
			if _, err := ndp.ParseMessage(b); err != nil {
				t.Fatalf("% x taken for a valid solicitation, but: %v", b, err)
			}
		case "hop_limit":
			if hopLimit == 255 {
				t.Fatalf("hop limit 255 refused as %q", got)
			}
		case "invalid":
		default:
			t.Fatalf("unknown reason %q", got)
		}
	})
}
