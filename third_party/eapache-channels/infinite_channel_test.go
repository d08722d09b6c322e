package channels

import (
	"runtime"
	"testing"
	"time"
)

// TestInfiniteChannelOrder: values come out in the order they went in,
// however many are buffered, and Len counts them.
func TestInfiniteChannelOrder(t *testing.T) {
	ch := NewInfiniteChannel()
	defer ch.Close()
	const n = 1000
	for i := range n {
		ch.In() <- i
	}
	if l := ch.Len(); l != n {
		t.Errorf("Len = %d, want %d", l, n)
	}
	for i := range n {
		if v := <-ch.Out(); v != i {
			t.Fatalf("value %d came out as %v", i, v)
		}
	}
	if l := ch.Len(); l != 0 {
		t.Errorf("Len after reading all = %d", l)
	}
}

// TestInfiniteChannelCloseDropsBuffered: Close with values buffered and
// no reader (what GoBGP does to a stopped session's queue, whose drain
// takes at most what Out has ready at once) ends the goroutine and closes
// Out. The original kept the goroutine blocked for good, offering the
// next value.
func TestInfiniteChannelCloseDropsBuffered(t *testing.T) {
	before := runtime.NumGoroutine()
	chs := make([]*InfiniteChannel, 10)
	for i := range chs {
		chs[i] = NewInfiniteChannel()
		for v := range 100 {
			chs[i].In() <- v
		}
		chs[i].Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after closing 10 channels with values buffered, %d before", n, before)
	}
	for _, ch := range chs {
		if v, open := <-ch.Out(); open {
			t.Errorf("Out yields %v after Close", v)
		}
		if l := ch.Len(); l != 0 {
			t.Errorf("Len after Close = %d", l)
		}
	}
}
