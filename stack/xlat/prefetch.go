package xlat

// prefetchChunk is how many packets Worker.Prefetch reads addresses from
// before it hands them to the mapping snapshot: a batch of a few dozen
// packets (the links read up to 64 per wake-up) in one pass, so that
// every slot load of the batch is in flight together.
const prefetchChunk = 64

// prefetchKeys holds the addresses of one chunk (two per packet).
type prefetchKeys struct {
	v4 [2 * prefetchChunk][4]byte
	v6 [2 * prefetchChunk][16]byte
}

// Prefetch warms the mapping-table memory that Process will read for each
// of pkts, so that a batched link (recvmmsg, a TPACKET ring, io_uring) can
// overlap the batch's table cache misses before it translates the packets
// one by one: at a million EAM entries each lookup is otherwise a cache
// miss that the packet waits for. Each pkts[i] is one packet from its
// first byte, as Process gets buf[start:end]; Prefetch reads only the
// version nibble and the fixed header's addresses (the IPv4 destination
// and source, To6; the IPv6 destination and source, To4, whose RFC 7757
// section 4.2 hairpin check reads the EAM entry of an address in the RFC
// 6052 prefix instead), and skips anything too short to hold them.
//
// It uses the snapshot current at the call, as Process loads it per
// packet; across a Reload it warms the old table, which is harmless.
// Prefetch changes no result and no counter, and does not allocate; it
// pays for itself only when the table is much larger than the CPU caches
// (see docs/datapath.md "Batches and the mapping table"). Like Process it
// is for the worker's own goroutine. Batches of up to a few dozen packets
// keep the warmed lines in cache until they are translated.
func (w *Worker) Prefetch(pkts [][]byte) {
	m := w.eng.st.Load().m
	k := &w.prefetch
	for len(pkts) > 0 {
		chunk := pkts[:min(len(pkts), prefetchChunk)]
		pkts = pkts[len(chunk):]
		n4, n6 := k.collect(chunk)
		m.Prefetch(k.v4[:n4], k.v6[:n6])
	}
}

// collect stores the addresses Process looks up for each packet of pkts
// (at most prefetchChunk) and returns how many of each family it stored.
func (k *prefetchKeys) collect(pkts [][]byte) (n4, n6 int) {
	for _, p := range pkts {
		switch {
		case len(p) >= ip4Size && p[0]>>4 == 4:
			k.v4[n4], k.v4[n4+1] = [4]byte(p[ip4Dst:]), [4]byte(p[ip4Src:])
			n4 += 2
		case len(p) >= ip6Size && p[0]>>4 == 6:
			k.v6[n6], k.v6[n6+1] = [16]byte(p[ip6Dst:]), [16]byte(p[ip6Src:])
			n6 += 2
		}
	}
	return n4, n6
}
