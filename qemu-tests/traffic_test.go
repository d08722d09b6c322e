package qemutests

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// The address plan of baseConfig (documentation prefixes only).
const (
	clientAddr = "203.0.113.2"              // the IPv4 client, on the VM's eth0 link
	serverV4   = "198.51.100.10"            // the server's public IPv4 address (EAM)
	serverV6   = "2001:db8:6::10"           // the server's real address
	clientAsV6 = "2001:db8:64::203.0.113.2" // the client inside the RFC 6052 prefix
)

// topology is the appliance between an IPv4-only client namespace and an
// IPv6-only server namespace.
type topology struct {
	client, server *netnstest.NS
	vm             *vm
	ready          ready
}

func bootTopology(t *testing.T, drives ...string) *topology {
	t.Helper()
	tp := &topology{client: netnstest.New(t, "qm-"), server: netnstest.New(t, "qm-")}
	tap4 := tp.client.Tap(t, "qmtap4")
	tap6 := tp.server.Tap(t, "qmtap6")

	c := tp.client
	c.Run("ip", "addr", "add", clientAddr+"/28", "dev", "qmtap4")
	c.Run("ip", "link", "set", "qmtap4", "up")
	c.Run("ip", "route", "add", "198.51.100.0/24", "via", "203.0.113.1")

	s := tp.server
	s.Run("ip", "addr", "add", "2001:db8:ffff::2/64", "dev", "qmtap6", "nodad")
	s.Run("ip", "link", "set", "qmtap6", "up")
	s.Run("ip", "addr", "add", serverV6+"/128", "dev", "lo")
	s.Run("ip", "route", "add", "2001:db8:64::/96", "via", "2001:db8:ffff::1")

	tp.vm = startVM(t, vmConfig{imageDir: baseImage, nics: []*os.File{tap4, tap6}, drives: drives})
	what := "direct kernel boot"
	if len(drives) > 0 {
		what += " with a config drive"
	}
	tp.ready = tp.vm.waitReady(what)
	return tp
}

// linkMode is one way the appliance's translator reaches its NICs, with
// the configuration that selects it and the link name the ready line
// gives for it.
type linkMode struct {
	name   string
	config string
	link   *regexp.Regexp
}

var linkModes = []linkMode{
	{"tun", tunConfig, regexp.MustCompile(`^map646\S*$`)},
	{"nic", nicConfig, regexp.MustCompile(`^nic eth0,eth1$`)},
}

// TestTraffic boots the appliance between the two namespaces once per
// link mode and sends ICMP, TCP and UDP through it both ways, including a
// translated ICMP error and path MTU discovery across the 1400-byte IPv6
// link; then it reaches the appliance's own metrics over both NICs, which
// count what was translated. The image's default mode (baseConfig) runs
// as baked; the other comes from a config drive.
func TestTraffic(t *testing.T) {
	needVM(t)
	for _, m := range linkModes {
		t.Run(m.name, func(t *testing.T) {
			var drives []string
			wantConfig := "baked"
			if m.config != baseConfig {
				drives = []string{isoDrive(t, "MAP646", map[string]string{"map646.hcl": m.config})}
				wantConfig = "drive:MAP646"
			}
			tp := bootTopology(t, drives...)
			if tp.ready.Config != wantConfig || !m.link.MatchString(tp.ready.Tun) {
				t.Fatalf("ready %+v, want config=%s and a link matching %s", tp.ready, wantConfig, m.link)
			}
			checkTraffic(t, tp)
			tp.vm.powerdown()
		})
	}
}

// checkTraffic is what TestTraffic checks in every link mode.
func checkTraffic(t *testing.T, tp *topology) {
	t.Run("appliance-interfaces", func(t *testing.T) {
		// The interface blocks: addresses, MTU, link up.
		if out, err := tp.client.Output("ping", "-c", "1", "-w", "20", "203.0.113.1"); err != nil {
			t.Fatalf("ping the appliance's IPv4 address: %v\n%s", err, out)
		}
		if out, err := tp.server.Output("ping", "-6", "-c", "1", "-w", "20", "2001:db8:ffff::1"); err != nil {
			t.Fatalf("ping the appliance's IPv6 address: %v\n%s", err, out)
		}
	})
	t.Run("ping-4to6", func(t *testing.T) {
		pingAll(t, tp.client, "IPv4 client -> IPv6 server", serverV4)
	})
	t.Run("ping-6to4", func(t *testing.T) {
		pingAll(t, tp.server, "IPv6 server -> IPv4 client", "-6", "-I", serverV6, clientAsV6)
	})
	t.Run("tcp-and-pmtud", func(t *testing.T) {
		tcpTransfer(t, tp, 4<<20)
		// The appliance's eth1 has MTU 1400, which the translator takes
		// as its IPv6 MTU: TCP's MSS is clamped to fit, so full-size
		// segments never meet it. A full-size echo request with DF does:
		// it gets Fragmentation Needed with MTU 1400 - 20 (RFC 7915
		// section 4.1, the IPv6 next hop's MTU less the header growth).
		tp.client.Output("ping", "-M", "do", "-s", "1472", "-c", "2", "-w", "10", serverV4)
		out := tp.client.Run("ip", "route", "get", serverV4)
		if !strings.Contains(out, "mtu 1380") {
			t.Errorf("the client learned no path MTU of 1380 towards %s:\n%s", serverV4, out)
		}
	})
	t.Run("udp", func(t *testing.T) {
		udpEcho(t, tp)
	})
	t.Run("icmp-error-port-unreachable", func(t *testing.T) {
		udpRefused(t, tp)
	})
	t.Run("own-metrics", func(t *testing.T) {
		// The appliance's own TCP service on each NIC: in NIC mode the
		// kernel, not the translator, must still get these packets.
		if code, body := httpGet(t, tp.client, "203.0.113.1:9646", "/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz over eth0: %d %q", code, body)
		}
		code, body := httpGet(t, tp.server, "[2001:db8:ffff::1]:9646", "/metrics")
		if code != 200 {
			t.Fatalf("/metrics over eth1: %d %q", code, body)
		}
		for _, series := range []string{
			`map646_packets_total{direction="4to6",protocol="tcp"}`,
			`map646_packets_total{direction="6to4",protocol="tcp"}`,
			`map646_packets_total{direction="4to6",protocol="udp"}`,
			`map646_packets_total{direction="6to4",protocol="icmp"}`,
		} {
			if n := metricValue(body, series); n < 1 {
				t.Errorf("%s = %v after the traffic, want > 0", series, n)
			}
		}
		// A packet the translator could not send is lost: TCP recovers,
		// but slower, and a ping would not.
		if series := `map646_link_events_total{counter="write_errors"}`; metricValue(body, series) != 0 {
			t.Errorf("%s = %v, want 0", series, metricValue(body, series))
		}
	})
}

// pingAll pings from ns and wants every echo answered: these are the
// first packets through the translator, which parks them while it
// resolves the next hop, so none may be lost (in NIC mode the first one
// each way was, until the sockets' stale ENETDOWN was retried).
func pingAll(t *testing.T, ns *netnstest.NS, what string, args ...string) {
	t.Helper()
	out, err := ns.Output(append([]string{"ping", "-c", "3", "-w", "20"}, args...)...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	if !strings.Contains(out, " 0% packet loss") {
		t.Errorf("%s: echoes lost:\n%s", what, out)
	}
}

// httpGet fetches path from addr, connecting from inside ns.
func httpGet(t *testing.T, ns *netnstest.NS, addr, path string) (int, string) {
	t.Helper()
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 20*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if err := req.Write(c); err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	return resp.StatusCode, string(body)
}

// metricValue is the value of one series in a Prometheus text
// exposition, or -1 if it is absent.
func metricValue(exposition, series string) float64 {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				return f
			}
		}
	}
	return -1
}

// tcpTransfer sends n random bytes from the client to the server, which
// answers with their SHA-256 and the client address it saw.
func tcpTransfer(t *testing.T, tp *topology, n int) {
	var ln net.Listener
	if err := tp.server.Do(func() (err error) {
		ln, err = net.Listen("tcp6", "["+serverV6+"]:8080")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		got, err := io.Copy(h, c)
		fmt.Fprintf(c, "%x %d %s %v\n", h.Sum(nil), got, c.RemoteAddr().(*net.TCPAddr).IP, err)
	}()

	var conn net.Conn
	if err := tp.client.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", serverV4+":8080", 30*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to %s:8080: %v", serverV4, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	data := make([]byte, n)
	rand.Read(data)
	if _, err := conn.Write(data); err != nil {
		t.Fatalf("send: %v", err)
	}
	conn.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	sum := sha256.Sum256(data)
	want := fmt.Sprintf("%s %d %s <nil>\n", hex.EncodeToString(sum[:]), n, netip.MustParseAddr(clientAsV6))
	if string(reply) != want {
		t.Fatalf("server saw %q\nwant      %q", reply, want)
	}
}

func udpEcho(t *testing.T, tp *topology) {
	var pc net.PacketConn
	if err := tp.server.Do(func() (err error) {
		pc, err = net.ListenPacket("udp6", "["+serverV6+"]:7007")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(from.(*net.UDPAddr).IP.String()+" "), buf[:n]...), from)
		}
	}()
	var c net.Conn
	if err := tp.client.Do(func() (err error) {
		c, err = net.Dial("udp4", serverV4+":7007")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := []byte("map646 udp through the appliance")
	want := append([]byte(netip.MustParseAddr(clientAsV6).String()+" "), msg...)
	buf := make([]byte, 2048)
	for try := 0; try < 5; try++ { // the first datagram may wait for neighbour discovery
		c.Write(msg)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("echo %q, want %q", buf[:n], want)
			}
			return
		}
	}
	t.Fatal("no UDP echo through the appliance")
}

// udpRefused sends to a closed port: the server's ICMPv6 Port Unreachable
// comes back translated to ICMPv4 Port Unreachable, which the client's
// connected socket reports as ECONNREFUSED.
func udpRefused(t *testing.T, tp *topology) {
	var c net.Conn
	if err := tp.client.Do(func() (err error) {
		c, err = net.Dial("udp4", serverV4+":9")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	var last error
	for try := 0; try < 5; try++ {
		c.Write([]byte("anyone?"))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, last = c.Read(buf)
		if errors.Is(last, syscall.ECONNREFUSED) {
			return
		}
	}
	t.Fatalf("read after sending to a closed port: %v, want ECONNREFUSED", last)
}
