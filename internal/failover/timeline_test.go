package failover

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestLossWindowsAndUnexplained(t *testing.T) {
	var samples []Sample
	for i := 1; i <= 100; i++ {
		s := Sample{Flow: "udp", Seq: i, Sent: ms(10 * i), RTT: ms(1)}
		// Lost: 40..44 (around the event at 400 ms) and 90 (unexplained).
		if (i >= 40 && i <= 44) || i == 90 {
			s.Lost, s.RTT = true, 0
		}
		samples = append(samples, s)
	}
	samples = append(samples, Sample{Flow: "icmp", Seq: 1, Sent: ms(405), Lost: true})

	w := LossWindows(samples)
	want := []Window{
		{Flow: "udp", From: ms(400), To: ms(440), Lost: 5},
		{Flow: "icmp", From: ms(405), To: ms(405), Lost: 1},
		{Flow: "udp", From: ms(900), To: ms(900), Lost: 1},
	}
	if len(w) != len(want) {
		t.Fatalf("windows %+v, want %+v", w, want)
	}
	for i := range want {
		if w[i] != want[i] {
			t.Errorf("window %d = %+v, want %+v", i, w[i], want[i])
		}
	}
	un := Unexplained(samples, []Event{{At: ms(400), Label: "stop"}}, ms(100), ms(400))
	if len(un) != 1 || un[0].Seq != 90 {
		t.Errorf("unexplained %+v, want only udp seq 90", un)
	}
	if n := Received(samples, "udp", 0, ms(500)); n != 49-5 {
		t.Errorf("received before 500 ms = %d, want 44", n)
	}
	if m := MedianRTT(samples); m != ms(1) {
		t.Errorf("median %v", m)
	}
}

func TestParsePing(t *testing.T) {
	out := `PING 198.51.100.10 (198.51.100.10) 56(84) bytes of data.
[1700000000.010000] 64 bytes from 198.51.100.10: icmp_seq=1 ttl=62 time=0.100 ms
[1700000000.030000] 64 bytes from 198.51.100.10: icmp_seq=2 ttl=62 time=0.200 ms
[1700000000.090000] 64 bytes from 198.51.100.10: icmp_seq=5 ttl=62 time=0.300 ms

--- 198.51.100.10 ping statistics ---
6 packets transmitted, 3 received, 50% packet loss, time 100ms
`
	t0 := time.Unix(1700000000, 0)
	s, err := ParsePing(strings.NewReader(out), "icmp", t0, ms(20))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 6 {
		t.Fatalf("samples %+v", s)
	}
	lost := 0
	for _, x := range s {
		if x.Lost {
			lost++
		}
	}
	if lost != 3 || !s[2].Lost || s[4].Lost || s[4].RTT != 300*time.Microsecond {
		t.Errorf("samples %+v", s)
	}
	// Seq 3 is interpolated from seq 2 (sent at 29.8 ms) plus one interval.
	if got := s[2].Sent; got != 29800*time.Microsecond+ms(20) {
		t.Errorf("seq 3 sent at %v", got)
	}
	if _, err := ParsePing(strings.NewReader("PING x\n"), "icmp", t0, ms(20)); err == nil {
		t.Error("output without summary accepted")
	}
}

func TestWriteSVG(t *testing.T) {
	tl := &Timeline{
		Title:  "failover <test>",
		Events: []Event{{At: ms(1000), Label: "stop A"}, {At: ms(2000), Label: "start A"}},
		Rates: map[string][]RatePoint{
			"A": {{0, 100}, {ms(1000), 0}, {ms(2500), 50}},
			"B": {{0, 100}, {ms(1000), 200}, {ms(2500), 150}},
		},
	}
	for i := 1; i <= 150; i++ {
		tl.Samples = append(tl.Samples, Sample{Flow: "udp-1", Seq: i, Sent: ms(20 * i), RTT: ms(1), Lost: i == 51})
	}
	var b bytes.Buffer
	if err := tl.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	// Well-formed XML, with one dot per answered probe, one mark per lost
	// probe, one line per translator and the escaped title.
	d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
	counts := map[string]int{}
	marks := map[string]int{}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			counts[se.Name.Local]++
			var class, path string
			for _, a := range se.Attr {
				switch a.Name.Local {
				case "class":
					class = a.Value
				case "d":
					path = a.Value
				}
			}
			marks[class] += strings.Count(path, "M")
		}
	}
	if marks["probes"] != 149 || marks["lost"] != 1 || counts["polyline"] != 2 {
		t.Errorf("marks %v, elements %v", marks, counts)
	}
	if !strings.Contains(b.String(), "failover &lt;test&gt;") || !strings.Contains(b.String(), "stop A") {
		t.Error("title or event label missing")
	}
}
