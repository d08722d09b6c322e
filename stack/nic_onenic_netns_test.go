package stack

import (
	"context"
	"fmt"
	"testing"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/stack/xlat"
)

// TestNetnsNICOneNIC: NIC mode with one NIC for both sides (IPv4 == IPv6
// in the config): the client and the server are behind the same link,
// every socket of the NIC is a queue of its own (no pair), and with two
// queues the fanout group steers with the tun's steering program, so that
// a request and its translated reply, both read from the one NIC, are read
// by the same queue; with one queue there is no program and the exchange
// still works.
func TestNetnsNICOneNIC(t *testing.T) {
	for _, queues := range []int{1, 2} {
		t.Run(fmt.Sprintf("queues=%d", queues), func(t *testing.T) {
			netnstest.Require(t, "dp-")
			xns := netnstest.New(t, "dp-1nic-")
			peer := netnstest.New(t, "dp-1peer-")
			netnstest.Veth(t, xns, "x1", peer, "p1")
			// The peer is the IPv4 client and the IPv6 server at once.
			for _, c := range [][]string{
				{"sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
				{"ip", "addr", "add", "203.0.113.2/28", "dev", "p1"},
				{"ip", "addr", "add", clientV4 + "/32", "dev", "lo"},
				{"ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1", "src", clientV4},
				{"ip", "addr", "add", "2001:db8:ffff::2/64", "dev", "p1", "nodad"},
				{"ip", "addr", "add", serverV6 + "/128", "dev", "lo", "nodad"},
				{"ip", "route", "add", prefixV6, "via", "2001:db8:ffff::1", "src", serverV6},
			} {
				peer.Run(c...)
			}
			for _, c := range [][]string{
				{"sysctl", "-qw", "net.ipv4.ip_forward=0", "net.ipv6.conf.all.forwarding=0"},
				{"ip", "addr", "add", "203.0.113.1/28", "dev", "x1"},
				{"ip", "addr", "add", "2001:db8:ffff::1/64", "dev", "x1", "nodad"},
				{"ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.2"},
				{"ip", "route", "add", "2001:db8:6::/64", "via", "2001:db8:ffff::2"},
				{"ip", "-6", "route", "add", "blackhole", prefixV6},
			} {
				xns.Run(c...)
			}
			cfg := *testEngine(t).Config()
			cfg.Policy.IPv4MTU, cfg.Policy.IPv6MTU = 1500, 1500
			cfg.Policy.DecrementTTL = true
			eng, err := xlat.NewEngine(&cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var d *Datapath
			if err := xns.Do(func() (err error) {
				d, err = ServeNIC(ctx, eng, NICConfig{IPv4: "x1", IPv6: "x1", Queues: queues, SteerPrefix: nicSteerPrefix}, nil)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cancel()
				if err := d.Wait(); err != nil {
					t.Errorf("data path: %v", err)
				}
			}()
			qs := d.handler.queues
			if len(qs) != queues {
				t.Fatalf("%d handler queues, want %d (one per socket of the one NIC)", len(qs), queues)
			}

			port := startUDPEcho(t, peer)
			reads := func() []uint64 {
				r := make([]uint64, len(qs))
				for i, q := range qs {
					r[i] = q.stats.Reads.Load()
				}
				return r
			}
			perQueue := make([]int, queues)
			split := 0
			// 32 flows: with two queues, the chance that the steering
			// puts all on one is 2^-31.
			for i := range 32 {
				c := dialServerUDP(t, peer, port)
				before := reads()
				if _, err := udpExchange(c, []byte(fmt.Sprintf("flow %d", i))); err != nil {
					t.Fatalf("flow %d: %v", i, err)
				}
				c.Close()
				after := reads()
				var total uint64
				on := -1
				for q := range qs {
					dq := after[q] - before[q]
					total += dq
					if dq > 0 && dq == total {
						on = q
					}
				}
				// A loaded machine can make udpExchange send its request
				// again after 2 s: then both tries' requests and replies
				// were read, on one queue if steering paired them.
				switch {
				case total < 2 || total%2 != 0:
					t.Fatalf("flow %d: queues read %d packets in all, want 2 per try (request and reply)", i, total)
				case on < 0:
					split++
				default:
					perQueue[on]++
				}
			}
			t.Logf("exchanges per queue %v, split between queues %d", perQueue, split)
			if split > 0 {
				t.Errorf("%d of 32 exchanges had their request and reply read by different queues of the one NIC", split)
			}
			for q, n := range perQueue {
				if n == 0 {
					t.Errorf("queue %d read no exchange: no spread (%v)", q, perQueue)
				}
			}
		})
	}
}
