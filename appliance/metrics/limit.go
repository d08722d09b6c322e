package metrics

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/map646/map646/appliance/connlimit"
)

// capListener keeps at most max connections open (connlimit). When a new
// connection arrives at the cap, the oldest connection that is not inside
// a request handler (one still sending its headers, or idle between
// requests) is closed to make room: a client that opens connections and
// sends nothing (slowloris) loses its own connections, not the
// scraper's. When every connection is busy serving a request, the new
// one is closed at once.
type capListener struct {
	net.Listener
	set *connlimit.Set

	evicted, refused atomic.Uint64
}

func newCapListener(ln net.Listener, max int) *capListener {
	return &capListener{Listener: ln, set: connlimit.NewSet(max)}
}

// trackedConn is one accepted connection; closing it stops its tracking.
type trackedConn struct {
	*connlimit.Conn
	l    *capListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.set.Remove(c.Conn) })
	return c.Conn.Close()
}

// Accept returns the next connection, making room for it first. Errors
// of the inner listener are returned as they are: http.Server backs off
// and retries on temporary ones (EMFILE and the like).
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		cc, victim, ok := l.set.Add(c, false)
		if !ok {
			l.refused.Add(1)
			c.Close()
			continue
		}
		if victim != nil {
			l.evicted.Add(1)
			victim.Close()
		}
		return &trackedConn{Conn: cc, l: l}, nil
	}
}

type connKey struct{}

// connContext is http.Server.ConnContext: it lets the handler find its
// connection.
func (l *capListener) connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// busy marks the request's connection as serving a request (not to be
// closed for room) until the returned function is called.
func (l *capListener) busy(ctx context.Context) func() {
	tc, ok := ctx.Value(connKey{}).(*trackedConn)
	if !ok {
		return func() {}
	}
	tc.Enter()
	return tc.Leave
}

var descConnsClosed = prometheus.NewDesc("map646_metrics_connections_closed_total",
	"Connections to the metrics server closed to stay within its connection cap: evicted (idle or still sending its request) or refused (every connection busy).",
	[]string{"reason"}, nil)

// Describe implements prometheus.Collector.
func (l *capListener) Describe(ch chan<- *prometheus.Desc) { ch <- descConnsClosed }

// Collect implements prometheus.Collector.
func (l *capListener) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descConnsClosed, prometheus.CounterValue, float64(l.evicted.Load()), "evicted")
	ch <- prometheus.MustNewConstMetric(descConnsClosed, prometheus.CounterValue, float64(l.refused.Load()), "refused")
}
