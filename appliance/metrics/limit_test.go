package metrics

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// withLimits runs the test with l as the server limits.
func withLimits(t *testing.T, l serverLimits) {
	old := limits
	limits = l
	t.Cleanup(func() { limits = old })
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// closedByServer reports whether the server closed c within wait.
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestSlowloris replays issue 9's attack: many connections that send
// half a request and wait. /healthz and /metrics keep answering, and the
// server holds no more than its cap: the attacker's oldest connections
// are closed to make room.
func TestSlowloris(t *testing.T) {
	l := limits
	l.maxConns = 8
	l.readHeaderTimeout = time.Minute // only the cap may close them here
	l.readTimeout = time.Minute
	withLimits(t, l)
	s, err := Listen("127.0.0.1:0", sample, alwaysHealthy, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const attackers = 50
	var conns []net.Conn
	for range attackers {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	base := "http://" + s.Addr().String()
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz under attack: %d %q", code, body)
	}
	code, body := get(t, base+"/metrics")
	if code != 200 || !strings.Contains(body, "map646_mappings 2") {
		t.Fatalf("/metrics under attack: %d", code)
	}
	closed := 0
	for _, c := range conns {
		if closedByServer(c, 200*time.Millisecond) {
			closed++
		}
	}
	if closed < attackers-l.maxConns {
		t.Fatalf("the server closed %d of %d idle half-sent connections; with a cap of %d it must close at least %d",
			closed, attackers, l.maxConns, attackers-l.maxConns)
	}
	if held := s.ln.open(); held > l.maxConns {
		t.Fatalf("%d connections held, cap %d", held, l.maxConns)
	}
	// The evictions show on /metrics.
	want := fmt.Sprintf("map646_metrics_connections_closed_total{reason=\"evicted\"} %d", s.ln.evicted.Load())
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, want) || s.ln.evicted.Load() < attackers-uint64(l.maxConns) {
		t.Fatalf("/metrics lacks %q", want)
	}
}

// TestServerTimeouts: a client that never finishes its headers is cut off
// after ReadHeaderTimeout, an idle kept-alive connection after
// IdleTimeout, and oversized headers are refused.
func TestServerTimeouts(t *testing.T) {
	l := limits
	l.readHeaderTimeout = 300 * time.Millisecond
	l.idleTimeout = 300 * time.Millisecond
	withLimits(t, l)
	s, err := Listen("127.0.0.1:0", sample, alwaysHealthy, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	slow := dial()
	io.WriteString(slow, "GET /healthz HTTP/1.1\r\n")
	if !closedByServer(slow, 5*time.Second) {
		t.Error("a connection that never finished its headers was kept for 5 s")
	}

	idle := dial()
	io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("an idle kept-alive connection was kept for 5 s: %v", err)
	}

	big := dial()
	fmt.Fprintf(big, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	resp, err = http.ReadResponse(bufio.NewReader(big), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("64 KiB of headers: %v %v, want 431", resp, err)
	}
}

// TestCapRefusesWhenAllBusy: at the cap with every connection inside a
// handler, a new connection is closed at once and counted.
func TestCapRefusesWhenAllBusy(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newCapListener(inner, 2)
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer ln.busy(r.Context())()
			entered <- struct{}{}
			<-release
		}),
		ConnContext: ln.connContext,
	}
	go srv.Serve(ln)
	defer srv.Close()
	var busy []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		<-entered
		busy = append(busy, c)
	}
	extra, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if !closedByServer(extra, 5*time.Second) {
		t.Fatal("a connection beyond the cap was kept while all others were busy")
	}
	if ln.refused.Load() != 1 || ln.evicted.Load() != 0 {
		t.Fatalf("refused %d evicted %d, want 1 0", ln.refused.Load(), ln.evicted.Load())
	}
	close(release)
	for _, c := range busy {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("busy request after release: %v", err)
		}
	}
}

// open is the number of connections held.
func (l *capListener) open() int { return l.set.Len() }
