package mapping

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// vmaOf returns the /proc/self/smaps fields of the mapping holding addr.
func vmaOf(t testing.TB, addr uintptr) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var fields map[string]string
	for sc.Scan() {
		line := sc.Text()
		var lo, hi uint64
		if n, _ := fmt.Sscanf(line, "%x-%x ", &lo, &hi); n == 2 && !strings.Contains(strings.Fields(line)[0], ":") {
			if fields != nil {
				return fields
			}
			if uint64(addr) >= lo && uint64(addr) < hi {
				fields = map[string]string{"range": strings.Fields(line)[0]}
			}
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok && fields != nil {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields == nil {
		t.Fatalf("no mapping holds %#x", addr)
	}
	return fields
}

// tableHugeMiB is the AnonHugePages, in MiB, of the mappings that hold
// the table's index slots: what the kernel actually gave, for benchmarks
// to report beside their times.
func tableHugeMiB(b testing.TB, t *Table) float64 {
	seen := map[string]bool{}
	var kb int
	add := func(addr uintptr) {
		vma := vmaOf(b, addr)
		if seen[vma["range"]] {
			return
		}
		seen[vma["range"]] = true
		n, _ := strconv.Atoi(strings.Fields(vma["AnonHugePages"] + " 0")[0])
		kb += n
	}
	for i := range t.levels4 {
		add(uintptr(unsafe.Pointer(&t.levels4[i].slots[0])))
	}
	for i := range t.levels6 {
		add(uintptr(unsafe.Pointer(&t.levels6[i].buckets[0])))
	}
	return float64(kb) / 1024
}

func thpMode(t *testing.T) string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return "absent"
	}
	s := string(b)
	if i, j := strings.Index(s, "["), strings.Index(s, "]"); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return strings.TrimSpace(s)
}

// TestLargeSlice: small arrays are ordinary; large ones start on a huge
// page boundary, read as zeros even in memory a freed table left dirty,
// and lie in a mapping the kernel marks for huge pages (VmFlags "hg")
// when it has transparent huge pages.
func TestLargeSlice(t *testing.T) {
	small := largeSlice[slot4](100)
	if len(small) != 100 || cap(small) != 100 {
		t.Errorf("small: len %d cap %d", len(small), cap(small))
	}
	n := 3*hugeMin/int(unsafe.Sizeof(slot4{})) + 5
	for round := range 2 {
		s := largeSlice[slot4](n)
		if len(s) != n {
			t.Fatalf("len %d, want %d", len(s), n)
		}
		addr := uintptr(unsafe.Pointer(&s[0]))
		if addr%hugePage != 0 {
			t.Errorf("starts at %#x, not on a 2 MiB boundary", addr)
		}
		for i := range s {
			if s[i] != (slot4{}) {
				t.Fatalf("round %d: slot %d is %+v, not zero", round, i, s[i])
			}
			s[i] = slot4{key: ^uint32(0), delta: uint16(i), used: true}
		}
		vma := vmaOf(t, addr)
		mode := thpMode(t)
		t.Logf("THP %s; mapping %s: VmFlags %s, AnonHugePages %s", mode, vma["range"], vma["VmFlags"], vma["AnonHugePages"])
		if mode == "madvise" || mode == "always" {
			if !strings.Contains(" "+vma["VmFlags"]+" ", " hg ") {
				t.Errorf("the mapping is not marked for huge pages (VmFlags %s)", vma["VmFlags"])
			}
		}
		if kb, _ := strconv.Atoi(strings.Fields(vma["AnonHugePages"] + " 0")[0]); kb == 0 && mode != "never" && mode != "absent" {
			t.Logf("the kernel gave no huge page (fragmented memory?); lookups work, slower")
		}
		s = nil
		runtime.GC() // the next round may reuse the dirty memory
		runtime.GC()
	}
}
