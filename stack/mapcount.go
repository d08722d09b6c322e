package stack

import (
	"cmp"
	"container/heap"
	"sync"
	"sync/atomic"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// MappingCount is one EAM entry's traffic: the packets the engine
// translated (or consumed into fragments) and their bytes, per direction
// (xlat.Dir46: to the server, xlat.Dir64: from it).
type MappingCount struct {
	Packets [xlat.NumDirs]uint64
	Bytes   [xlat.NumDirs]uint64
}

// Total is the count of both directions: packets, then bytes.
func (c MappingCount) Total() (packets, bytes uint64) {
	return c.Packets[xlat.Dir46] + c.Packets[xlat.Dir64], c.Bytes[xlat.Dir46] + c.Bytes[xlat.Dir64]
}

func (c *MappingCount) zero() bool { return *c == MappingCount{} }

// entryCounters is one entry's counters on one queue. The queue is their
// only writer (plain load and store, no locked instruction); readers load
// them atomically.
type entryCounters struct {
	packets, bytes [xlat.NumDirs]atomic.Uint64
}

// countSet is the counters of one table: per queue, one entryCounters per
// entry (indexed by the table's entry index), and what earlier tables had
// counted for the entries this one kept.
type countSet struct {
	idx   *mapping.EntryIndex
	queue [][]entryCounters
	base  []MappingCount // nil: nothing carried; written only under MappingCounters.mu
}

// entry is the index of the entry a packet is counted at: the one that
// translates the server's address, the destination of an IPv4 packet, the
// source of an IPv6 one (RFC 7757 sections 3.1 and 3.2).
func (s *countSet) entry(p []byte) int {
	var i int
	var ok bool
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		i, ok = s.idx.Entry4([4]byte(p[16:20]))
	case len(p) >= 40 && p[0]>>4 == 6:
		i, ok = s.idx.Entry6([16]byte(p[8:24]))
	}
	if !ok {
		return -1
	}
	return i
}

// sum is entry i's counts over the queues and the carried base. The
// caller holds MappingCounters.mu.
func (s *countSet) sum(i int) MappingCount {
	var c MappingCount
	if s.base != nil {
		c = s.base[i]
	}
	for _, q := range s.queue {
		e := &q[i]
		for d := range xlat.NumDirs {
			c.Packets[d] += e.packets[d].Load()
			c.Bytes[d] += e.bytes[d].Load()
		}
	}
	return c
}

// MappingCounters counts packets and bytes per EAM entry and direction,
// for `map646 stats --mappings` and the opt-in /metrics export.
//
// Each Handler queue counts into its own array, indexed by the table's
// entry index (mapping.EntryIndex): a queue is the only writer of its
// array, so counting takes a plain add and no locked instruction, and
// queues never share a cache line of counters; readers sum the queues with
// atomic loads. That costs 32 bytes per entry per queue, plus the entry
// index (about 14 bytes per entry), plus 32 bytes per entry after a reload
// that carried counts over.
//
// A packet is counted at the entry that translated its server-side
// address (the destination of IPv4, the source of IPv6), once, with its
// IP length as received (before translation, as xlat.Totals counts bytes);
// a GSO super-packet is one packet of its whole length. Dropped packets
// are not counted here (the engine counts them per reason).
//
// Replace moves the counters to a new table: entries present in both
// (same IPv4 and IPv6 prefix) keep their counts, the others start at zero.
type MappingCounters struct {
	queues int
	cur    atomic.Pointer[countSet]
	mu     sync.Mutex // held by Replace until the counts are carried over
}

func newCountSet(t *mapping.Table, queues int) *countSet {
	s := &countSet{idx: t.EntryIndex(), queue: make([][]entryCounters, queues)}
	for q := range s.queue {
		s.queue[q] = make([]entryCounters, t.Len())
	}
	return s
}

// newMappingCounters returns counters for t with one array per queue.
func newMappingCounters(t *mapping.Table, queues int) *MappingCounters {
	m := &MappingCounters{queues: queues}
	m.cur.Store(newCountSet(t, queues))
	return m
}

// Replace switches the counters to table t (the engine's new one, after a
// reload): an entry of t that was also in the old table (both prefixes
// equal) keeps its counts, whatever its position. Queues move to t at
// their next packet; a packet a queue is handling at the moment of the
// switch may go uncounted.
func (m *MappingCounters) Replace(t *mapping.Table) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.cur.Load()
	if old.idx.Table() == t {
		return
	}
	s := newCountSet(t, m.queues)
	m.cur.Store(s)
	// Readers wait on mu while the counts are carried over, so they never
	// see them drop.
	ot := old.idx.Table()
	for j := range ot.Len() {
		c := old.sum(j)
		if c.zero() {
			continue
		}
		e := ot.Entry(j)
		// Most reloads keep most entries where they were: try the same
		// position before the index.
		i, ok := j, j < t.Len() && t.Entry(j) == e
		if !ok {
			i, ok = s.idx.Exact(e)
		}
		if ok {
			if s.base == nil {
				s.base = make([]MappingCount, t.Len())
			}
			s.base[i] = c
		}
	}
}

// Table is the table the counters are counting for.
func (m *MappingCounters) Table() *mapping.Table { return m.cur.Load().idx.Table() }

// Each calls fn for every entry of the table, in table order, with its
// counts, until fn returns false. It walks the table counted when it
// started: a Replace meanwhile neither waits for it (a slow reader holds
// up no reload) nor changes what it lists.
func (m *MappingCounters) Each(fn func(i int, e mapping.Entry, c MappingCount) bool) {
	m.mu.Lock()
	s := m.cur.Load() // its base is complete and, from now on, never written
	m.mu.Unlock()
	t := s.idx.Table()
	for i := range t.Len() {
		if !fn(i, t.Entry(i), s.sum(i)) {
			return
		}
	}
}

// MappingStat is one entry with its counts.
type MappingStat struct {
	Index int // in the table's order
	Entry mapping.Entry
	MappingCount
}

// Top returns the n entries with the most packets (byBytes: bytes), both
// directions together, most first, ties in table order. Entries without
// traffic are left out. It keeps n entries at a time, whatever the size of
// the table.
func (m *MappingCounters) Top(n int, byBytes bool) []MappingStat {
	if n <= 0 {
		return nil
	}
	key := func(c *MappingCount) uint64 {
		p, b := c.Total()
		if byBytes {
			return b
		}
		return p
	}
	h := &topHeap{key: key}
	m.Each(func(i int, e mapping.Entry, c MappingCount) bool {
		if c.zero() {
			return true
		}
		if h.Len() == n {
			// Most entries do not beat the weakest kept: decide that
			// before building anything (ties go to the earlier entry,
			// which the kept one is).
			if k := key(&c); k <= key(&h.s[0].MappingCount) {
				return true
			}
			h.s[0] = MappingStat{Index: i, Entry: e, MappingCount: c}
			heap.Fix(h, 0)
			return true
		}
		heap.Push(h, MappingStat{Index: i, Entry: e, MappingCount: c})
		return true
	})
	out := make([]MappingStat, h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = heap.Pop(h).(MappingStat)
	}
	return out
}

// topHeap is a min-heap of the best entries so far: its root is the one
// the next better entry replaces.
type topHeap struct {
	s   []MappingStat
	key func(*MappingCount) uint64
}

// less orders a before b when a ranks lower: fewer packets (bytes), or as
// many and later in the table.
func (h *topHeap) less(a, b *MappingStat) bool {
	if c := cmp.Compare(h.key(&a.MappingCount), h.key(&b.MappingCount)); c != 0 {
		return c < 0
	}
	return a.Index > b.Index
}

func (h *topHeap) Len() int           { return len(h.s) }
func (h *topHeap) Less(i, j int) bool { return h.less(&h.s[i], &h.s[j]) }
func (h *topHeap) Swap(i, j int)      { h.s[i], h.s[j] = h.s[j], h.s[i] }
func (h *topHeap) Push(x any)         { h.s = append(h.s, x.(MappingStat)) }
func (h *topHeap) Pop() any {
	x := h.s[len(h.s)-1]
	h.s = h.s[:len(h.s)-1]
	return x
}

// CountMappings turns per-entry counting on for table t (the engine's
// table) and returns the counters, or, with t nil, turns it off and
// returns nil. Counting costs each packet a lookup in the entry index.
func (h *Handler) CountMappings(t *mapping.Table) *MappingCounters {
	if t == nil {
		h.counts.Store(nil)
		return nil
	}
	if m := h.counts.Load(); m != nil {
		m.Replace(t)
		return m
	}
	m := newMappingCounters(t, len(h.queues))
	h.counts.Store(m)
	return m
}

// MappingCounters returns the per-entry counters, nil while counting is
// off.
func (h *Handler) MappingCounters() *MappingCounters { return h.counts.Load() }

// CountMappings is Handler.CountMappings of the data path's handler.
func (d *Datapath) CountMappings(t *mapping.Table) *MappingCounters {
	return d.handler.CountMappings(t)
}

// MappingCounters is Handler.MappingCounters of the data path's handler.
func (d *Datapath) MappingCounters() *MappingCounters { return d.handler.MappingCounters() }
