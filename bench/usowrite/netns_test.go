package main

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// TestFloodReachesTheServer runs the instrument's path for real: a tun in a
// router namespace, forwarding through a veth to the server namespace's
// socket. Every datagram written, one write each or as USO super-packets,
// reaches the server once, intact and in order; a write the tun refuses
// (-mode null) delivers nothing.
func TestFloodReachesTheServer(t *testing.T) {
	netnstest.RequireTun(t, "uw")
	r, s := netnstest.New(t, "uwr"), netnstest.New(t, "uws")
	netnstest.Veth(t, r, "r0", s, "s0")
	r.Sysctl("net.ipv6.conf.all.forwarding=1")
	r.Run("ip", "tuntap", "add", "dev", "uw0", "mode", "tun", "vnet_hdr", "multi_queue")
	r.Run("ip", "link", "set", "uw0", "up")
	r.Run("ip", "addr", "add", "2001:db8:1::1/64", "dev", "r0", "nodad")
	s.Run("ip", "addr", "add", "2001:db8:1::2/64", "dev", "s0", "nodad")
	s.Run("ip", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::1")
	r.Run("ping", "-6", "-c1", "-W2", "2001:db8:1::2") // the neighbour, resolved before the flood
	src, dst := netip.MustParseAddr("2001:db8:2::1"), netip.MustParseAddr("2001:db8:1::2")
	for _, c := range []struct {
		mode  string
		n     int
		total int
		want  uint64
	}{
		{"single", 8, 2000, 2000},
		{"uso", 8, 2000, 2000},
		{"uso", 16, 4000, 4000},
		{"null", 8, 800, 0},
	} {
		var tun, srv int
		if err := r.Do(func() (err error) { tun, err = openTun("uw0"); return }); err != nil {
			t.Fatal(err)
		}
		if err := s.Do(func() (err error) { srv, err = openServer(64 << 20); return }); err != nil {
			unix.Close(tun)
			t.Fatal(err)
		}
		got := make(chan received, 1)
		wait := 3 * time.Second
		if c.want == 0 {
			wait = 300 * time.Millisecond // nothing is coming; look for strays
		}
		deadline := time.Now().Add(wait)
		go func() {
			got <- receive(srv, func(r received) bool {
				return r.got >= uint64(c.total) || time.Now().After(deadline)
			})
		}()
		datagrams, writes, errs := flood(tun, c.mode, c.n, c.total, src, dst)
		res := <-got
		unix.Close(tun)
		unix.Close(srv)
		wantWrites, wantErrs := c.total, 0
		switch c.mode {
		case "uso":
			wantWrites = c.total / c.n
		case "null":
			wantErrs = c.total
		}
		if datagrams != uint64(c.total) || writes != wantWrites || errs != wantErrs {
			t.Errorf("%s n=%d: %d datagrams in %d writes, %d refused; want %d in %d, %d refused", c.mode, c.n, datagrams, writes, errs, c.total, wantWrites, wantErrs)
		}
		if res.got != c.want || res.bad != 0 || res.gaps != 0 || res.next != c.want {
			t.Errorf("%s n=%d: server got %+v, want %d datagrams, none bad, in order", c.mode, c.n, res, c.want)
		}
	}
}
