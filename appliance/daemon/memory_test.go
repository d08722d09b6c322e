package daemon

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
)

// writeMappingsCSV writes n mappings of consecutive IPv4 addresses from
// 10.0.0.0 (as the netns harness's large table) to a CSV file in dir.
func writeMappingsCSV(t *testing.T, dir string, n int) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("mappings-%d.csv", n))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		fmt.Fprintf(w, "10.%d.%d.%d,2001:db8:7::%x:%x\n", i>>16&0xff, i>>8&0xff, i&0xff, i>>16, i&0xffff)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// runtimeBytes reads one of runtime/metrics' byte counts.
func runtimeBytes(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// scannableHeap is the heap the collector scans, as of a collection run
// now.
func scannableHeap() uint64 {
	runtime.GC()
	return runtimeBytes("/gc/scan/heap:bytes")
}

// TestLargeTableLeavesNoScannedHeap: a daemon running a large table
// keeps no heap the collector has to scan for it: the table's arrays hold
// no pointers, and the parsed entries, which do, are dropped once the
// table is built, at start and at a reload (docs/benchmarks.md, "Sparse
// pings with the 1M table").
func TestLargeTableLeavesNoScannedHeap(t *testing.T) {
	const n, n2 = 120_000, 80_000
	// The entries alone are 64 bytes each, pointerful; what may remain
	// scannable is a small fraction of that.
	const maxScanPerEntry = 8
	dir := t.TempDir()
	csv := writeMappingsCSV(t, dir, n)
	before := scannableHeap()
	h := start(t, fmt.Sprintf(baseConfig, fmt.Sprintf("  mappings_file = %q\n", csv)))
	defer h.stop()
	if h.readyInfo.Mappings != n {
		t.Errorf("ready with %d mappings, want %d", h.readyInfo.Mappings, n)
	}
	if st, err := QueryStats(h.sock); err != nil || st.Mappings != n {
		t.Fatalf("stats: %d mappings (%v), want %d", st.Mappings, err, n)
	}
	got := scannableHeap()
	t.Logf("scannable heap: %d KiB before the start, %d KiB running %d mappings", before>>10, got>>10, n)
	if got > before+n*maxScanPerEntry {
		t.Errorf("scannable heap grew by %d KiB with %d mappings running, want at most %d KiB", (got-before)>>10, n, n*maxScanPerEntry>>10)
	}

	csv2 := writeMappingsCSV(t, dir, n2)
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, fmt.Sprintf("  mappings_file = %q\n", csv2)))
	res, err := RequestReload(h.sock)
	if err != nil || res.Mappings != n2 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	if st, err := QueryStats(h.sock); err != nil || st.Mappings != n2 {
		t.Fatalf("stats after the reload: %d mappings (%v), want %d", st.Mappings, err, n2)
	}
	got = scannableHeap()
	t.Logf("scannable heap: %d KiB running %d mappings after a reload", got>>10, n2)
	if got > before+n2*maxScanPerEntry {
		t.Errorf("scannable heap grew by %d KiB with %d mappings running after a reload, want at most %d KiB", (got-before)>>10, n2, n2*maxScanPerEntry>>10)
	}
}
