package xlat

import (
	"errors"
	"sync"
	"sync/atomic"
)

// Dir is the direction of translation.
type Dir uint8

const (
	Dir46 Dir = iota // IPv4 -> IPv6
	Dir64            // IPv6 -> IPv4
	NumDirs
)

func (d Dir) String() string {
	if d == Dir46 {
		return "4to6"
	}
	return "6to4"
}

// Proto classifies packets for counters.
type Proto uint8

const (
	ProtoOther Proto = iota
	ProtoTCP
	ProtoUDP
	ProtoICMP
	ProtoFragment // a non-first fragment
	NumProtos
)

var protoNames = [NumProtos]string{"other", "tcp", "udp", "icmp", "fragment"}

func (p Proto) String() string { return protoNames[p] }

// Reason says why a packet was not translated.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonMalformed
	NumReasons
)

var reasonNames = [NumReasons]string{"none", "malformed"}

func (r Reason) String() string { return reasonNames[r] }

// Counters are one worker's tallies; each worker is their only writer.
type Counters struct {
	Packets [NumDirs][NumProtos]atomic.Uint64
	Bytes   [NumDirs]atomic.Uint64
	Drops   [NumDirs][NumReasons]atomic.Uint64
	Emitted atomic.Uint64 // packets made by the engine (ICMP errors, fragments)
}

// Engine holds the current configuration; Workers translate with it.
type Engine struct {
	cfg     atomic.Pointer[Config]
	mu      sync.Mutex
	workers []*Worker
}

// NewEngine checks c and returns an engine that uses it.
func NewEngine(c *Config) (*Engine, error) {
	e := &Engine{}
	if err := e.Reload(c); err != nil {
		return nil, err
	}
	return e, nil
}

// Reload swaps in a new configuration atomically; packets in flight finish
// with the old one.
func (e *Engine) Reload(c *Config) error {
	if c == nil || c.Map == nil {
		return errors.New("xlat: configuration without an address map")
	}
	e.cfg.Store(c)
	return nil
}

// Config returns the configuration in use.
func (e *Engine) Config() *Config { return e.cfg.Load() }

// Worker is the per-goroutine part of the engine: scratch buffers, the ICMP
// rate limiter and counters. A Worker must not be used concurrently.
type Worker struct {
	eng *Engine
	C   Counters
}

// NewWorker returns a worker registered with e (its counters are summed by
// Engine.Totals).
func (e *Engine) NewWorker() *Worker {
	w := &Worker{eng: e}
	e.mu.Lock()
	e.workers = append(e.workers, w)
	e.mu.Unlock()
	return w
}

// Process translates the IPv4 or IPv6 packet at buf[start:end] in place.
// start must be at least Headroom. off may be nil (no offload metadata).
func (w *Worker) Process(buf []byte, start, end int, off *Offload, sink Sink) Result {
	panic("xlat: Process is being written (issue 2)")
}
