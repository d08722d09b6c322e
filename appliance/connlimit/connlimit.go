// Package connlimit keeps a server's open connections under a cap. At the
// cap a new connection takes the place of the oldest one that is idle
// (not serving a request); when every connection is busy, the new one is
// refused. A client that opens connections and sends nothing (slowloris)
// so loses its own connections, not those of the clients it crowds out.
// The metrics endpoint and the control socket share it.
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is one tracked connection.
type Conn struct {
	net.Conn
	accepted time.Time
	busy     atomic.Int32 // requests being served on it
}

// Enter marks c as serving a request (not to be closed for room) until
// the matching Leave.
func (c *Conn) Enter() { c.busy.Add(1) }

// Leave ends what Enter began.
func (c *Conn) Leave() { c.busy.Add(-1) }

// Idle reports whether c serves no request: it may make room.
func (c *Conn) Idle() bool { return c.busy.Load() == 0 }

// Set is the connections open; the zero value is not usable (NewSet).
type Set struct {
	max   int
	mu    sync.Mutex
	conns map[*Conn]struct{}
}

// NewSet returns a set of at most max connections.
func NewSet(max int) *Set {
	return &Set{max: max, conns: map[*Conn]struct{}{}}
}

// Add tracks c, busy (as after Enter) or idle. At the cap it removes the
// oldest idle connection and returns it as victim, for the caller to
// close and count; when every connection is busy, c is not tracked and
// ok is false: the caller refuses it.
func (s *Set) Add(c net.Conn, busy bool) (cc, victim *Conn, ok bool) {
	cc = &Conn{Conn: c, accepted: time.Now()}
	if busy {
		cc.Enter()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conns) >= s.max {
		for o := range s.conns {
			if o.Idle() && (victim == nil || o.accepted.Before(victim.accepted)) {
				victim = o
			}
		}
		if victim == nil {
			return nil, nil, false
		}
		delete(s.conns, victim)
	}
	s.conns[cc] = struct{}{}
	return cc, victim, true
}

// Max is the cap.
func (s *Set) Max() int { return s.max }

// Remove stops tracking c (closed, or about to be).
func (s *Set) Remove(c *Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Each calls f with each connection tracked, holding the set's lock.
func (s *Set) Each(f func(*Conn)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		f(c)
	}
}

// Len is the number of connections tracked.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
