package mapping

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func TestParseCSV(t *testing.T) {
	const src = "\uFEFF# public address, server address\r\n" +
		"198.51.100.10,2001:db8:6::10\r\n" +
		"\n" +
		"   \t\n" +
		"  # indented comment\n" +
		" 198.51.100.11 ,\t2001:db8:6::11   # server B\n" +
		"192.0.2.0/24,2001:db8:aaaa::/120\n" +
		"203.0.113.7/32,2001:db8:bbbb::7/128\n" +
		"  \t" // a last line of blanks needs no line end
	entries, lines, err := ParseCSVLines(strings.NewReader(src), "maps.csv")
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		e("198.51.100.10", "2001:db8:6::10"),
		e("198.51.100.11", "2001:db8:6::11"),
		e("192.0.2.0/24", "2001:db8:aaaa::/120"),
		e("203.0.113.7", "2001:db8:bbbb::7"),
	}
	if !slices.Equal(entries, want) {
		t.Errorf("entries = %v\nwant %v", entries, want)
	}
	if !slices.Equal(lines, []uint32{2, 6, 7, 8}) {
		t.Errorf("lines = %v, want [2 6 7 8]", lines)
	}
	if got, _, err := ParseCSVLines(strings.NewReader(""), "empty.csv"); err != nil || len(got) != 0 {
		t.Errorf("empty file: %v, %v", got, err)
	}
}

// TestParseCSVRefusesAFileCutShort: a file read while it is being written
// ends anywhere; cut inside the last line it would still parse (the IPv6
// side of "2001:db8:6::12" cut to "2001:db8:6::1" names another server),
// so a last line with content and no line end is refused, at the column
// after its last byte, whatever the line holds.
func TestParseCSVRefusesAFileCutShort(t *testing.T) {
	const full = "198.51.100.10,2001:db8:6::10\n198.51.100.11,2001:db8:6::11\n198.51.100.12,2001:db8:6::12\n"
	for _, tc := range []struct {
		src  string
		want string
	}{
		{full[:len(full)-1], "m.csv:3:29: "},  // only the line end missing
		{full[:len(full)-2], "m.csv:3:28: "},  // 2001:db8:6::1, another server
		{full[:len(full)-3], "m.csv:3:27: "},  // 2001:db8:6::
		{full[:len(full)-17], "m.csv:3:13: "}, // 198.51.100.1, not even a pair
		{"198.51.100.10,2001:db8:6::10\n# end", "m.csv:2:6: "},
		{"\uFEFF198.51.100.10,2001:db8:6::10", "m.csv:1:32: "}, // columns count the BOM's bytes
	} {
		entries, _, err := ParseCSVLines(strings.NewReader(tc.src), "m.csv")
		if !errors.Is(err, ErrNoFinalNewline) || !strings.HasPrefix(err.Error(), tc.want) || entries != nil {
			t.Errorf("%q: %d entries, error %v; want %s%v", tc.src, len(entries), err, tc.want, ErrNoFinalNewline)
		}
	}
	// Cut at a line end, the file is whole as far as anyone can tell.
	if entries, _, err := ParseCSVLines(strings.NewReader(full[:len(full)-29]), "m.csv"); err != nil || len(entries) != 2 {
		t.Errorf("cut at a line end: %d entries, %v", len(entries), err)
	}
	// With other bad lines, the cut one is listed with them, in order.
	_, _, err := ParseCSVLines(strings.NewReader("bad\n"+full[:len(full)-2]), "m.csv")
	var all *CSVErrors
	if !errors.As(err, &all) || len(all.Errs) != 2 || all.Errs[1].Line != 4 || !errors.Is(all.Errs[1], ErrNoFinalNewline) {
		t.Errorf("error %v; want line 1 and line 4 (no line end)", err)
	}
}

// TestParseCSVErrors: every error names file, line and column of the
// offending field.
func TestParseCSVErrors(t *testing.T) {
	for _, tc := range []struct {
		src    string
		want   string
		reason error
	}{
		{"198.51.100.10 2001:db8::1\n", "m.csv:1:26: expected \"ipv4,ipv6\", found no comma", nil},
		{"# c\n198.51.100.10,2001:db8::1,x\n", "m.csv:2:26: expected \"ipv4,ipv6\", found a third field", nil},
		{"\uFEFF198.51.100.1x,2001:db8::1\n", "m.csv:1:4: invalid IPv4 address", nil}, // columns count the BOM's bytes
		{"198.51.100.10,\n", "m.csv:1:15: the IPv6 side is empty", nil},
		{"  ,2001:db8::1\n", "m.csv:1:3: the IPv4 side is empty", nil},
		{"198.51.100.1o,2001:db8::1\n", "m.csv:1:1: invalid IPv4 address \"198.51.100.1o\"", nil},
		{"192.0.2.0/33,2001:db8::/129\n", "m.csv:1:1: invalid IPv4 prefix \"192.0.2.0/33\"", nil},
		{"198.51.100.1, 2001:db8::g\n", "m.csv:1:15: invalid IPv6 address \"2001:db8::g\"", nil},
		{"2001:db8::1,198.51.100.1\n", "m.csv:1:1: wrong address family: 2001:db8::1 is not an IPv4 address", ErrFamily},
		{"198.51.100.1,192.0.2.1\n", "m.csv:1:14: wrong address family: 192.0.2.1 is not an IPv6 address", ErrFamily},
		{"198.51.100.1,::ffff:192.0.2.1\n", "m.csv:1:14: wrong address family: ::ffff:192.0.2.1 is an IPv4-mapped IPv6 address (::ffff:a.b.c.d), which never appears in IPv6 packets", ErrFamily},
		{"::ffff:198.51.100.0/120,2001:db8::/120\n", "m.csv:1:1: wrong address family: ::ffff:198.51.100.0/120 is an IPv4-mapped IPv6 prefix", ErrFamily},
		{"\n\n192.0.2.1/24,2001:db8::/120\n", "m.csv:3:1: host bits set: 192.0.2.1/24 (did you mean 192.0.2.0/24?)", ErrHostBits},
		{"192.0.2.0/24,\t2001:db8::/124\n", "m.csv:1:15: suffix lengths differ", ErrSuffixLength},
		{"192.0.2.0/24,2001:db8::/63\n", "m.csv:1:14: suffix lengths differ: 2001:db8::/63 is shorter than /64", ErrSuffixLength},
		{"198.51.100.1,64:ff9b::c633:6401\n", "m.csv:1:14: well-known prefix with non-global IPv4", ErrWellKnownNonGlobal},
		{"127.0.0.1,2001:db8::1\n", "m.csv:1:1: not a forwardable unicast address", ErrSpecial},
	} {
		_, _, err := ParseCSVLines(strings.NewReader(tc.src), "m.csv")
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseCSV(%q) error\n  %v\nwant prefix\n  %s", tc.src, err, tc.want)
			continue
		}
		var ce *CSVError
		if !errors.As(err, &ce) || ce.Name != "m.csv" {
			t.Errorf("error %v is not a *CSVError for m.csv", err)
		}
		if tc.reason != nil && !errors.Is(err, tc.reason) {
			t.Errorf("error %v is not %v", err, tc.reason)
		}
	}
}

func TestParseCSVReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	_, _, err := ParseCSVLines(iotest.ErrReader(boom), "m.csv")
	if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "m.csv: ") {
		t.Errorf("error %v", err)
	}
	var _ io.Reader = iotest.ErrReader(boom)
}

// TestParseCSVThenTable: duplicates are NewTable's to find, and
// ParseCSVLines maps its index back to a line.
func TestParseCSVThenTable(t *testing.T) {
	src := "# two servers\n198.51.100.10,2001:db8:6::10\n\n198.51.100.11,2001:db8:6::11\n198.51.100.10,2001:db8:6::12\n"
	entries, lines, err := ParseCSVLines(strings.NewReader(src), "m.csv")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewTable(entries)
	var ee *EntryError
	if !errors.As(err, &ee) || !errors.Is(err, ErrDuplicate) {
		t.Fatalf("NewTable error %v", err)
	}
	if lines[ee.Index] != 5 || lines[ee.Other] != 2 {
		t.Errorf("duplicate at lines %d and %d, want 5 and 2", lines[ee.Index], lines[ee.Other])
	}
}

// TestParseCSVReportsAll: every bad line is reported in line order, the
// first MaxReported in full and the rest counted; no entries come back.
func TestParseCSVReportsAll(t *testing.T) {
	src := "198.51.100.10,2001:db8:6::10\nbad\n198.51.100.11,2001:db8:6::11\n198.51.100.1/24,2001:db8:6::/120\n1.2.3.4,2001:db8::1,x\n"
	entries, _, err := ParseCSVLines(strings.NewReader(src), "m.csv")
	var all *CSVErrors
	if !errors.As(err, &all) || entries != nil {
		t.Fatalf("error %v (%T), %d entries; want a *CSVErrors and none", err, err, len(entries))
	}
	var got []string
	for _, ce := range all.Errs {
		got = append(got, fmt.Sprintf("%s:%d:%d", ce.Name, ce.Line, ce.Col))
	}
	if want := []string{"m.csv:2:4", "m.csv:4:1", "m.csv:5:20"}; !slices.Equal(got, want) || all.More != 0 {
		t.Errorf("errors at %v (+%d), want %v\n%v", got, all.More, want, err)
	}
	var first *CSVError
	if !errors.As(err, &first) || first.Line != 2 {
		t.Errorf("errors.As finds %v, want line 2", first)
	}

	src = strings.Repeat("x\n", MaxReported+5)
	_, _, err = ParseCSVLines(strings.NewReader(src), "m.csv")
	if !errors.As(err, &all) || len(all.Errs) != MaxReported || all.More != 5 || all.Errs[MaxReported-1].Line != MaxReported {
		t.Fatalf("%d errors + %d more: %.100v", len(all.Errs), all.More, err)
	}
	if !strings.HasSuffix(err.Error(), "\nand 5 more") {
		t.Errorf("error does not end with the count")
	}
}
