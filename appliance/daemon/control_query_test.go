package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/connlimit"
)

// TestLookupAndMappingsOverTheSocket: the running daemon answers lookup
// and streams its table with origins, and both follow a reload.
func TestLookupAndMappingsOverTheSocket(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.11")))
	defer h.stop()

	r, err := QueryLookup(h.sock, netip.MustParseAddr("198.51.100.11"))
	if err != nil || r.By != "eam" || r.Entry == nil || r.Entry.File != h.cfg || r.Entry.Line == 0 {
		t.Fatalf("lookup = %+v, %v", r, err)
	}
	r, err = QueryLookup(h.sock, netip.MustParseAddr("2001:db8:64::c000:201"))
	if err != nil || r.By != "prefix" || r.Translated != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("lookup by prefix = %+v, %v", r, err)
	}

	var b bytes.Buffer
	if err := StreamMappings(h.sock, "csv", &b); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "\n"); n != 3 || !strings.Contains(b.String(), "198.51.100.11,") {
		t.Errorf("csv listing:\n%s", b.String())
	}
	b.Reset()
	if err := StreamMappings(h.sock, "json", &b); err != nil {
		t.Fatal(err)
	}
	var doc struct{ Mappings []config.MappingInfo }
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil || len(doc.Mappings) != 2 || doc.Mappings[1].File != h.cfg {
		t.Errorf("json listing %v: %s", err, b.String())
	}
	if err := StreamMappings(h.sock, "xml", &b); err == nil || !strings.Contains(err.Error(), "unknown format") {
		t.Errorf("bad format: %v", err)
	}
	if _, err := QueryLookup(h.sock, netip.Addr{}); err == nil || !strings.Contains(err.Error(), "not an IPv4 or IPv6 address") {
		t.Errorf("bad address: %v", err)
	}

	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	if _, err := RequestReload(h.sock); err != nil {
		t.Fatal(err)
	}
	if r, err := QueryLookup(h.sock, netip.MustParseAddr("198.51.100.11")); err != nil || r.By != "prefix" {
		t.Errorf("after reload: lookup = %+v, %v", r, err)
	}
}

// TestMappingsDumpHeapGrowth lists a million-entry table over the control
// socket and measures the daemon process's heap: its peak growth during
// the dump must stay far below the table's size (no second copy).
func TestMappingsDumpHeapGrowth(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a million-entry table")
	}
	const n = 1 << 20
	dir := t.TempDir()
	cs, sock := serveMappings(t, dir, n)
	defer cs.Close()

	for _, format := range []string{"csv", "json"} {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var peak atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var m runtime.MemStats
			for {
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		var lines lineCounter
		start := time.Now()
		if err := StreamMappings(sock, format, &lines); err != nil {
			t.Fatal(err)
		}
		close(stop)
		<-sampled
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		growth := int64(peak.Load()) - int64(before.HeapAlloc)
		t.Logf("%s: %d lines, %d bytes in %v; heap before %d MB, peak growth %d KB, allocated %d KB",
			format, lines.n, lines.bytes, time.Since(start).Round(time.Millisecond), before.HeapAlloc>>20, growth>>10, (after.TotalAlloc-before.TotalAlloc)>>10)
		if lines.n < n {
			t.Errorf("%s: %d lines for %d entries", format, lines.n, n)
		}
		// The table alone is about 100 MB; a copy of the entries would be 64 MB.
		if growth > 8<<20 {
			t.Errorf("%s: heap grew by %d bytes during the dump", format, growth)
		}
	}
	// The connection stays usable for other clients afterwards.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

type lineCounter struct{ n, bytes int }

func (w *lineCounter) Write(p []byte) (int, error) {
	w.n += bytes.Count(p, []byte{'\n'})
	w.bytes += len(p)
	return len(p), nil
}

// TestStalledListingDoesNotHoldClose: a client that asks for a listing
// larger than the socket's buffers and stops reading it holds the
// server's write, whose deadline each write extends by a minute; closing
// the control server (the daemon's stop waits for it) cuts it within
// controlStopGrace. Before, the stop waited for that minute, and a client
// that read a little every minute held it for the whole listing.
func TestStalledListingDoesNotHoldClose(t *testing.T) {
	dir := t.TempDir()
	cs, sock := serveMappings(t, dir, 1<<16)
	defer cs.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(request{Command: "mappings", Format: "csv"}); err != nil {
		t.Fatal(err)
	}
	// The reply line and the start of the listing, then no more reads:
	// the server's writes block once the socket's buffers are full.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	head := make([]byte, 4096)
	if _, err := io.ReadFull(c, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	done := make(chan struct{})
	go func() {
		cs.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(controlStopGrace + 5*time.Second):
		t.Fatalf("Close still waits for the stalled listing after %v", time.Since(start))
	}
}

// serveMappings writes n mappings (20.x.y.z to 2001:db8:6::/96) to a
// mappings file in dir, loads a configuration that uses it, and serves
// the control socket c.sock for it.
func serveMappings(t *testing.T, dir string, n int) (*controlServer, string) {
	t.Helper()
	var csv strings.Builder
	for i := range n {
		fmt.Fprintf(&csv, "20.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&255, i&255, i>>16, i&0xffff)
	}
	if err := os.WriteFile(filepath.Join(dir, "m.csv"), []byte(csv.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, filepath.Join(dir, "a.hcl"), "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n")
	cfg, err := config.Load(filepath.Join(dir, "a.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "c.sock")
	cs, err := listenControl(sock, "", &daemon{cfg: cfg}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return cs, sock
}

// TestSlowListingReaderIsCutAtTheConnectionBound: a client that reads a
// listing slowly but often enough for every write to finish within
// listingWriteIdle keeps it moving (it is not cut after the first idle
// period), but not past the connection's bound: each write's deadline is
// the earlier of its own idle deadline and the bound. Before, each write
// pushed the deadline a full idle period out, replacing the bound, so a
// client reading a little every minute held the listed table (replaced by
// any reload since) for as long as it liked. Review H3-7.
func TestSlowListingReaderIsCutAtTheConnectionBound(t *testing.T) {
	const (
		bound    = 600 * time.Millisecond
		idle     = 300 * time.Millisecond
		interval = 50 * time.Millisecond // one read of a whole 64 KiB write each
	)
	for _, tc := range []struct {
		name    string
		request request
	}{
		// mapping_counts writes through the same deadlineWriter (its
		// parameter's type), made once per connection by serve.
		{"mappings csv", request{Command: "mappings", Format: "csv"}},
		{"mappings json", request{Command: "mappings", Format: "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var csv strings.Builder
			const n = 1 << 14 // a listing of 2 to 3 MB: 40 or more writes of 64 KiB, 2 s or more at one per interval
			for i := range n {
				fmt.Fprintf(&csv, "20.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&255, i&255, i>>16, i&0xffff)
			}
			writeConfig(t, filepath.Join(dir, "m.csv"), csv.String())
			writeConfig(t, filepath.Join(dir, "a.hcl"), "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"m.csv\"\n}\n")
			cfg, err := config.Load(filepath.Join(dir, "a.hcl"))
			if err != nil {
				t.Fatal(err)
			}
			var whole bytes.Buffer
			if err := cfg.WriteMappings(&whole, tc.request.Format); err != nil {
				t.Fatal(err)
			}
			d := &daemon{cfg: cfg}
			s := &controlServer{quit: make(chan struct{}), connTimeout: bound, listingWriteIdle: idle, idleTimeout: controlIdleTimeout,
				closed: &controlClosed{}, log: slog.New(slog.DiscardHandler)}
			server, client := net.Pipe() // unbuffered: a write waits for the reads that take it
			defer client.Close()
			served := make(chan struct{})
			start := time.Now()
			go func() {
				defer close(served)
				s.serve(&stoppingConn{Conn: server, s: s}, &connlimit.Conn{Conn: server}, d, nil)
				server.Close()
			}()
			if err := json.NewEncoder(client).Encode(tc.request); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 128<<10)
			var got int
			var last time.Duration // when the last bytes came
			for {
				_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
				k, err := client.Read(buf)
				if k > 0 {
					got += k
					last = time.Since(start)
				}
				if err != nil {
					break
				}
				time.Sleep(interval)
			}
			<-served
			t.Logf("%d bytes read (the listing is %d), the last at %v", got, whole.Len(), last)
			if got >= whole.Len() {
				t.Fatalf("the whole listing (%d bytes) was read over %v: the connection bound %v did not hold", got, last, bound)
			}
			if last < idle+interval {
				t.Errorf("cut at %v: a listing that moves must not be cut after one idle period (%v)", last, idle)
			}
			if last > bound+500*time.Millisecond {
				t.Errorf("cut at %v, well after the connection bound %v", last, bound)
			}
		})
	}
}
