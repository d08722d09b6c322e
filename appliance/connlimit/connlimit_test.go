package connlimit

import (
	"net"
	"testing"
	"time"
)

func pipe(t *testing.T) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a
}

// TestSetMakesRoomWithTheOldestIdle: at the cap the oldest idle
// connection gives up its place; a busy one never does, and with every
// connection busy the new one is refused.
func TestSetMakesRoomWithTheOldestIdle(t *testing.T) {
	s := NewSet(2)
	old, _, ok := s.Add(pipe(t), false)
	if !ok {
		t.Fatal("first connection refused")
	}
	time.Sleep(time.Millisecond) // accepted times must differ
	young, _, _ := s.Add(pipe(t), false)
	time.Sleep(time.Millisecond)
	third, victim, ok := s.Add(pipe(t), false)
	if !ok || victim != old {
		t.Fatalf("at the cap: victim %p ok %v, want the oldest %p", victim, ok, old)
	}
	young.Enter() // serving a request
	third.Enter()
	if _, v, ok := s.Add(pipe(t), false); ok || v != nil {
		t.Fatalf("every connection busy: ok %v victim %p, want refused", ok, v)
	}
	third.Leave()
	if _, v, ok := s.Add(pipe(t), true); !ok || v != third {
		t.Fatalf("after Leave: victim %p ok %v, want %p", v, ok, third)
	}
	if n := s.Len(); n != 2 {
		t.Errorf("Len %d, want 2", n)
	}
	s.Remove(young)
	var idle, busy int
	s.Each(func(c *Conn) {
		if c.Idle() {
			idle++
		} else {
			busy++
		}
	})
	if idle != 0 || busy != 1 || s.Max() != 2 {
		t.Errorf("after Remove: %d idle, %d busy (want 0, 1: added busy); Max %d", idle, busy, s.Max())
	}
}
