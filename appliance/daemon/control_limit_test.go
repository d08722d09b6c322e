package daemon

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/appliance/connlimit"
)

// startLimitedControl serves a control socket with the given idle
// timeout and connection cap; its reloads are never taken (a request
// for one keeps its connection busy until Close).
func startLimitedControl(t *testing.T, idle time.Duration, maxConns int) (*controlServer, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &controlServer{ln: ln, path: sock, access: controlAccess{uid: os.Geteuid(), gid: -1},
		log: slog.New(slog.DiscardHandler), quit: make(chan struct{}), conns: connlimit.NewSet(maxConns),
		minPause: time.Millisecond, maxPause: 20 * time.Millisecond, connTimeout: controlConnTimeout,
		listingWriteIdle: listingWriteIdle, idleTimeout: idle, closed: &controlClosed{}}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.acceptLoop(&daemon{}, make(chan chan reloadReply)) }()
	t.Cleanup(func() { s.Close() })
	return s, sock
}

// dialServed connects and completes one request, so that the server
// waits for the connection's next one.
func dialServed(t *testing.T, s *controlServer, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if rep, err := controlRoundTrip(c, `{"command":"nonsense"}`); err != nil || !strings.Contains(rep.Error, "unknown command") {
		t.Fatalf("request: %+v %v", rep, err)
	}
	return c
}

// waiting is how many connections the server waits for a request on.
func (s *controlServer) waitingConns() (waiting, open int) {
	s.conns.Each(func(c *connlimit.Conn) {
		open++
		if c.Idle() {
			waiting++
		}
	})
	return waiting, open
}

// closedByServer reports whether the server closed c: a read ends with
// EOF, or a reset when the server closed it with a request unread, not
// with the test's deadline.
func closedByServer(c net.Conn, within time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF || errors.Is(err, syscall.ECONNRESET)
}

// TestControlIdleTimeout: a connection that sends no request for the
// idle timeout is closed and counted; one that keeps sending requests is
// not, however long it stays (review H4: 1000 idle clients each held a
// descriptor and a goroutine for 5 minutes).
func TestControlIdleTimeout(t *testing.T) {
	s, sock := startLimitedControl(t, 200*time.Millisecond, 64)
	idle := dialServed(t, s, sock)
	busy := dialServed(t, s, sock)
	for range 8 { // 800 ms of requests 100 ms apart
		time.Sleep(100 * time.Millisecond)
		if rep, err := controlRoundTrip(busy, `{"command":"nonsense"}`); err != nil || rep.Error == "" {
			t.Fatalf("a connection sending a request every 100 ms was cut: %+v %v", rep, err)
		}
	}
	if !closedByServer(idle, time.Second) {
		t.Error("a connection idle for 800 ms (timeout 200 ms) is still open")
	}
	if n := s.closed.idle.Load(); n != 1 {
		t.Errorf("idle closes counted: %d, want 1", n)
	}
}

// TestControlConnectionCap: at the cap a new connection takes the place
// of the oldest idle one; with every connection busy it is refused with
// an error reply. Both are counted.
func TestControlConnectionCap(t *testing.T) {
	const max = 3
	s, sock := startLimitedControl(t, time.Minute, max)
	var cs []net.Conn
	for range max {
		cs = append(cs, dialServed(t, s, sock))
		time.Sleep(5 * time.Millisecond) // distinct accept times
	}
	waitFor(t, "every connection waiting for a request", func() bool { w, _ := s.waitingConns(); return w == max })
	newest := dialServed(t, s, sock) // takes the oldest's place
	if !closedByServer(cs[0], time.Second) {
		t.Fatal("the oldest idle connection was not closed to make room")
	}
	for _, c := range cs[1:] {
		if closedByServer(c, 50*time.Millisecond) {
			t.Error("a newer idle connection was closed as well")
		}
	}
	if n := s.closed.evicted.Load(); n != 1 {
		t.Errorf("evictions counted: %d, want 1", n)
	}
	// Every connection busy: reloads the daemon never takes.
	for _, c := range append(cs[1:], newest) {
		if _, err := c.Write([]byte(`{"command":"reload"}` + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every connection busy", func() bool { w, n := s.waitingConns(); return w == 0 && n == max })
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rep, err := controlRoundTrip(c, `{"command":"nonsense"}`); err != nil || !strings.Contains(rep.Error, "too many control connections") {
		t.Errorf("a connection at the cap with every one busy: %+v %v, want refused", rep, err)
	}
	if !closedByServer(c, time.Second) {
		t.Error("the refused connection is still open")
	}
	if n := s.closed.refused.Load(); n != 1 {
		t.Errorf("refusals counted: %d, want 1", n)
	}
	if _, n := s.waitingConns(); n != max {
		t.Errorf("%d connections open, want the cap %d", n, max)
	}
}
