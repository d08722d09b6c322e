package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// TestRunTapFD: a VM manager (the test) opens a tap in a router namespace
// and hands it to `map646 run` as fd 3 with `fd { ethernet = true }`. The
// router reaches the mapped IPv4 address and the RFC 6052 prefix on-link
// through the tap, so it resolves them with ARP and NS, which the
// translator answers; the translator resolves the router as its gateway
// for both families. Pings and TCP (checked by SHA-256, both ways) cross
// it in both directions, and an ICMP error it makes (Fragmentation
// Needed: the tap's MTU leaves no room for the 20 bytes IPv6 adds) reaches
// the IPv4 client. The tap is handed over as QEMU and Firecracker hand
// one (vnet12: IFF_VNET_HDR with a 12-byte header; map646 finds that out
// and sets the tap's offloads, and the veths' TSO super-packets cross it
// whole) and without a header (plain).
//
//	cli 192.0.2.2 --- 192.0.2.1 rtr tp0 (tap) 203.0.113.14/28, 2001:db8:ff::1/64 ... fd 3: map646
//	                            rtr 2001:db8:6::1 --- 2001:db8:6::10 srv
func TestRunTapFD(t *testing.T) {
	for _, vnet := range []int{0, 12} {
		t.Run(map[int]string{0: "plain", 12: "vnet12"}[vnet], func(t *testing.T) { runTapFD(t, vnet) })
	}
}

// vnetTap creates tap name in ns with IFF_VNET_HDR and a virtio_net_hdr of
// vnet bytes, as a VM manager does, and returns its file (closed when t
// ends).
func vnetTap(t *testing.T, ns *netnstest.NS, name string, vnet int) *os.File {
	t.Helper()
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		f = os.NewFile(uintptr(fd), "tap:"+name)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return err
		}
		return unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet)
	})
	if f != nil {
		t.Cleanup(func() { f.Close() })
	}
	if err != nil {
		t.Fatalf("tap %s: %v", name, err)
	}
	return f
}

func runTapFD(t *testing.T, vnet int) {
	netnstest.RequireTun(t, "dmt")
	cli, rtr, srv := netnstest.New(t, "dmt-c"), netnstest.New(t, "dmt-r"), netnstest.New(t, "dmt-s")
	netnstest.Veth(t, cli, "c0", rtr, "r4")
	netnstest.Veth(t, rtr, "r6", srv, "s0")
	var tap *os.File
	if vnet > 0 {
		tap = vnetTap(t, rtr, "tp0", vnet)
	} else {
		tap = rtr.Tap(t, "tp0")
	}
	for _, c := range []struct {
		ns  *netnstest.NS
		cmd string
	}{
		{cli, "ip addr add 192.0.2.2/24 dev c0"},
		{cli, "ip route add default via 192.0.2.1"},
		{rtr, "ip addr add 192.0.2.1/24 dev r4"},
		{rtr, "ip addr add 2001:db8:6::1/64 dev r6 nodad"},
		{rtr, "sysctl -qw net.ipv6.conf.tp0.accept_dad=0"},
		{rtr, "ip link set tp0 mtu 1500 up"},
		{rtr, "ip addr add 203.0.113.14/28 dev tp0"},
		{rtr, "ip addr add 2001:db8:ff::1/64 dev tp0 nodad"},
		{rtr, "ip route add 198.51.100.10/32 dev tp0"},
		{rtr, "ip -6 route add 2001:db8:64::/96 dev tp0"},
		{rtr, "sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"},
		{srv, "ip addr add 2001:db8:6::10/64 dev s0 nodad"},
		{srv, "ip -6 route add 2001:db8:64::/96 via 2001:db8:6::1"},
	} {
		c.ns.MustRun(t, strings.Fields(c.cmd)...)
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	sock := filepath.Join(dir, "ctl.sock")
	src := `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  ipv4_address = "203.0.113.1"
  fd {
    fd           = 3
    mtu          = 1500
    ethernet     = true
    mac          = "02:00:5e:10:00:01"
    ipv4_gateway = "203.0.113.14"
    ipv6_gateway = "2001:db8:ff::1"
  }
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", rtr.Name, os.Args[0], "run", "-c", cfg, "--control-socket", sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.Stderr = &logs
	run.ExtraFiles = []*os.File{tap}
	exited := startRun(t, run)
	deadline := time.Now().Add(30 * time.Second)
	for runStats(t, sock) == nil {
		select {
		case err := <-exited:
			t.Fatalf("map646 run exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stats within 30 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Ping both ways: IPv4 client to the mapped address, IPv6 server to
	// the client's address in the prefix.
	pingOK := func(ns *netnstest.NS, args ...string) {
		t.Helper()
		out, err := ns.Output(append([]string{"ping", "-n", "-c", "3", "-i", "0.2", "-W", "2"}, args...)...)
		if err != nil || !strings.Contains(out, " 0% packet loss") {
			t.Errorf("ping %v: %v\n%s\nlog:\n%s", args, err, out, logs.String())
		}
	}
	// The daemon polls its links' state; the tap's fd is no link of its
	// namespace it could look up by name, and must not read as down.
	time.Sleep(1500 * time.Millisecond)
	if st := runStats(t, sock); st == nil || !st.Healthy {
		t.Errorf("not healthy: %+v\nlog:\n%s", st, logs.String())
	} else if hasTSO := strings.Contains(st.Offloads, "tso4"); hasTSO != (vnet > 0) {
		t.Errorf("offloads %q with a %d-byte virtio_net_hdr", st.Offloads, vnet)
	}
	pingOK(cli, "198.51.100.10")
	pingOK(srv, "-6", "2001:db8:64::c000:202")

	// The router learned the translator's link address for the mapped
	// address and for the prefix.
	if out := rtr.MustRun(t, "ip", "neigh", "show", "dev", "tp0"); !strings.Contains(out, "198.51.100.10 lladdr 02:00:5e:10:00:01") ||
		!strings.Contains(out, "2001:db8:64::c000:202 lladdr 02:00:5e:10:00:01") {
		t.Errorf("router's neighbours on the tap:\n%s", out)
	}

	// TCP both ways, checked by SHA-256: the client connects to the
	// server, sends 1 MiB and reads 1 MiB back. Each end closes only once
	// its own write returned: a close while its 1 MiB is still being
	// handed to the kernel would cut the other direction short.
	ln := listen(t, srv, "tcp6", "[2001:db8:6::10]:8080")
	up, down := randomBytes(t, 1<<20), randomBytes(t, 1<<20)
	gotUp := make(chan [32]byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			gotUp <- [32]byte{}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		wrote := make(chan struct{})
		go func() { c.Write(down); close(wrote) }()
		h := sha256.New()
		io.CopyN(h, c, int64(len(up)))
		gotUp <- [32]byte(h.Sum(nil))
		<-wrote
	}()
	conn := dial(t, cli, "tcp4", "198.51.100.10:8080")
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan struct{})
	go func() { conn.Write(up); close(wrote) }()
	h := sha256.New()
	if _, err := io.CopyN(h, conn, int64(len(down))); err != nil {
		t.Errorf("TCP download: %v\nlog:\n%s", err, logs.String())
	}
	<-wrote
	conn.Close()
	if [32]byte(h.Sum(nil)) != sha256.Sum256(down) {
		t.Error("TCP: the server's 1 MiB arrived changed")
	}
	if <-gotUp != sha256.Sum256(up) {
		t.Error("TCP: the client's 1 MiB arrived changed")
	}

	// An ICMP error the translator makes and sends through the tap: a
	// full-size DF packet does not fit the segment once translated.
	out, _ := cli.Output("ping", "-n", "-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", "1472", "198.51.100.10")
	if !regexp.MustCompile(`(?i)frag needed.*mtu = 1480|mtu=1480`).MatchString(out) {
		t.Errorf("no Fragmentation Needed (MTU 1480) for a 1500-byte DF ping:\n%s", out)
	}

	if err := run.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("map646 run: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("map646 run did not stop\n%s", logs.String())
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// listen opens a listener in ns (its socket stays there).
func listen(t *testing.T, ns *netnstest.NS, network, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen(network, addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects from ns.
func dial(t *testing.T, ns *netnstest.NS, network, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) { c, err = net.DialTimeout(network, addr, 10*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	return c
}
