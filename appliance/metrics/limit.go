package metrics

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// capListener keeps at most max connections open. When a new connection
// arrives at the cap, the oldest connection that is not inside a request
// handler (one still sending its headers, or idle between requests) is
// closed to make room: a client that opens connections and sends nothing
// (slowloris) loses its own connections, not the scraper's. When every
// connection is busy serving a request, the new one is closed at once.
type capListener struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[*trackedConn]struct{}

	evicted, refused atomic.Uint64
}

func newCapListener(ln net.Listener, max int) *capListener {
	return &capListener{Listener: ln, max: max, conns: map[*trackedConn]struct{}{}}
}

// trackedConn is one accepted connection.
type trackedConn struct {
	net.Conn
	l        *capListener
	accepted time.Time
	handlers atomic.Int32 // requests being served on it
	once     sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
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
		tc := &trackedConn{Conn: c, l: l, accepted: time.Now()}
		l.mu.Lock()
		var victim *trackedConn
		if len(l.conns) >= l.max {
			for o := range l.conns {
				if o.handlers.Load() == 0 && (victim == nil || o.accepted.Before(victim.accepted)) {
					victim = o
				}
			}
			if victim == nil {
				l.mu.Unlock()
				l.refused.Add(1)
				c.Close()
				continue
			}
			delete(l.conns, victim)
		}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			victim.Close()
		}
		return tc, nil
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
	tc.handlers.Add(1)
	return func() { tc.handlers.Add(-1) }
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
