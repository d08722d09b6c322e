package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/stack/xlat"
)

// BenchmarkTranslate1M: map646 translate over a capture of UDP packets
// between IPv4 clients and random servers of a million-entry table, both
// ways, one record at a time (batch=1) and in batches whose mapping slots
// are prefetched together (the command's translateBatch). ns/packet is
// the whole command's work: reading the capture, translating, writing.
func BenchmarkTranslate1M(b *testing.B) {
	const n, packets = 1_000_000, 1 << 14
	dir := b.TempDir()
	csv := filepath.Join(dir, "m.csv")
	f, err := os.Create(csv)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	server := func(i int) (net.IP, net.IP) {
		v4 := net.IPv4(20, byte(i>>16), byte(i>>8), byte(i)).To4()
		v6 := net.ParseIP("2001:db8:6::").To16()
		binary.BigEndian.PutUint32(v6[12:], uint32(i))
		return v4, v6
	}
	for i := range n {
		v4, v6 := server(i)
		fmt.Fprintf(w, "%v,%v\n", v4, v6)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	hcl := filepath.Join(dir, "c.hcl")
	if err := os.WriteFile(hcl, []byte("translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \""+csv+"\"\n}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	c, err := config.Load(hcl)
	if err != nil {
		b.Fatal(err)
	}
	xc, err := c.Xlat()
	if err != nil {
		b.Fatal(err)
	}
	var capture bytes.Buffer
	pw := pcapgo.NewWriter(&capture)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeRaw); err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	buf := gopacket.NewSerializeBuffer()
	for k := range packets {
		v4, v6 := server(rnd.IntN(n))
		var ls []gopacket.SerializableLayer
		u := &layers.UDP{SrcPort: 40000, DstPort: 53}
		if k%2 == 0 {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: client4, DstIP: v4, Flags: layers.IPv4DontFragment}
			u.SetNetworkLayerForChecksum(ip)
			ls = []gopacket.SerializableLayer{ip, u, gopacket.Payload("query")}
		} else {
			ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolUDP, SrcIP: v6, DstIP: client6}
			u.SetNetworkLayerForChecksum(ip)
			ls = []gopacket.SerializableLayer{ip, u, gopacket.Payload("answer")}
		}
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			b.Fatal(err)
		}
		p := buf.Bytes()
		if err := pw.WritePacket(gopacket.CaptureInfo{CaptureLength: len(p), Length: len(p)}, p); err != nil {
			b.Fatal(err)
		}
	}
	for _, batch := range []int{1, translateBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			eng, err := xlat.NewEngine(xc)
			if err != nil {
				b.Fatal(err)
			}
			wk := eng.NewWorker()
			runtime.GC() // the garbage of loading the table, not of the loop
			for b.Loop() {
				sum, err := translateCapture(wk, batch, bytes.NewReader(capture.Bytes()), io.Discard, io.Discard)
				if err != nil || sum.Translated != packets {
					b.Fatalf("%v: %v", sum, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*packets), "ns/packet")
		})
	}
}
