package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// iperfJSON is the part of `iperf3 --json` output the harness reads.
type iperfJSON struct {
	Error string `json:"error"`
	Start struct {
		Connected []struct {
			LocalPort int `json:"local_port"`
		} `json:"connected"`
	} `json:"start"`
	End struct {
		SumReceived iperfSum `json:"sum_received"`
	} `json:"end"`
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         float64 `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Packets       float64 `json:"packets"`
	LostPackets   float64 `json:"lost_packets"`
}

// tcpResult is what the receiver counted for one iperf3 TCP test.
type tcpResult struct {
	BitsPerSecond float64
	Bits          float64 // received in total
	Port          int     // the client's port of the first data stream, as iperf3 reports it
}

// parseIperfTCP reads the receiver's totals. A run that reports an error or
// moved no data is a failed measurement.
func parseIperfTCP(b []byte) (tcpResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return tcpResult{}, fmt.Errorf("iperf3 output is not JSON: %w", err)
	}
	if j.Error != "" {
		return tcpResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	s := j.End.SumReceived
	if s.BitsPerSecond <= 0 || s.Bytes <= 0 {
		return tcpResult{}, errors.New("iperf3: the receiver got no data")
	}
	return tcpResult{BitsPerSecond: s.BitsPerSecond, Bits: s.Bytes * 8, Port: j.clientPort()}, nil
}

// udpResult is the receiver's view of an iperf3 UDP test: what arrived, not
// what was sent (with -b 0 the sender far outruns any translator).
type udpResult struct {
	PacketsPerSecond float64
	Packets          float64 // received
	Sent             float64
	Port             int // the client's port of the data stream, as iperf3 reports it
}

// parseIperfUDP computes received packets per second from the receiver's
// sum: iperf3 reports the highest sequence number seen as "packets" and the
// gaps as "lost_packets".
func parseIperfUDP(b []byte) (udpResult, error) {
	var j iperfJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return udpResult{}, fmt.Errorf("iperf3 output is not JSON: %w", err)
	}
	if j.Error != "" {
		return udpResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	s := j.End.SumReceived
	got := s.Packets - s.LostPackets
	if got <= 0 || s.Seconds <= 0 {
		return udpResult{}, errors.New("iperf3: the receiver got no UDP packets")
	}
	return udpResult{PacketsPerSecond: got / s.Seconds, Packets: got, Sent: s.Packets, Port: j.clientPort()}, nil
}

// clientPort is the lowest client port of the test's data streams; 0 if
// iperf3 reported none.
func (j iperfJSON) clientPort() int {
	p := 0
	for _, c := range j.Start.Connected {
		if p == 0 || c.LocalPort < p {
			p = c.LocalPort
		}
	}
	return p
}

// pingResult holds the round-trip times of the echo replies received.
type pingResult struct {
	RTTs             []float64 // milliseconds, in arrival order
	Sent, Received   int
	Median, P99, Max float64 // milliseconds
}

// lossPercent is the share of echo requests without a reply; NaN if none
// was sent.
func (r pingResult) lossPercent() float64 {
	if r.Sent <= 0 {
		return math.NaN()
	}
	return 100 * float64(r.Sent-r.Received) / float64(r.Sent)
}

// parsePing reads iputils ping output: one "time=0.123 ms" per reply and a
// "N packets transmitted, M received" summary.
func parsePing(out string) (pingResult, error) {
	var r pingResult
	summary := false
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "time="); i >= 0 && strings.Contains(line, "bytes from") {
			f := strings.Fields(line[i+len("time="):])
			if len(f) == 0 {
				continue
			}
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return r, fmt.Errorf("ping: bad time in %q", line)
			}
			r.RTTs = append(r.RTTs, v)
		}
		if strings.Contains(line, "packets transmitted") {
			f := strings.Fields(line)
			if len(f) >= 4 {
				r.Sent, _ = strconv.Atoi(f[0])
				r.Received, _ = strconv.Atoi(f[3])
				summary = true
			}
		}
	}
	if !summary {
		return r, errors.New("ping: no summary line")
	}
	if len(r.RTTs) == 0 {
		return r, fmt.Errorf("ping: no replies (%d sent)", r.Sent)
	}
	s := append([]float64(nil), r.RTTs...)
	sort.Float64s(s)
	r.Median = quantile(s, 0.5)
	r.P99 = quantile(s, 0.99)
	r.Max = s[len(s)-1]
	return r, nil
}

// quantile returns the q-quantile of sorted values by linear interpolation
// between closest ranks; NaN for no values.
func quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	pos := q * float64(n-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo))
}

// median of values that may be unsorted and may contain NaN (a missing
// round); NaN if none is a number.
func median(vals []float64) float64 {
	s := make([]float64, 0, len(vals))
	for _, v := range vals {
		if !math.IsNaN(v) {
			s = append(s, v)
		}
	}
	sort.Float64s(s)
	return quantile(s, 0.5)
}

// measurer runs the traffic tools in the client namespace towards one
// destination, and reads a translator's CPU time around each test.
type measurer struct {
	topo     topology
	duration time.Duration
	pings    int // at 100/s
	pings1s  int // at 1/s
	tests    testSet
	flows    flowIDs // the round's client ports and ping identifiers
}

// flowIDs name a round's flows: every setup measured in the round sends
// its tests from the same client ports and pings with the same ICMP
// identifiers. A multi-queue translator picks a flow's queue from them
// (map646's steering program hashes the IPv4 host's address and port, or
// the echo identifier), and which queue a flow gets, and whether the flood
// and the pings during it share one, moves a round's numbers by more than
// the 5 % the 1M-table goals allow. With ports left to the kernel, the two
// members of a pair drew their queues independently; with the round's
// ports they draw the same, and the rounds, each with ports of their own
// drawn at random, still sample every queue. Zero values leave the choice
// to the kernel and to ping.
type flowIDs struct {
	// Port is the first client port: TCP 1 stream uses Port, TCP 4
	// streams Port+1 to Port+4 (iperf3 numbers the streams from its
	// --cport on), UDP Port+5. Fresh namespaces per measurement leave no
	// TIME_WAIT socket behind to collide with.
	Port int
	// PingID is the identifier (ping -e) of the 100/s pings on the idle
	// path; the 1/s pings use PingID+1, the pings during the flood PingID+2.
	PingID int
}

// Offsets from flowIDs.Port and flowIDs.PingID per test.
const (
	portTCP1, portTCP4, portUDP   = 0, 1, 5
	pingIdle, pingSparse, pingUDP = 0, 1, 2
	flowPorts, flowPingIDs        = 6, 3 // ports and identifiers a round uses
)

// newFlowIDs draws each round's flows at random: ports from the kernel's
// default ephemeral range (32768-60999), identifiers from 1-65535.
func newFlowIDs(rounds int, rnd *rand.Rand) []flowIDs {
	out := make([]flowIDs, rounds)
	for i := range out {
		out[i] = flowIDs{Port: 32768 + rnd.IntN(60999-32768+1-flowPorts+1), PingID: 1 + rnd.IntN(65535-flowPingIDs+1)}
	}
	return out
}

// iperfPort is the --cport argument of a test whose first port is Port+off.
func (f flowIDs) iperfPort(off int) []string {
	if f.Port == 0 {
		return nil
	}
	return []string{"--cport", strconv.Itoa(f.Port + off)}
}

// pingID is ping's -e argument for identifier PingID+off.
func (f flowIDs) pingID(off int) []string {
	if f.PingID == 0 {
		return nil
	}
	return []string{"-e", strconv.Itoa(f.PingID + off)}
}

// fastInterval is the gap of the 100/s pings.
const fastInterval = 10 * time.Millisecond

// iperf runs one iperf3 client and returns its JSON output.
func (m measurer) iperf(ctx context.Context, dst string, extra ...string) ([]byte, error) {
	secs := int(m.duration / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := context.WithTimeout(ctx, m.duration+45*time.Second)
	defer cancel()
	argv := append([]string{"iperf3", "-c", dst, "-t", strconv.Itoa(secs), "--json", "--connect-timeout", "5000"}, extra...)
	out, err := runIn(ctx, m.topo.Client, argv...)
	if err != nil {
		// iperf3 --json puts its error into the JSON; prefer that message.
		var j iperfJSON
		if json.Unmarshal([]byte(out), &j) == nil && j.Error != "" {
			return nil, fmt.Errorf("iperf3 -c %s %s: %s", dst, strings.Join(extra, " "), j.Error)
		}
		return nil, err
	}
	return []byte(out), nil
}

func (m measurer) tcp(ctx context.Context, dst string, streams int) (tcpResult, error) {
	off := portTCP1
	if streams > 1 {
		off = portTCP4
	}
	out, err := m.iperf(ctx, dst, append([]string{"-P", strconv.Itoa(streams)}, m.flows.iperfPort(off)...)...)
	if err != nil {
		return tcpResult{}, err
	}
	return parseIperfTCP(out)
}

func (m measurer) udp64(ctx context.Context, dst string) (udpResult, error) {
	out, err := m.iperf(ctx, dst, append([]string{"-u", "-l", "64", "-b", "0"}, m.flows.iperfPort(portUDP)...)...)
	if err != nil {
		return udpResult{}, err
	}
	return parseIperfUDP(out)
}

// ping sends count echo requests interval apart (-W 1: a reply later
// than 1 s counts as lost) with identifier PingID+id of the round's flows.
func (m measurer) ping(ctx context.Context, dst string, count int, interval time.Duration, id int) (pingResult, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(count)*(interval+10*time.Millisecond)+30*time.Second)
	defer cancel()
	argv := append([]string{"ping", "-n", "-c", strconv.Itoa(count),
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', -1, 64), "-W", "1"}, m.flows.pingID(id)...)
	out, err := runIn(ctx, m.topo.Client, append(argv, dst)...)
	r, perr := parsePing(out)
	if perr != nil {
		if err != nil {
			return r, err
		}
		return r, perr
	}
	// ping exits 1 when some replies are missing; a few losses are data, not failure.
	return r, nil
}

// udp64WithPing runs the 64 B UDP flood and, from 0.5 s into it until 0.5 s
// before its end, pings at 100/s: the round-trip time a flooded translator
// adds (its queues full). A ping whose every echo is lost has a NaN median
// and 100% loss; only a ping that cannot run is an error.
func (m measurer) udp64WithPing(ctx context.Context, dst string) (udpResult, pingResult, error) {
	n := int((m.duration - time.Second) / fastInterval)
	if n < 10 {
		n = 10
	}
	var pr pingResult
	var perr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(500 * time.Millisecond):
		case <-ctx.Done():
			perr = ctx.Err()
			return
		}
		pr, perr = m.ping(ctx, dst, n, fastInterval, pingUDP)
		if perr != nil && pr.Sent > 0 && pr.Received == 0 {
			pr.Median, perr = math.NaN(), nil
		}
	}()
	u, err := m.udp64(ctx, dst)
	<-done
	if err != nil {
		return u, pr, err
	}
	if perr != nil {
		return u, pr, fmt.Errorf("ping during the flood: %w", perr)
	}
	return u, pr, nil
}

// cpuMeter reads a process's CPU time before and after a test. A nil meter
// (native forwarding: the kernel's softirqs belong to no process) reads NaN.
type cpuMeter struct {
	pid   int
	start uint64
}

func startCPU(p *process) (*cpuMeter, error) {
	if p == nil {
		return nil, nil
	}
	t, err := cpuTicks(p.PID())
	if err != nil {
		return nil, fmt.Errorf("%s cpu time: %w", p.name, err)
	}
	return &cpuMeter{pid: p.PID(), start: t}, nil
}

// seconds returns the CPU seconds used since startCPU.
func (c *cpuMeter) seconds() (float64, error) {
	if c == nil {
		return math.NaN(), nil
	}
	t, err := cpuTicks(c.pid)
	if err != nil {
		return 0, fmt.Errorf("cpu time of pid %d: %w", c.pid, err)
	}
	return float64(t-c.start) / clockTicksPerSecond, nil
}

// udpCounters are a namespace's UDP receive counters, IPv4 and IPv6
// together: datagrams queued to a socket, and datagrams dropped because
// the socket's receive buffer was full.
type udpCounters struct {
	In, RcvbufErrors float64
}

func (c udpCounters) sub(o udpCounters) udpCounters {
	return udpCounters{In: c.In - o.In, RcvbufErrors: c.RcvbufErrors - o.RcvbufErrors}
}

// dropPercent is the share of the datagrams that reached the sockets
// which a full receive buffer dropped; NaN if none reached them.
func (c udpCounters) dropPercent() float64 {
	if c.In+c.RcvbufErrors <= 0 {
		return math.NaN()
	}
	return 100 * c.RcvbufErrors / (c.In + c.RcvbufErrors)
}

// reachedRate scales received, the rate of datagrams the receiver read,
// to the rate at which datagrams reached its sockets, the dropped ones
// included: received × (queued + dropped) / queued. NaN if none was
// queued.
func (c udpCounters) reachedRate(received float64) float64 {
	if c.In <= 0 {
		return math.NaN()
	}
	return received * (c.In + c.RcvbufErrors) / c.In
}

// nstatUDP are the counters serverUDP reads.
var nstatUDP = []string{"UdpInDatagrams", "UdpRcvbufErrors", "Udp6InDatagrams", "Udp6RcvbufErrors"}

// parseNstatUDP reads the output of `nstat -asz` for nstatUDP: a header
// line ("#kernel"), then "NAME VALUE RATE" lines. Every counter asked for
// must be there.
func parseNstatUDP(out string) (udpCounters, error) {
	var c udpCounters
	seen := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil || v < 0 {
			return udpCounters{}, fmt.Errorf("nstat: %q: not a counter", line)
		}
		switch f[0] {
		case "UdpInDatagrams", "Udp6InDatagrams":
			c.In += v
		case "UdpRcvbufErrors", "Udp6RcvbufErrors":
			c.RcvbufErrors += v
		default:
			continue
		}
		seen++
	}
	if seen != len(nstatUDP) {
		return udpCounters{}, fmt.Errorf("nstat: %d of the %d UDP counters in %q", seen, len(nstatUDP), out)
	}
	return c, nil
}

// serverUDP reads the server namespace's UDP receive counters (absolute,
// without touching nstat's history file).
func (m measurer) serverUDP(ctx context.Context) (udpCounters, error) {
	out, err := runIn(ctx, m.topo.Server, append([]string{"nstat", "-asz"}, nstatUDP...)...)
	if err != nil {
		return udpCounters{}, fmt.Errorf("nstat in %s: %w", m.topo.Server, err)
	}
	return parseNstatUDP(out)
}
