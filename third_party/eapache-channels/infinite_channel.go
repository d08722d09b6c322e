// Package channels stands in for github.com/eapache/channels v1.1.0 (MIT,
// see LICENSE) in map646's build (go.mod's replace directive). GoBGP v4
// (pkg/server) uses one type of it, InfiniteChannel: the unbounded queue
// of each BGP session's outgoing messages and of each watcher's events.
// This one has the same API and behaviour but for Close, which discards
// what is still buffered and closes Out at once, where the original keeps
// offering it on Out until someone has read it all.
//
// GoBGP closes an InfiniteChannel only to throw its contents away
// (cleanInfiniteChannel: Close, then a drain that stops at the first
// moment Out has nothing ready). With the original, the buffering
// goroutine is then left blocked for good, holding every message still
// queued, whenever more than one was: a session whose neighbour stopped
// reading (its TCP window full, GoBGP's sender stuck in its write) left
// one goroutine and all the UPDATEs queued behind the write each time the
// speaker stopped, that is on every reload that changed the bgp block
// (map646's appliance/bgp TestSpeakerRestartStalledNeighborNoLeak).
package channels

// BufferCap is the capacity of a channel's buffer; Infinity is unbounded.
type BufferCap int

// Infinity is the capacity of an InfiniteChannel.
const Infinity BufferCap = -1

// InfiniteChannel is a channel with an unbounded buffer between In and
// Out, kept by a goroutine that ends when the channel is closed.
type InfiniteChannel struct {
	input, output chan interface{}
	length        chan int
}

// NewInfiniteChannel returns an open InfiniteChannel and starts its
// goroutine.
func NewInfiniteChannel() *InfiniteChannel {
	ch := &InfiniteChannel{
		input:  make(chan interface{}),
		output: make(chan interface{}),
		length: make(chan int),
	}
	go ch.infiniteBuffer()
	return ch
}

// In is where values go in; sending after Close panics.
func (ch *InfiniteChannel) In() chan<- interface{} { return ch.input }

// Out yields the values in the order they went in; it is closed by Close.
func (ch *InfiniteChannel) Out() <-chan interface{} { return ch.output }

// Len is the number of values buffered (0 once closed).
func (ch *InfiniteChannel) Len() int { return <-ch.length }

// Cap is Infinity.
func (ch *InfiniteChannel) Cap() BufferCap { return Infinity }

// Close ends the channel: the values still buffered are dropped and Out
// is closed, so that the goroutine ends whether or not anyone reads.
func (ch *InfiniteChannel) Close() { close(ch.input) }

func (ch *InfiniteChannel) infiniteBuffer() {
	defer close(ch.length)
	defer close(ch.output)
	var buf []interface{}
	for {
		var out chan interface{}
		var next interface{}
		if len(buf) > 0 {
			out, next = ch.output, buf[0]
		}
		select {
		case v, open := <-ch.input:
			if !open {
				return // what is left in buf goes with it
			}
			buf = append(buf, v)
		case out <- next:
			buf[0] = nil
			buf = buf[1:]
			if len(buf) == 0 {
				buf = nil // let the backing array go
			}
		case ch.length <- len(buf):
		}
	}
}
