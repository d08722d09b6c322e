package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/hashicorp/hcl/v2"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// mappingsFile reads the CSV named by the mappings_file attribute a,
// relative to the HCL file's directory, and appends its entries. It must
// be a regular file of at most MaxMappingsBytes (inside the config drive
// when the HCL file came from one), and not empty: 0 bytes is what a
// rewrite with `>` leaves for a moment, not a table (a file of comments
// alone is an empty table).
func (d *decoder) mappingsFile(a *hcl.Attribute, name string, t *Translator) {
	if name == "" {
		d.errorf(a.Expr.Range(), "Invalid mappings_file", "mappings_file must name a file; leave it out for none.")
		return
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(d.dir, path)
	}
	src, err := d.src.readFile(path, MaxMappingsBytes)
	if err != nil {
		d.errorf(a.Expr.Range(), "Cannot read mappings_file", "%s.", err)
		return
	}
	if len(src) == 0 {
		// A file cut to 0 bytes (`>` truncates before the rewrite
		// writes a line) would load as an empty table and withdraw
		// every announcement; an empty table is said with a comment.
		d.errorf(a.Expr.Range(), "Empty mappings_file",
			"%s is empty (0 bytes): a file being rewritten in place looks like this, and loading it would remove every mapping. To load no mappings from it deliberately, put a comment line in it (# no mappings), or leave mappings_file out.", path)
		return
	}
	t.MappingsFile, t.MappingsName = path, name
	d.mappingsSrc = src
	d.mappingsName = path
	d.files[path] = &hcl.File{Bytes: src}
	entries, lines, err := mapping.ParseCSVLines(bytes.NewReader(src), path)
	if err != nil {
		var all *mapping.CSVErrors
		var ce *mapping.CSVError
		switch {
		case errors.As(err, &all):
			for _, ce := range all.Errs {
				d.errorf(d.lineRange(ce.Line, ce.Col), "Invalid mapping", "%v.", ce.Err)
			}
			if all.More > 0 {
				d.errorf(a.Expr.Range(), "More invalid mappings", "%s has %d more invalid lines after the %d shown.", path, all.More, len(all.Errs))
			}
		case errors.As(err, &ce) && ce.Name == path:
			d.errorf(d.lineRange(ce.Line, ce.Col), "Invalid mapping", "%v.", ce.Err)
		default:
			d.errorf(a.Expr.Range(), "Invalid mappings_file", "%s.", err)
		}
		return
	}
	d.csvLines = lines
	t.Mappings = append(t.Mappings, entries...)
}

// lineRange is the range from column col of line (1-based) of the
// mappings file to the end of that line.
func (d *decoder) lineRange(line, col int) hcl.Range {
	src := d.mappingsSrc
	off := 0
	for l := 1; l < line && off < len(src); l++ {
		i := bytes.IndexByte(src[off:], '\n')
		if i < 0 {
			off = len(src)
			break
		}
		off += i + 1
	}
	end := bytes.IndexByte(src[off:], '\n')
	if end < 0 {
		end = len(src)
	} else {
		end += off
	}
	if i := bytes.IndexByte(src[off:end], '#'); i >= 0 {
		end = off + i
	}
	for end > off && (src[end-1] == '\r' || src[end-1] == ' ' || src[end-1] == '\t') {
		end--
	}
	start := min(off+col-1, end)
	return hcl.Range{
		Filename: d.mappingsName,
		Start:    hcl.Pos{Line: line, Column: col, Byte: start},
		End:      hcl.Pos{Line: line, Column: col + max(end-start, 0), Byte: max(end, start)},
	}
}

// csvEntryRange is where the n-th (0-based) entry of the mappings file is:
// its line from the first non-blank byte.
func (d *decoder) csvEntryRange(n int) hcl.Range {
	line := int(d.csvLines[n])
	r := d.lineRange(line, 1)
	src := d.mappingsSrc[r.Start.Byte:r.End.Byte]
	lead := len(src) - len(bytes.TrimLeft(src, " \t"))
	return d.lineRange(line, lead+1)
}

// entryRange is where Translator.Mappings[i] was written.
func (d *decoder) entryRange(i int) hcl.Range {
	if i < len(d.mappingBlocks) {
		return d.mappingBlocks[i]
	}
	return d.csvEntryRange(i - len(d.mappingBlocks))
}

// buildMap builds the address map once, so that every rule of the mapping
// package (duplicates, overlaps, the translation prefix) is checked here and
// each refused entry is reported at its mapping block or CSV line: all of
// them, up to mapping.MaxReported, then a count. It also records where each
// entry came from (Config.MappingOrigin).
func (d *decoder) buildMap(c *Config, prefixAttr hcl.Range) {
	p, err := mapping.NewPrefix(c.Translator.Prefix)
	if err != nil {
		d.errorf(prefixAttr, "Invalid prefix", "%s.", err)
		return
	}
	nBlocks := len(d.mappingBlocks)
	t, err := mapping.NewTableWith(c.Translator.Mappings, mapping.TableOptions{Nested: func(i int) bool {
		if i < nBlocks {
			return d.blockOverlap[i]
		}
		return d.csvOverlap
	}})
	if err == nil {
		c.snap, err = mapping.NewSnapshot(p, t)
	}
	if err == nil {
		c.origin = d.origins()
		if a := c.Translator.IPv4Address; a.IsValid() && d.ipv4AddrRange.Filename != "" {
			if _, _, mapped := t.Lookup4(a.As4()); mapped {
				d.errorf(d.ipv4AddrRange, "Invalid ipv4_address", "%v has a mapping: it belongs to a server behind the translator, not to the translator.", a)
			}
		}
		return
	}
	var refused []*mapping.EntryError
	more := 0
	var te *mapping.TableError
	var ee *mapping.EntryError
	switch {
	case errors.As(err, &te):
		refused, more = te.Errs, te.More
	case errors.As(err, &ee):
		refused = []*mapping.EntryError{ee}
	}
	for _, ee := range refused {
		if ee.Index < 0 || ee.Index >= len(c.Translator.Mappings) {
			d.errorf(prefixAttr, "Invalid mappings", "%s.", ee)
			continue
		}
		detail := fmt.Sprintf("%s: %v.", describe(ee.Entry), ee.Err)
		if ee.Other >= 0 && ee.Other < len(c.Translator.Mappings) {
			detail += fmt.Sprintf(" The other entry (%s) is at %s.", describe(ee.OtherEntry), posString(d.entryRange(ee.Other)))
		}
		if errors.Is(ee, mapping.ErrOverlap) {
			if ee.Index < nBlocks {
				detail += " If the more specific entry is meant, add overlap = true to its mapping block (the longest match wins, RFC 7757 section 3)."
			} else {
				detail += " If the more specific entries are meant, set mappings_overlap = true (the longest match wins, RFC 7757 section 3)."
			}
		}
		if errors.Is(ee, mapping.ErrInsidePrefix) || errors.Is(ee, mapping.ErrWellKnownNonGlobal) {
			detail += fmt.Sprintf(" The translation prefix is set at %s.", posString(prefixAttr))
		}
		d.diags = append(d.diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid mapping",
			Detail:   detail,
			Subject:  d.entryRange(ee.Index).Ptr(),
		})
	}
	if len(refused) == 0 {
		d.errorf(prefixAttr, "Invalid mappings", "%s.", err)
	}
	if more > 0 {
		d.errorf(prefixAttr, "More invalid mappings", "%d more mappings are refused after the %d shown.", more, len(refused))
	}
}

// origins is the line of each Translator.Mappings entry: its mapping
// block's line in the HCL file, then the mappings file's lines.
func (d *decoder) origins() mappingOrigin {
	lines := make([]uint32, 0, len(d.mappingBlocks)+len(d.csvLines))
	for _, r := range d.mappingBlocks {
		lines = append(lines, uint32(r.Start.Line))
	}
	lines = append(lines, d.csvLines...)
	return mappingOrigin{lines: lines, blocks: len(d.mappingBlocks)}
}

// mappingOrigin is where each mapping was written, at 4 bytes per entry:
// the first blocks entries are mapping blocks of the HCL file, the rest
// lines of the mappings file.
type mappingOrigin struct {
	lines  []uint32
	blocks int
}

// MappingOrigin says where Translator.Mappings[i] was written: the file
// (the HCL file for a mapping block, else the mappings file) and its
// 1-based line. ok is false for a Config not built by Parse.
func (c *Config) MappingOrigin(i int) (file string, line int, ok bool) {
	if i < 0 || i >= len(c.origin.lines) {
		return "", 0, false
	}
	if i < c.origin.blocks {
		return c.File, int(c.origin.lines[i]), true
	}
	return c.Translator.MappingsFile, int(c.origin.lines[i]), true
}

// Xlat is the engine configuration: the address map Parse built and the
// translation policy.
func (c *Config) Xlat() (*xlat.Config, error) {
	snap := c.snap
	if snap == nil {
		// A Config built by hand rather than by Parse.
		p, err := mapping.NewPrefix(c.Translator.Prefix)
		if err != nil {
			return nil, err
		}
		t, err := mapping.NewTable(c.Translator.Mappings)
		if err != nil {
			return nil, err
		}
		if snap, err = mapping.NewSnapshot(p, t); err != nil {
			return nil, err
		}
	}
	pol := xlat.Policy{
		LowestIPv6MTU:  c.Translator.LowestIPv6MTU,
		ICMPSourcePool: c.Translator.ICMPSourcePool,
		DenyIPv4:       c.Translator.DenyIPv4,
		IPv4MTU:        c.Translator.IPv4MTU,
		IPv6MTU:        c.Translator.IPv6MTU,
		IPv4Address:    c.Translator.IPv4Address,
		TrafficClass:   c.Translator.TrafficClass,
		TypeOfService:  c.Translator.TOS,
		MTUPlateaus:    c.Translator.MTUPlateaus,
		ICMPRate:       c.Translator.ICMPErrorsPerSecond,
		ICMPBurst:      c.Translator.ICMPErrorsBurst,
	}
	for _, i := range c.Interfaces {
		pol.OwnAddrs = append(pol.OwnAddrs, i.Addresses...)
		// Without ipv6_mtu, the IPv6 next hop's MTU is that of the
		// smallest interface with an IPv6 address, when the file sets it:
		// a Packet Too Big must not announce more (RFC 7915 section 4.2).
		if c.Translator.IPv6MTU == 0 && i.MTU > 0 && slices.ContainsFunc(i.Addresses, func(p netip.Prefix) bool { return p.Addr().Is6() }) {
			if pol.IPv6MTU == 0 || i.MTU < pol.IPv6MTU {
				pol.IPv6MTU = i.MTU
			}
		}
	}
	// The MSS clamp is policy beyond RFC 7915: on where the file gives an
	// MTU (ipv4_mtu, ipv6_mtu, an interface's mtu), never because of an
	// MTU the daemon learns from a NIC.
	pol.ClampMSS = pol.IPv4MTU > 0 || pol.IPv6MTU > 0
	switch c.Translator.UDPZeroChecksum {
	case "compute", "":
		pol.UDPZeroChecksum = xlat.UDPZeroCompute
	case "drop":
		pol.UDPZeroChecksum = xlat.UDPZeroDrop
	default:
		return nil, fmt.Errorf("config: udp_zero_checksum %q is not \"compute\" or \"drop\"", c.Translator.UDPZeroChecksum)
	}
	switch c.Translator.Hairpin {
	case "off":
		pol.Hairpin = xlat.HairpinOff
	case "simple":
		pol.Hairpin = xlat.HairpinSimple
	case "intrinsic", "":
		pol.Hairpin = xlat.HairpinIntrinsic
	default:
		return nil, fmt.Errorf("config: hairpin %q is not \"off\", \"simple\" or \"intrinsic\"", c.Translator.Hairpin)
	}
	return &xlat.Config{Map: snap, Policy: pol}, nil
}
