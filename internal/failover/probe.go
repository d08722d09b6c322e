package failover

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sample is one probe packet: when it was sent (since the experiment's
// start) and its round-trip time, or lost.
type Sample struct {
	Flow string
	Seq  int
	Sent time.Duration
	RTT  time.Duration
	Lost bool
}

// probeLen is the UDP probe payload: flow, sequence number, send time.
const probeLen = 4 + 4 + 8

// EchoUDP answers every datagram on c with the same bytes until c is
// closed: the IPv6-only server's side of the UDP stream.
func EchoUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteTo(buf[:n], from)
	}
}

// UDPFlow sends numbered datagrams on its own connected socket (so each flow
// has its own source port and may hash onto its own ECMP path) and matches
// the echoes.
type UDPFlow struct {
	Name     string
	conn     net.Conn
	id       uint32
	interval time.Duration
	t0       time.Time

	mu   sync.Mutex
	sent map[uint32]time.Duration
	rtt  map[uint32]time.Duration
	done chan struct{}
	wg   sync.WaitGroup
}

// NewUDPFlow wraps a connected UDP socket (opened by the caller inside the
// client's namespace).
func NewUDPFlow(name string, id uint32, c net.Conn, interval time.Duration, t0 time.Time) *UDPFlow {
	return &UDPFlow{Name: name, conn: c, id: id, interval: interval, t0: t0,
		sent: map[uint32]time.Duration{}, rtt: map[uint32]time.Duration{}, done: make(chan struct{})}
}

// Start begins sending and receiving.
func (f *UDPFlow) Start() {
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := f.conn.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ICMP errors surface as read errors on connected sockets
			}
			now := time.Since(f.t0)
			if n != probeLen || binary.BigEndian.Uint32(buf) != f.id {
				continue
			}
			seq := binary.BigEndian.Uint32(buf[4:])
			sent := time.Duration(binary.BigEndian.Uint64(buf[8:]))
			f.mu.Lock()
			if _, dup := f.rtt[seq]; !dup {
				f.rtt[seq] = now - sent
			}
			f.mu.Unlock()
		}
	}()
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(f.interval)
		defer t.Stop()
		var pkt [probeLen]byte
		for seq := uint32(1); ; seq++ {
			select {
			case <-f.done:
				return
			case <-t.C:
			}
			now := time.Since(f.t0)
			binary.BigEndian.PutUint32(pkt[:], f.id)
			binary.BigEndian.PutUint32(pkt[4:], seq)
			binary.BigEndian.PutUint64(pkt[8:], uint64(now))
			f.mu.Lock()
			f.sent[seq] = now
			f.mu.Unlock()
			f.conn.Write(pkt[:]) // a send error is a lost probe
		}
	}()
}

// StopSending stops sending; echoes are still received until Samples.
func (f *UDPFlow) StopSending() { close(f.done) }

// Samples stops receiving and returns the samples; call it after
// StopSending and a grace time for late echoes.
func (f *UDPFlow) Samples() []Sample {
	f.conn.Close()
	f.wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Sample, 0, len(f.sent))
	for seq, sent := range f.sent {
		rtt, ok := f.rtt[seq]
		out = append(out, Sample{Flow: f.Name, Seq: int(seq), Sent: sent, RTT: rtt, Lost: !ok})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	return out
}

// pingLine matches a reply of iputils ping -D:
// "[1700000000.123456] 64 bytes from 198.51.100.10: icmp_seq=5 ttl=62 time=0.123 ms".
var pingLine = regexp.MustCompile(`^\[(\d+\.\d+)\] .* icmp_seq=(\d+) .*time=([0-9.]+) ms`)

// pingSummary matches "N packets transmitted".
var pingSummary = regexp.MustCompile(`^(\d+) packets transmitted`)

// ParsePing turns the output of `ping -D -i interval` into samples: one per
// transmitted echo request, lost if no reply was printed. The send time of
// a reply is its arrival minus its RTT; a lost request's is interpolated
// from its sequence number.
func ParsePing(r io.Reader, flow string, t0 time.Time, interval time.Duration) ([]Sample, error) {
	replies := map[int]Sample{}
	transmitted := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if m := pingLine.FindStringSubmatch(line); m != nil {
			sec, frac, _ := strings.Cut(m[1], ".")
			secs, _ := strconv.ParseInt(sec, 10, 64)
			frac = (frac + "000000000")[:9]
			nsec, _ := strconv.ParseInt(frac, 10, 64)
			seq, _ := strconv.Atoi(m[2])
			rtt, _ := time.ParseDuration(m[3] + "ms")
			arrived := time.Unix(secs, nsec)
			if _, dup := replies[seq]; !dup {
				replies[seq] = Sample{Flow: flow, Seq: seq, Sent: arrived.Add(-rtt).Sub(t0), RTT: rtt}
			}
		} else if m := pingSummary.FindStringSubmatch(line); m != nil {
			transmitted, _ = strconv.Atoi(m[1])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if transmitted == 0 {
		return nil, errors.New("ping: no summary line (was it stopped with SIGINT?)")
	}
	// Anchor the send times of lost requests on the nearest reply.
	var anchorSeq int
	var anchorSent time.Duration
	for seq := 1; seq <= transmitted; seq++ {
		if s, ok := replies[seq]; ok {
			anchorSeq, anchorSent = seq, s.Sent
			break
		}
	}
	out := make([]Sample, 0, transmitted)
	for seq := 1; seq <= transmitted; seq++ {
		if s, ok := replies[seq]; ok {
			anchorSeq, anchorSent = seq, s.Sent
			out = append(out, s)
			continue
		}
		out = append(out, Sample{Flow: flow, Seq: seq, Lost: true,
			Sent: anchorSent + time.Duration(seq-anchorSeq)*interval})
	}
	return out, nil
}
