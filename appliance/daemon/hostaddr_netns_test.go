package daemon

import (
	"net"
	"strconv"
	"testing"
	"time"
)

// TestHostAddressesUnreachableThroughPrefix (host mode): a mapped server
// cannot reach the translator host's own IPv4 addresses through the
// prefix, neither the uplink's (there before the start, in no interface
// block) nor one added to another interface after the start; a TCP
// service of the host listening on every address stays out of its reach,
// such packets are counted as own_address (broadcast for the directed
// broadcast address of the new subnet), and an address removed is an
// ordinary destination again. Mapped traffic still passes.
func TestHostAddressesUnreachableThroughPrefix(t *testing.T) {
	tp := newTopo(t)
	d := tp.startDaemon(t, tp.config(t, "map646.hcl", nil))
	defer func() { _ = d.signal(t, 15) }()

	// The host's service, on every address of the translator's namespace.
	var ln net.Listener
	if err := tp.x.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("host\n"))
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	// dial connects from the mapped server 2001:db8:6::10 to dst.
	dial := func(dst string) error {
		return tp.srv.Do(func() error {
			dl := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP("2001:db8:6::10")}}
			c, err := dl.Dial("tcp6", net.JoinHostPort(dst, port))
			if err != nil {
				return err
			}
			c.Close()
			return nil
		})
	}
	ownDrops := func() uint64 {
		st, err := QueryStats(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range st.Drops {
			if c.Kind == "own_address" && c.Dir == "6to4" {
				n += c.Value
			}
		}
		return n
	}

	// The uplink's address (dmx4 192.0.2.1/24), there before the start.
	const uplink = "2001:db8:64::c000:201"
	if err := dial(uplink); err == nil {
		t.Fatalf("the host's service reached through %s\n%s", uplink, d.out)
	}
	waitFor(t, "the refused connection counted as own_address", func() bool { return ownDrops() > 0 })
	if sent, recv := ping(t, tp.cli, "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"); recv != sent {
		t.Fatalf("mapped traffic: %d/%d answered\n%s", recv, sent, d.out)
	}

	// An address added to another interface after the start.
	tp.x.MustRun(t, "ip", "link", "add", "dmd0", "type", "veth", "peer", "name", "dmd1")
	tp.x.MustRun(t, "ip", "addr", "add", "203.0.113.5/24", "dev", "dmd0")
	tp.x.MustRun(t, "ip", "link", "set", "dmd0", "up")
	const added = "2001:db8:64::cb00:7105" // 203.0.113.5
	deadline := time.Now().Add(5 * time.Second)
	for dial(added) == nil { // until the daemon has the event
		if time.Now().After(deadline) {
			t.Fatalf("the host's service still reached through %s 5 s after its address was added\n%s", added, d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := ownDrops()
	for range 3 {
		if err := dial(added); err == nil {
			t.Fatalf("the host's service reached through %s again", added)
		}
	}
	waitFor(t, "the refused connections counted as own_address", func() bool { return ownDrops() > before })

	// Its subnet's directed broadcast address.
	var bc, host *net.UDPConn
	err := tp.srv.Do(func() (err error) {
		src := &net.UDPAddr{IP: net.ParseIP("2001:db8:6::10")}
		if bc, err = net.DialUDP("udp6", src, &net.UDPAddr{IP: net.ParseIP("2001:db8:64::cb00:71ff"), Port: 9}); err != nil {
			return err
		}
		host, err = net.DialUDP("udp6", src, &net.UDPAddr{IP: net.ParseIP(added), Port: 9})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	defer host.Close()
	stat := func(kind, dir string) uint64 {
		st, err := QueryStats(d.sock)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range append(st.Drops, st.Packets...) {
			if c.Kind == kind && c.Dir == dir {
				n += c.Value
			}
		}
		return n
	}
	waitFor(t, "a datagram to the directed broadcast address counted as broadcast", func() bool {
		_, _ = bc.Write([]byte("x"))
		return stat("broadcast", "6to4") > 0
	})

	// Removed, the address is translated like any other.
	tp.x.MustRun(t, "ip", "addr", "del", "203.0.113.5/24", "dev", "dmd0")
	udp := stat("udp", "6to4")
	waitFor(t, "a datagram to the removed address translated", func() bool {
		_, _ = host.Write([]byte("x"))
		return stat("udp", "6to4") > udp
	})
	if err := dial(uplink); err == nil {
		t.Fatal("the uplink's address reachable after another one went")
	}
}
