package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/internal/netnstest"
)

// TestRunMappingCounters: a real `map646 run` in a namespace with
// mapping_counters on counts UDP datagrams sent through its tun exactly,
// per entry and direction; `stats --mappings` lists every entry as CSV,
// `--top 2` the two busiest, `--by bytes --json` in byte order; /metrics
// exports the mapping_top busiest. A reload that keeps an entry keeps its
// counts, one that changes an entry's IPv6 side starts it at zero, and a
// reload that turns the counters off makes `stats --mappings` say so.
//
// Plan inside the namespace: the server 2001:db8:6::10 is a local address
// (on one end of a veth pair); the client 192.0.2.2 is not (the translator
// translates nothing from the host's own IPv4 addresses), its datagrams
// leave from a socket with IP_TRANSPARENT; what the translator
// sends to other servers (2001:db8:6::/64) and to the client 192.0.2.3 is
// blackholed, and the server has a socket on the port the client sends
// to, so that no ICMP error comes back to be counted too.
func TestRunMappingCounters(t *testing.T) {
	netnstest.RequireTun(t, "dmc")
	ns := netnstest.New(t, "dmc")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "map646.hcl")
	sock := filepath.Join(dir, "ctl.sock")
	const metricsAddr = "127.0.0.1:9646"
	write := func(counters bool, v6of11 string) {
		src := fmt.Sprintf(`translator {
  prefix = "2001:db8:64::/96"
  mapping_counters = %v
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
  mapping {
    ipv4 = "198.51.100.11"
    ipv6 = "%s"
  }
  mapping {
    ipv4 = "198.51.100.12"
    ipv6 = "2001:db8:6::12"
  }
  tun {
    name   = "dmcount"
    queues = 1
  }
}
metrics {
  listen      = "%s"
  mapping_top = %d
}
`, counters, v6of11, metricsAddr, map[bool]int{true: 2, false: 0}[counters])
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(true, "2001:db8:6::11")
	for _, c := range [][]string{
		{"ip", "link", "add", "dmc0", "type", "veth", "peer", "name", "dmc1"},
		{"ip", "link", "set", "dmc1", "up"},
		{"ip", "addr", "add", "2001:db8:6::10/128", "dev", "dmc0", "nodad"},
		{"ip", "link", "set", "dmc0", "up"},
		{"ip", "link", "set", "lo", "up"},
		{"ip", "-6", "route", "add", "blackhole", "2001:db8:6::/64"},
		{"ip", "route", "add", "blackhole", "192.0.2.3/32"},
	} {
		ns.MustRun(t, c...)
	}

	var logs bytes.Buffer
	run := exec.Command("ip", "netns", "exec", ns.Name, os.Args[0], "run", "-c", cfg, "--control-socket", sock)
	run.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
	run.Stderr = &logs
	startRun(t, run)
	deadline := time.Now().Add(30 * time.Second)
	for runStats(t, sock) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no stats within 30 s; log:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The server's socket takes what reaches 2001:db8:6::10 (no port
	// unreachable); it is also what sends the 6to4 datagrams.
	var server *net.UDPConn
	if err := ns.Do(func() (err error) {
		server, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("2001:db8:6::10"), Port: 7000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	send := func(from, to string, n, size int) {
		t.Helper()
		err := ns.Do(func() error {
			network := "udp4"
			if strings.Contains(to, ":") {
				network = "udp6"
			}
			var c *net.UDPConn
			var err error
			if network == "udp6" {
				c = server
			} else {
				// A source that is no address of the host's.
				d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}, Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1) }); err != nil {
						return err
					}
					return serr
				}}
				nc, err := d.Dial(network, net.JoinHostPort(to, "7000"))
				if err != nil {
					return err
				}
				c = nc.(*net.UDPConn)
				defer c.Close()
			}
			for range n {
				if network == "udp6" {
					_, err = c.WriteToUDP(make([]byte, size), &net.UDPAddr{IP: net.ParseIP(to), Port: 7000})
				} else {
					_, err = c.Write(make([]byte, size))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	send("192.0.2.2", "198.51.100.10", 5, 100)              // entry 0, 4to6: 5 x 128 bytes
	send("192.0.2.2", "198.51.100.11", 9, 10)               // entry 1, 4to6: 9 x 38 bytes
	send("2001:db8:6::10", "2001:db8:64::c000:203", 2, 300) // entry 0, 6to4: 2 x 348 bytes
	const want = countsHeader +
		"198.51.100.10/32,2001:db8:6::10/128,5,640,2,696\n" +
		"198.51.100.11/32,2001:db8:6::11/128,9,342,0,0\n" +
		"198.51.100.12/32,2001:db8:6::12/128,0,0,0,0\n"
	mappings := func(args ...string) (string, error) {
		var stderr bytes.Buffer
		c := map646Cmd(append([]string{"stats", "--mappings", "--control-socket", sock}, args...)...)
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			return stderr.String(), err
		}
		return string(out), nil
	}
	var got string
	for {
		var err error
		if got, err = mappings(); err != nil {
			t.Fatalf("stats --mappings: %v\n%s", err, got)
		}
		if got == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the datagrams are still on their way
	}
	if got != want {
		t.Fatalf("stats --mappings:\n%s\nwant\n%s\nlog:\n%s", got, want, logs.String())
	}
	if got, err := mappings("--top", "2"); err != nil || got != countsHeader+
		"198.51.100.11/32,2001:db8:6::11/128,9,342,0,0\n"+
		"198.51.100.10/32,2001:db8:6::10/128,5,640,2,696\n" {
		t.Errorf("stats --mappings --top 2: %v\n%s", err, got)
	}
	out, err := mappings("--top", "2", "--by", "bytes", "--json")
	var listing struct {
		Count    int                    `json:"count"`
		Top      int                    `json:"top"`
		By       string                 `json:"by"`
		Mappings []metrics.MappingCount `json:"mappings"`
	}
	if err == nil {
		err = json.Unmarshal([]byte(out), &listing)
	}
	if err != nil || listing.Count != 3 || listing.Top != 2 || listing.By != "bytes" || len(listing.Mappings) != 2 ||
		listing.Mappings[0] != (metrics.MappingCount{IPv4: "198.51.100.10/32", IPv6: "2001:db8:6::10/128", Packets4to6: 5, Bytes4to6: 640, Packets6to4: 2, Bytes6to4: 696}) ||
		listing.Mappings[1].IPv4 != "198.51.100.11/32" {
		t.Errorf("stats --mappings --top 2 --by bytes --json: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"--top", "-1"}, {"--top", "100001"}, {"--by", "flows"}} {
		if out, err := mappings(bad...); err == nil {
			t.Errorf("stats --mappings %v accepted:\n%s", bad, out)
		}
	}

	// /metrics carries the two busiest entries (mapping_top = 2).
	body := scrapeMetrics(t, ns, metricsAddr)
	for _, line := range []string{
		`map646_mapping_packets_total{direction="4to6",ipv4="198.51.100.11/32",ipv6="2001:db8:6::11/128"} 9`,
		`map646_mapping_bytes_total{direction="6to4",ipv4="198.51.100.10/32",ipv6="2001:db8:6::10/128"} 696`,
	} {
		if !strings.Contains(body, line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	if strings.Contains(body, "198.51.100.12/32") {
		t.Error("/metrics exports more than mapping_top entries")
	}

	reload := func() {
		t.Helper()
		if out, err := map646Cmd("reload", "--control-socket", sock).CombinedOutput(); err != nil {
			t.Fatalf("reload: %v\n%s", err, out)
		}
	}
	// Entry 1's IPv6 side changes: it starts again; entry 0 keeps counting.
	write(true, "2001:db8:6::111")
	reload()
	send("192.0.2.2", "198.51.100.10", 1, 100)
	const wantAfter = countsHeader +
		"198.51.100.10/32,2001:db8:6::10/128,6,768,2,696\n" +
		"198.51.100.11/32,2001:db8:6::111/128,0,0,0,0\n" +
		"198.51.100.12/32,2001:db8:6::12/128,0,0,0,0\n"
	for got, _ = mappings(); got != wantAfter && time.Now().Before(deadline); got, _ = mappings() {
		time.Sleep(50 * time.Millisecond)
	}
	if got != wantAfter {
		t.Errorf("after the reload, stats --mappings:\n%s\nwant\n%s", got, wantAfter)
	}

	write(false, "2001:db8:6::111")
	reload()
	if out, err := mappings(); err == nil || !strings.Contains(out, "per-mapping counters are off") {
		t.Errorf("with the counters off, stats --mappings: %v\n%s", err, out)
	}
	if body := scrapeMetrics(t, ns, metricsAddr); strings.Contains(body, "map646_mapping_") || !strings.Contains(body, "map646_packets_total") {
		t.Errorf("with the counters off, /metrics:\n%s", body)
	}
}

// scrapeMetrics reads /metrics at addr inside ns.
func scrapeMetrics(t *testing.T, ns *netnstest.NS, addr string) string {
	t.Helper()
	var body string
	if err := ns.Do(func() error {
		c, err := net.Dial("tcp", addr) // by hand: an http.Client dials from another thread
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return body
}

// countsHeader is the header line of `stats --mappings` CSV.
const countsHeader = "ipv4,ipv6,packets_4to6,bytes_4to6,packets_6to4,bytes_6to4\n"
