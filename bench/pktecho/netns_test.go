package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// TestForwardsIntact runs the echo for real between a client and a server
// namespace, the router's kernel forwarding off, in both send modes: pings
// (small packets, from the receive ring) and a TCP transfer whose GSO
// super-packets cross whole (recvmsg, then sendmsg or a transmit frame)
// arrive intact; with the transmit ring its frames are reused many times
// over (8 MiB through 64 frames). Without the echo nothing passes.
func TestForwardsIntact(t *testing.T) {
	netnstest.Require(t, "pe")
	c, r, s := netnstest.New(t, "pec"), netnstest.New(t, "per"), netnstest.New(t, "pes")
	netnstest.Veth(t, c, "c0", r, "r0")
	netnstest.Veth(t, r, "r1", s, "s0")
	r.Sysctl("net.ipv6.conf.all.forwarding=0")
	mac := func(ns *netnstest.NS, ifc string) string {
		out := ns.Run("cat", "/sys/class/net/"+ifc+"/address")
		return strings.TrimSpace(out)
	}
	c.Run("ip", "addr", "add", "2001:db8:1::2/64", "dev", "c0", "nodad")
	r.Run("ip", "addr", "add", "2001:db8:1::1/64", "dev", "r0", "nodad")
	r.Run("ip", "addr", "add", "2001:db8:6::1/64", "dev", "r1", "nodad")
	s.Run("ip", "addr", "add", "2001:db8:6::10/64", "dev", "s0", "nodad")
	c.Run("ip", "route", "add", "2001:db8:6::/64", "via", "2001:db8:1::1")
	s.Run("ip", "route", "add", "2001:db8:1::/64", "via", "2001:db8:6::1")
	c.Run("ip", "neigh", "replace", "2001:db8:1::1", "lladdr", mac(r, "r0"), "dev", "c0", "nud", "permanent")
	s.Run("ip", "neigh", "replace", "2001:db8:6::1", "lladdr", mac(r, "r1"), "dev", "s0", "nud", "permanent")
	if _, err := c.Output("ping", "-6", "-c1", "-W1", "2001:db8:6::10"); err == nil {
		t.Fatal("a ping passed with nothing forwarding")
	}
	payload := make([]byte, 8<<20)
	for i := range payload {
		payload[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(payload)
	for _, txRing := range []bool{false, true} {
		frames := 0
		if txRing {
			frames = 64
		}
		var a, b *port
		if err := r.Do(func() (err error) {
			if a, err = open("r0", mac(c, "c0"), frames); err != nil {
				return err
			}
			b, err = open("r1", mac(s, "s0"), frames)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var st [2]stats
		var stop atomic.Bool
		done := make(chan struct{})
		go func() { forward(a, b, &st, &stop); close(done) }()

		if out, err := c.Output("ping", "-6", "-c3", "-i0.2", "-W1", "2001:db8:6::10"); err != nil {
			t.Errorf("txRing %v: ping: %v\n%s", txRing, err, out)
		}
		var ln net.Listener
		if err := s.Do(func() (err error) { ln, err = net.Listen("tcp6", "[2001:db8:6::10]:5201"); return }); err != nil {
			t.Fatal(err)
		}
		got := make(chan [32]byte, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				got <- [32]byte{}
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second))
			h := sha256.New()
			io.Copy(h, conn)
			got <- [32]byte(h.Sum(nil))
		}()
		var conn net.Conn
		if err := c.Do(func() (err error) {
			conn, err = net.DialTimeout("tcp6", "[2001:db8:6::10]:5201", 5*time.Second)
			return
		}); err != nil {
			t.Fatalf("txRing %v: dial: %v", txRing, err)
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(conn, bytes.NewReader(payload)); err != nil {
			t.Errorf("txRing %v: send: %v", txRing, err)
		}
		conn.Close()
		if h := <-got; h != want {
			t.Errorf("txRing %v: the server got other bytes than were sent", txRing)
		}
		ln.Close()
		stop.Store(true)
		<-done
		a.close()
		b.close()
		up := &st[0]
		if up.supers.Load() == 0 || up.sendErrs.Load() != 0 || up.txBusy.Load() != 0 || up.bytes.Load() < uint64(len(payload)) {
			t.Errorf("txRing %v: client to server: %d packets, %d super-packets, %d bytes, %d send errors, %d without a frame",
				txRing, up.packets.Load(), up.supers.Load(), up.bytes.Load(), up.sendErrs.Load(), up.txBusy.Load())
		}
		if st[1].packets.Load() == 0 {
			t.Errorf("txRing %v: nothing forwarded from the server to the client", txRing)
		}
	}
}
