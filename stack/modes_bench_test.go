package stack

import (
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkNetnsModes compares the link modes on the same address plan in
// one run: 64-byte UDP packets from the IPv4 client at full speed (one
// sending goroutine; the rate is what the server received) and ping RTT
// (median of 20), for kernel IPv4 forwarding (no translation: the
// baseline), the tun (host mode, Serve), NIC mode with one and two sockets
// per NIC, and an inherited bare-IP tun fd. Rounds are interleaved so that
// the machine's noise spreads over all modes; medians are reported. Run
// it alone (it saturates the CPUs):
//
//	flock /tmp/map646-heavy.lock go test -run '^$' -bench NetnsModes -benchtime 1x -timeout 20m ./stack/
func BenchmarkNetnsModes(b *testing.B) {
	type setup struct {
		name string
		tp   *topology
	}
	setups := []setup{
		{"kernel", newModeTopology(b, modeKernel, 1520, 1)},
		{"tun", newTopology(b, true, 1520)},
		{"nic", newModeTopology(b, modeNIC, 1520, 1)},
		{"nic-2q", newModeTopology(b, modeNIC, 1520, 2)},
		{"fd", newModeTopology(b, modeFD, 1520, 1)},
	}
	const rounds = 3
	const dur = 2 * time.Second
	pps := map[string][]float64{}
	rtt := map[string][]float64{}
	for range b.N {
		for r := range rounds {
			for i := range setups {
				s := setups[(i+r)%len(setups)]
				pps[s.name] = append(pps[s.name], udpRate(b, s.tp, dur))
				rtt[s.name] = append(rtt[s.name], pingMedian(b, s.tp, 20))
			}
		}
	}
	base := median(pps["kernel"])
	for _, s := range setups {
		p, l := median(pps[s.name]), median(rtt[s.name])
		b.ReportMetric(p, s.name+"-pps")
		b.ReportMetric(l, s.name+"-rtt-us")
		b.Logf("%-7s UDP 64 B %8.0f pkt/s (%.2fx kernel, rounds %v)  ping RTT median %4.0f us (rounds %v)",
			s.name, p, p/base, rounded(pps[s.name]), l, rounded(rtt[s.name]))
	}
}

// udpRate sends 64-byte datagrams from the client to the server for d and
// returns the rate the server received them at.
func udpRate(b *testing.B, tp *topology, d time.Duration) float64 {
	var srv *net.UDPConn
	if err := tp.srv.Do(func() (err error) {
		srv, err = net.ListenUDP("udp", &net.UDPAddr{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	srv.SetReadBuffer(4 << 20)
	var got atomic.Int64
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, err := srv.Read(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	port := srv.LocalAddr().(*net.UDPAddr).Port
	c := dialServerUDP(b, tp.cli, port)
	defer c.Close()
	msg := make([]byte, 64)
	// Warm up: the translator's next hops and the server's neighbours.
	for range 3 {
		c.Write(msg)
		time.Sleep(50 * time.Millisecond)
	}
	start := got.Load()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		for range 64 {
			c.Write(msg)
		}
	}
	time.Sleep(100 * time.Millisecond) // the last ones in flight
	n := got.Load() - start
	if n == 0 {
		b.Fatalf("no datagram arrived")
	}
	return float64(n) / d.Seconds()
}

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// pingMedian pings the server from the client n times and returns the
// median RTT in microseconds.
func pingMedian(b *testing.B, tp *topology, n int) float64 {
	out := tp.cli.MustRun(b, "ping", "-n", "-c", strconv.Itoa(n), "-i", "0.05", "-W", "2", serverV4)
	var rtts []float64
	for _, m := range pingTime.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, v*1000)
	}
	if len(rtts) == 0 {
		b.Fatalf("no ping reply: %s", out)
	}
	return median(rtts)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rounded(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.0f", x)
	}
	return s
}
