package mapping

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// CSVError is a mappings file problem at a line and column (1-based; the
// column counts bytes). Error prints it as "name:line:col: message".
type CSVError struct {
	Name      string
	Line, Col int
	Err       error
}

func (e *CSVError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %v", e.Name, e.Line, e.Col, e.Err)
}

func (e *CSVError) Unwrap() error { return e.Err }

// MaxReported is how many problems ParseCSVLines and NewTable describe in
// full; past it they only count the rest, so that a file with a million bad
// lines costs a million counter increments, not a million messages.
const MaxReported = 100

// CSVErrors is every problem of a mappings file, in line order: the first
// MaxReported in Errs, and More the number of further bad lines. errors.As
// with a *CSVError finds the first one.
type CSVErrors = ErrorList[*CSVError]

// ErrNoFinalNewline is why a mappings file whose last line has content but
// no line end is refused: it is most likely being written at this moment
// (a reload raced the copy), and a line cut short can still parse, as a
// mapping to the wrong server ("2001:db8:6::12" cut to "2001:db8:6::1").
var ErrNoFinalNewline = errors.New("the last line has no line end: file still being written? write it elsewhere and rename it into place")

// ParseCSVLines reads a mappings file: one EAM entry per line as
// "ipv4,ipv6", where each side is an address (a /32 or /128) or a prefix.
// Spaces and tabs around fields are ignored, '#' starts a comment, CR LF
// line ends are accepted, and so is a UTF-8 byte order mark. A line that is
// blank or whose first non-blank byte is '#' holds no entry; every other
// line holds exactly one, so the n-th entry is the n-th such line. Every
// line ends with a line feed: a last line with content and none is
// refused (ErrNoFinalNewline), whatever it holds. Each
// entry passes the same per-entry checks as NewTable (family, host bits,
// suffix lengths, special space, RFC 6052 section 3.1); the checks between
// entries (duplicates, overlaps) are NewTable's. A bad line does not stop
// the parse: the error is a *CSVError when one line is bad and a
// *CSVErrors listing them all (MaxReported in full) when several are, each
// "name:line:col: message". lines holds the 1-based line number of each
// entry, so that an *EntryError from NewTable can be reported at its line,
// and a configuration can say where each entry came from (4 bytes per
// entry).
//
// The file is read whole and parsed without per-line allocation.
func ParseCSVLines(r io.Reader, name string) (entries []Entry, lines []uint32, err error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	// One string for the whole file: fields are substrings of it, so the
	// address parser needs no per-field copies.
	src := string(raw)
	raw = nil
	bom := 0
	if strings.HasPrefix(src, "\uFEFF") { // byte order mark, as spreadsheets write
		bom = len("\uFEFF")
		src = src[bom:]
	}
	n := strings.Count(src, "\n") + 1 // an upper bound on the entries
	entries = make([]Entry, 0, n)
	lines = make([]uint32, 0, n)
	var bad CSVErrors
	for lineNo := 1; len(src) > 0; lineNo++ {
		line, rest, ended := strings.Cut(src, "\n")
		src = rest
		var e Entry
		var ok bool
		var err *CSVError
		if !ended && strings.TrimLeft(line, " \t\r") != "" {
			err = &CSVError{Col: len(line) + 1, Err: ErrNoFinalNewline}
		} else {
			e, ok, err = parseCSVLine(line)
		}
		if err != nil {
			if len(bad.Errs) == MaxReported {
				bad.More++
				continue
			}
			err.Name, err.Line = name, lineNo
			if lineNo == 1 {
				err.Col += bom
			}
			bad.Errs = append(bad.Errs, err)
			continue
		}
		if ok && len(bad.Errs) == 0 {
			entries = append(entries, e)
			lines = append(lines, uint32(lineNo))
		}
	}
	switch {
	case len(bad.Errs) == 1:
		return nil, nil, bad.Errs[0]
	case len(bad.Errs) > 1:
		return nil, nil, &bad
	}
	return entries, lines, nil
}

// parseCSVLine parses one line (without its '\n'); ok is false for a line
// that holds no entry.
func parseCSVLine(line string) (e Entry, ok bool, err *CSVError) {
	body := line
	if i := strings.IndexByte(body, '#'); i >= 0 {
		body = body[:i]
	}
	body = strings.TrimRight(body, " \t\r")
	lead := len(body) - len(strings.TrimLeft(body, " \t"))
	if lead == len(body) {
		return e, false, nil // blank, or a comment line
	}
	comma := strings.IndexByte(body, ',')
	if comma < 0 {
		return e, false, &CSVError{Col: len(body) + 1, Err: fmt.Errorf("expected \"ipv4,ipv6\", found no comma")}
	}
	if extra := strings.IndexByte(body[comma+1:], ','); extra >= 0 {
		return e, false, &CSVError{Col: comma + 2 + extra, Err: fmt.Errorf("expected \"ipv4,ipv6\", found a third field")}
	}
	f4, c4 := field(body, lead, comma)
	f6, c6 := field(body, comma+1, len(body))
	if e.IPv4, err = parseSide(f4, c4, "IPv4"); err != nil {
		return e, false, err
	}
	if e.IPv6, err = parseSide(f6, c6, "IPv6"); err != nil {
		return e, false, err
	}
	if cerr, side := checkEntrySide(e); cerr != nil {
		col := c4
		if side == sideIPv6 {
			col = c6
		}
		return e, false, &CSVError{Col: col, Err: cerr}
	}
	return e, true, nil
}

// field trims s[from:to] and returns it with its 1-based column.
func field(s string, from, to int) (string, int) {
	f := s[from:to]
	t := strings.TrimLeft(f, " \t")
	col := from + len(f) - len(t) + 1
	return strings.TrimRight(t, " \t"), col
}

// parseSide parses an address or prefix of the given family.
func parseSide(f string, col int, family string) (netip.Prefix, *CSVError) {
	if f == "" {
		return netip.Prefix{}, &CSVError{Col: col, Err: fmt.Errorf("the %s side is empty", family)}
	}
	var p netip.Prefix
	if strings.IndexByte(f, '/') >= 0 {
		var err error
		if p, err = netip.ParsePrefix(f); err != nil {
			return p, &CSVError{Col: col, Err: fmt.Errorf("invalid %s prefix %q: %v", family, f, unquoteErr(err))}
		}
	} else {
		a, err := netip.ParseAddr(f)
		if err != nil {
			return p, &CSVError{Col: col, Err: fmt.Errorf("invalid %s address %q: %v", family, f, unquoteErr(err))}
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		// RFC 4291 section 2.5.5.2: a socket's name for an IPv4 peer,
		// never an address in an IPv6 packet.
		return p, &CSVError{Col: col, Err: fmt.Errorf("%w: %s is an IPv4-mapped IPv6 %s (::ffff:a.b.c.d), which never appears in IPv6 packets; write the IPv4 side as plain IPv4 and the IPv6 side as the server's IPv6 address", ErrFamily, f, kind(f))}
	}
	if is4 := p.Addr().Is4(); is4 != (family == "IPv4") {
		return p, &CSVError{Col: col, Err: fmt.Errorf("%w: %s is not an %s %s (the format is \"ipv4,ipv6\")", ErrFamily, f, family, kind(f))}
	}
	return p, nil
}

func kind(f string) string {
	if strings.IndexByte(f, '/') >= 0 {
		return "prefix"
	}
	return "address"
}

// unquoteErr drops netip's `ParseAddr("x"): ` preamble, which repeats
// what the message already says.
func unquoteErr(err error) string {
	s := err.Error()
	if i := strings.Index(s, "): "); i >= 0 && strings.HasPrefix(s, "Parse") {
		return s[i+3:]
	}
	return s
}
