package tun

import (
	"sync/atomic"
	"testing"
)

// fakeSQRing is a ring whose submission queue is plain memory: what the
// queue's bookkeeping prepares can be read back, and no entry is ever
// submitted (its space never runs out in these tests).
func fakeSQRing() *ring {
	const entries = 64
	return &ring{
		sqes:    make([]uringSqe, entries),
		sqArray: make([]uint32, entries),
		sqMask:  entries - 1,
		sqHead:  new(uint32),
		sqTail:  new(uint32),
	}
}

// lastSqe is the entry queued last.
func (r *ring) lastSqe() *uringSqe { return &r.sqes[(r.tail-1)&r.sqMask] }

func newBookkeeping() *uringIO {
	u := &uringIO{r: fakeSQRing(), cur: -1, unsent: new(atomic.Bool)}
	u.slots = make([]*Frame, uringSlots)
	for i := range u.slots {
		u.slots[i] = &Frame{buf: make([]byte, 64)}
	}
	return u
}

// deliverWrite does to slot what a delivery whose packet is written back
// does (uringLoop, deliver, writePacket): the write queued linked to the
// slot's next read, then that read. It returns the user data of both.
func deliverWrite(t *testing.T, u *uringIO, slot int) (write, read uint64) {
	t.Helper()
	u.cur = slot
	if !u.queueWrite(u.slots[slot].buf[:20]) {
		t.Fatal("queueWrite refused a write during a delivery")
	}
	w := u.r.lastSqe()
	if want := uint8(uringSqeFixedFile | uringSqeLink | uringSqeSkipSuccess); w.flags != want || w.opcode != uringOpWrite {
		t.Fatalf("write entry: opcode %d flags %#x, want %d and %#x (linked to the read, completion only on failure)", w.opcode, w.flags, uringOpWrite, want)
	}
	write = w.userData
	u.cur = -1
	u.postRead(slot)
	read = u.r.lastSqe().userData
	if k := read & uringKind; k != uringRead {
		t.Fatalf("the entry after the write is of kind %#x, not a read", k)
	}
	return write, read
}

// TestURingLinkedReadEnds: the failure of a write cancels the slot's read
// linked behind it. Linux 6.18 posts no completion for that read (the
// failed write had IOSQE_CQE_SKIP_SUCCESS); a kernel may post -ECANCELED
// for it, before or after the write's. In every order the slot is freed
// once, read again once, and the late completion neither frees that new
// read nor counts the slot twice; a generation that wraps (24 bits) still
// matches between the write and its read.
func TestURingLinkedReadEnds(t *testing.T) {
	const slot = 5
	for _, tc := range []struct {
		name  string
		order string // the completions after the write failed: w its own, r the read's -ECANCELED
		gen   uint32 // the slot's generation before the delivery
	}{
		{"write only (Linux 6.18)", "w", 7},
		{"write then cancelled read", "wr", 7},
		{"cancelled read then write", "rw", 7},
		{"write only, generation wraps to 0", "w", uringGenMask - 1},
		{"cancelled read then write, generation wraps after", "rw", uringGenMask - 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newBookkeeping()
			u.gen[slot] = tc.gen
			u.postRead(slot) // the read that brings the packet
			first := u.r.lastSqe().userData
			if !u.readEnded(uringSlotGen(first)) || u.busy != 0 {
				t.Fatalf("the first read's completion: busy %d", u.busy)
			}
			write, read := deliverWrite(t, u, slot)
			ws, wg := uringSlotGen(write)
			rs, rg := uringSlotGen(read)
			if ws != slot || rs != slot || wg != rg {
				t.Fatalf("write carries slot %d gen %d, its read slot %d gen %d: they must match", ws, wg, rs, rg)
			}
			if u.busy != 1 || !u.reading[slot] {
				t.Fatalf("after the delivery: busy %d, reading %v; want 1, true", u.busy, u.reading[slot])
			}
			frees := 0
			for _, c := range tc.order {
				ud := write
				if c == 'r' {
					ud = read
				}
				// What uringLoop does with either completion: the one
				// that frees the slot reads into it again.
				if u.readEnded(uringSlotGen(ud)) {
					frees++
					u.postRead(slot)
				}
			}
			if frees != 1 {
				t.Fatalf("completions %q freed the slot %d times, want once", tc.order, frees)
			}
			if u.busy != 1 || !u.reading[slot] {
				t.Fatalf("after the failure: busy %d, reading %v; want the slot read again once", u.busy, u.reading[slot])
			}
			again := u.r.lastSqe().userData
			for _, stale := range []uint64{write, read, first} {
				if u.readEnded(uringSlotGen(stale)) {
					t.Fatalf("a late completion (user data %#x) ended the slot's new read", stale)
				}
			}
			if !u.readEnded(uringSlotGen(again)) || u.busy != 0 || u.reading[slot] {
				t.Fatalf("the new read's own completion: busy %d, reading %v; want 0, false", u.busy, u.reading[slot])
			}
		})
	}
}
