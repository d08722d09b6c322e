package main

import (
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseStatTicks(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{
			name: "plain",
			stat: "1234 (tayga) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5000 1000000 200 18446744073709551615",
			want: 325,
		},
		{
			name: "command with spaces and parentheses",
			stat: "99 (map646 (run) x) R 1 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 9 0 1 2 3",
			want: 10,
		},
		{name: "no command", stat: "1234 tayga S 1", wantErr: true},
		{name: "truncated", stat: "1 (x) S 1 2 3", wantErr: true},
		{name: "not a number", stat: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 3", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ticks = %d, want %d", got, tt.want)
			}
		})
	}
}

// The harness reads its own CPU time the same way it reads a translator's.
func TestCPUTicksOfSelf(t *testing.T) {
	if _, err := cpuTicks(1 << 30); err == nil {
		t.Error("cpuTicks of a PID that cannot exist: no error")
	}
	before, err := cpuTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := 0; i < 300_000_000; i++ { // ~0.1-0.3 s of CPU: at least a tick at USER_HZ 100
		x += i & 3
	}
	after, err := cpuTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU ticks did not grow over a busy loop: %d -> %d (x=%d)", before, after, x)
	}
}

const iperfTCPJSON = `{
  "start": {"version": "iperf 3.12", "connected": [
    {"socket": 5, "local_host": "192.0.2.2", "local_port": 40002, "remote_host": "198.51.100.10", "remote_port": 5201},
    {"socket": 7, "local_host": "192.0.2.2", "local_port": 40001, "remote_host": "198.51.100.10", "remote_port": 5201}]},
  "end": {
    "sum_sent": {"seconds": 10.0, "bytes": 6250000000, "bits_per_second": 5000000000},
    "sum_received": {"seconds": 10.04, "bytes": 6200000000, "bits_per_second": 4940239043}
  }
}`

const iperfUDPJSON = `{
  "end": {
    "sum_sent": {"seconds": 3, "bytes": 64000000, "packets": 1000000, "lost_packets": 0},
    "sum_received": {"seconds": 3.0, "bytes": 19200000, "bits_per_second": 51200000, "packets": 1000000, "lost_packets": 700000}
  }
}`

func TestParseIperfTCP(t *testing.T) {
	r, err := parseIperfTCP([]byte(iperfTCPJSON))
	if err != nil {
		t.Fatal(err)
	}
	// The port is the lowest of the data streams' (iperf3 numbers them
	// from --cport on).
	if r.BitsPerSecond != 4940239043 || r.Bits != 6200000000*8 || r.Port != 40001 {
		t.Errorf("got %+v", r)
	}
	for name, in := range map[string]string{
		"error":   `{"error": "unable to connect to server: Connection refused", "end": {}}`,
		"no data": `{"end": {"sum_received": {"seconds": 10, "bytes": 0, "bits_per_second": 0}}}`,
		"no json": `iperf3: error - unable to connect`,
	} {
		if _, err := parseIperfTCP([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	_, err = parseIperfTCP([]byte(`{"error": "the server is busy running a test"}`))
	if err == nil || !strings.Contains(err.Error(), "server is busy") {
		t.Errorf("error message lost: %v", err)
	}
}

func TestParseIperfUDP(t *testing.T) {
	r, err := parseIperfUDP([]byte(iperfUDPJSON))
	if err != nil {
		t.Fatal(err)
	}
	// Received = highest sequence seen - gaps, over the receiver's seconds.
	if r.Packets != 300000 || r.PacketsPerSecond != 100000 || r.Sent != 1000000 || r.Port != 0 {
		t.Errorf("got %+v", r)
	}
	for name, in := range map[string]string{
		"all lost": `{"end": {"sum_received": {"seconds": 3, "packets": 1000, "lost_packets": 1000}}}`,
		"error":    `{"error": "control socket has closed unexpectedly"}`,
		"empty":    `{}`,
	} {
		if _, err := parseIperfUDP([]byte(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestParseNstatUDP: the server's UDP counters, IPv4 and IPv6 summed, and
// the share a full socket buffer dropped of what reached the sockets
// (counters from a measured round: 287378 queued, 164000 dropped).
func TestParseNstatUDP(t *testing.T) {
	before, err := parseNstatUDP("#kernel\nUdpInDatagrams 12 0.0\nUdpRcvbufErrors 0 0.0\nUdp6InDatagrams 3 0.0\nUdp6RcvbufErrors 0 0.0\n")
	if err != nil {
		t.Fatal(err)
	}
	after, err := parseNstatUDP(`#kernel
UdpInDatagrams                  20                 0.0
UdpRcvbufErrors                 0                  0.0
Udp6InDatagrams                 287373             0.0
Udp6RcvbufErrors                164000             0.0
`)
	if err != nil {
		t.Fatal(err)
	}
	d := after.sub(before)
	if d.In != 287378 || d.RcvbufErrors != 164000 {
		t.Errorf("got %+v", d)
	}
	if got, want := d.dropPercent(), 100*164000.0/451378; math.Abs(got-want) > 1e-9 {
		t.Errorf("dropped %.4f %%, want %.4f", got, want)
	}
	if got, want := d.reachedRate(100), 100*451378.0/287378; math.Abs(got-want) > 1e-9 {
		t.Errorf("reached %.4f kpkt/s for 100 received, want %.4f", got, want)
	}
	if got := (udpCounters{}).reachedRate(100); !math.IsNaN(got) {
		t.Errorf("nothing queued at the server: reached %v, want NaN", got)
	}
	if got := (udpCounters{}).dropPercent(); !math.IsNaN(got) {
		t.Errorf("nothing reached the server: %v %%, want NaN", got)
	}
	for name, in := range map[string]string{
		"missing":  "#kernel\nUdpInDatagrams 1 0.0\nUdpRcvbufErrors 0 0.0\nUdp6InDatagrams 3 0.0\n",
		"garbled":  "#kernel\nUdpInDatagrams x 0.0\nUdpRcvbufErrors 0 0.0\nUdp6InDatagrams 3 0.0\nUdp6RcvbufErrors 0 0.0\n",
		"negative": "#kernel\nUdpInDatagrams -1 0.0\nUdpRcvbufErrors 0 0.0\nUdp6InDatagrams 3 0.0\nUdp6RcvbufErrors 0 0.0\n",
		"empty":    "",
	} {
		if _, err := parseNstatUDP(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

const pingOut = `PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.
64 bytes from 198.51.100.10: icmp_seq=1 ttl=61 time=0.120 ms
64 bytes from 198.51.100.10: icmp_seq=2 ttl=61 time=0.080 ms
64 bytes from 198.51.100.10: icmp_seq=3 ttl=61 time=0.100 ms
64 bytes from 198.51.100.10: icmp_seq=5 ttl=61 time=1.50 ms

--- 198.51.100.10 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 41ms
rtt min/avg/max/mdev = 0.080/0.450/1.500/0.606 ms
`

func TestParsePing(t *testing.T) {
	r, err := parsePing(pingOut)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 5 || r.Received != 4 || len(r.RTTs) != 4 {
		t.Fatalf("sent %d received %d rtts %v", r.Sent, r.Received, r.RTTs)
	}
	// sorted: 0.080 0.100 0.120 1.50 -> median 0.110; p99 at rank 2.97.
	if math.Abs(r.Median-0.110) > 1e-9 {
		t.Errorf("median = %v", r.Median)
	}
	if want := 0.120 + (1.50-0.120)*0.97; math.Abs(r.P99-want) > 1e-9 {
		t.Errorf("p99 = %v, want %v", r.P99, want)
	}
	if r.Max != 1.50 {
		t.Errorf("max = %v", r.Max)
	}
	if _, err := parsePing("PING x\n\n--- x ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss\n"); err == nil {
		t.Error("no replies: no error")
	}
	if _, err := parsePing("ping: connect: Network is unreachable\n"); err == nil {
		t.Error("no summary: no error")
	}
}

func TestQuantileAndMedian(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		vals []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{nan, 5, nan}, 5},
		{[]float64{7}, 7},
	}
	for _, tt := range tests {
		if got := median(tt.vals); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.vals, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) || !math.IsNaN(median([]float64{nan})) {
		t.Error("median of nothing is not NaN")
	}
	s := []float64{0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
	for q, want := range map[float64]float64{0: 0, 0.5: 50, 0.99: 99, 1: 100, 0.25: 25} {
		if got := quantile(s, q); math.Abs(got-want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestParseEthtoolK(t *testing.T) {
	out := `Features for rtr6:
rx-checksumming: on
tx-checksumming: on
	tx-checksum-ipv4: off [fixed]
scatter-gather: on
tcp-segmentation-offload: on
generic-segmentation-offload: on
generic-receive-offload: off
rx-gro-list: off
rx-udp-gro-forwarding: off [fixed]
`
	got := parseEthtoolK(out, offloadFeatures)
	want := map[string]string{"tx-checksumming": "on", "scatter-gather": "on", "tcp-segmentation-offload": "on",
		"generic-segmentation-offload": "on", "generic-receive-offload": "off", "rx-gro-list": "off", "rx-udp-gro-forwarding": "off"}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestStaleNamespaces(t *testing.T) {
	list := "bn-100-cli (id: 3)\nbn-100-rtr\nbn-200-srv (id: 1)\nbn-300-cli\nj-xlat\ndp-100-cli\nbn-x-cli\nbn-100-other\n"
	alive := func(pid int) bool { return pid == 300 }
	got := staleNamespaces(list, alive)
	want := []string{"bn-100-cli", "bn-100-rtr", "bn-200-srv"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("stale = %v, want %v", got, want)
	}
}

func TestTopologyNames(t *testing.T) {
	tp := newTopology(4242)
	for _, ns := range tp.all() {
		if !strings.HasPrefix(ns, "bn-4242-") {
			t.Errorf("namespace %q lacks the harness prefix", ns)
		}
		if staleNS.FindStringSubmatch(ns) == nil {
			t.Errorf("namespace %q would never be recognised as stale", ns)
		}
	}
}

func TestParseCPUInfo(t *testing.T) {
	model, n := parseCPUInfo("processor\t: 0\nmodel name\t: AMD EPYC 7763\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763\n")
	if model != "AMD EPYC 7763" || n != 2 {
		t.Errorf("got %q, %d", model, n)
	}
	if model, n := parseCPUInfo(""); model != "unknown CPU" || n != 0 {
		t.Errorf("empty: %q %d", model, n)
	}
}

func TestCountLabel(t *testing.T) {
	for n, want := range map[int]string{1_000_000: "1M", 2_000_000: "2M", 100_000: "100k", 1500: "1500", 12: "12"} {
		if got := countLabel(n); got != want {
			t.Errorf("countLabel(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestQdiscSummary(t *testing.T) {
	for out, want := range map[string]string{
		"qdisc mq 0: root \nqdisc fq_codel 0: parent :2 limit 10240p\nqdisc fq_codel 0: parent :1 limit 10240p\n": "mq (2 children)",
		"qdisc fq_codel 0: root refcnt 2 limit 10240p flows 1024\n":                                               "fq_codel",
		"qdisc noqueue 0: root refcnt 2\n":                                                                        "noqueue",
		"":                                                                                                        "none",
	} {
		if got := qdiscSummary(out); got != want {
			t.Errorf("qdiscSummary(%q) = %q, want %q", out, got, want)
		}
	}
}

func TestPingLoss(t *testing.T) {
	out := "64 bytes from 198.51.100.10: icmp_seq=1 ttl=62 time=0.120 ms\n\n--- 198.51.100.10 ping statistics ---\n4 packets transmitted, 1 received, 75% packet loss, time 30ms\n"
	r, err := parsePing(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.lossPercent(); got != 75 {
		t.Errorf("loss = %v, want 75", got)
	}
	if got := (pingResult{}).lossPercent(); !math.IsNaN(got) {
		t.Errorf("loss of nothing sent = %v, want NaN", got)
	}
	// Every echo lost: an error from parsePing, but the counts are there
	// for udp64WithPing to report 100% loss.
	r, err = parsePing("\n--- x ping statistics ---\n5 packets transmitted, 0 received, 100% packet loss, time 40ms\n")
	if err == nil || r.Sent != 5 || r.Received != 0 || r.lossPercent() != 100 {
		t.Errorf("all lost: %+v, %v", r, err)
	}
}
