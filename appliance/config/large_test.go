package config

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/map646/map646/internal/testenv"
)

// writeLarge writes an HCL file whose mappings_file holds n one-to-one
// entries: 10.0.0.0/12 (private space: the file is only parsed, never
// used for traffic) onto 2001:db8:6::/96.
func writeLarge(tb testing.TB, dir string, n int) string {
	tb.Helper()
	if n > 1<<20 {
		tb.Fatalf("%d entries do not fit in 10.0.0.0/12", n)
	}
	f, err := os.Create(filepath.Join(dir, "large.csv"))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "# ipv4,ipv6")
	for i := range n {
		fmt.Fprintf(w, "10.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&0xff, i&0xff, i>>16, i&0xffff)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	hcl := filepath.Join(dir, "large.hcl")
	src := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"large.csv\"\n}\n"
	if err := os.WriteFile(hcl, []byte(src), 0o644); err != nil {
		tb.Fatal(err)
	}
	return hcl
}

// TestLoadMillion loads a 1M-line mappings file (the target is
// 3 s) and checks that every entry arrived and translates. The time is
// logged, not asserted; BenchmarkLoad measures it. It runs only with
// MAP646_LARGE=1 (make test-large).
func TestLoadMillion(t *testing.T) {
	testenv.RequireLarge(t)
	const n = 1 << 20
	path := writeLarge(t, t.TempDir(), n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	c, err := Load(path)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("Load of %d mappings took %v; the Config keeps %.0f B/entry (Mappings slice and table)",
		n, took, float64(after.HeapAlloc-before.HeapAlloc)/n)
	if got := len(c.Translator.Mappings); got != n {
		t.Fatalf("%d mappings, want %d", got, n)
	}
	if got := c.Snapshot().Table().Len(); got != n {
		t.Fatalf("table has %d entries, want %d", got, n)
	}
	x, err := c.Xlat()
	if err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(c)
	i := n - 1
	v6, _, _ := x.Map.To6([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	if got, want := fmt.Sprintf("%x", v6[12:]), fmt.Sprintf("%04x%04x", i>>16, i&0xffff); got != want {
		t.Errorf("last entry maps to ...%s, want ...%s", got, want)
	}
}

// BenchmarkLoad: the whole Load (read, parse, hash, build the table) of
// mappings files of several sizes.
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{1000, 100_000, 1 << 20} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			path := writeLarge(b, b.TempDir(), n)
			b.ResetTimer()
			for b.Loop() {
				if _, err := Load(path); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/entry")
		})
	}
}
