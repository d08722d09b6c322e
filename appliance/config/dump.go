package config

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"

	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack/xlat"
)

// Formats of WriteMappings.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// errNoMap: a Config built by hand has no address map to list or query.
var errNoMap = errors.New("config: no address map (the configuration was not built by Parse)")

// WriteMappings streams the address map: the RFC 6052 prefix and every
// RFC 7757 entry in configuration order, each with the file and line it
// came from. It reads the built table entry by entry and writes through a
// small buffer, so a million entries cost no second copy of the table.
//
// FormatCSV is itself a valid mappings_file: a comment line with the
// prefix, then "ipv4,ipv6 # file:line" per entry (a /32 entry as a bare
// address). FormatJSON is one object, {"prefix", "digest", "count",
// "mappings": [{"ipv4", "ipv6", "file", "line"}...]}, one entry per line.
func (c *Config) WriteMappings(w io.Writer, format string) error {
	if c.snap == nil {
		return errNoMap
	}
	if format != FormatCSV && format != FormatJSON {
		return fmt.Errorf("unknown format %q (want %q or %q)", format, FormatCSV, FormatJSON)
	}
	t := c.snap.Table()
	bw := bufio.NewWriterSize(w, 64<<10)
	// The two origin file names, encoded once.
	var names [2][]byte
	for k, f := range [2]string{c.File, c.Translator.MappingsFile} {
		if format == FormatJSON {
			names[k], _ = json.Marshal(f)
		} else {
			names[k] = []byte(f)
		}
	}
	buf := make([]byte, 0, 256)
	if format == FormatCSV {
		fmt.Fprintf(bw, "# map646 mappings: prefix %v, %d entries, digest %s\n", c.Translator.Prefix, t.Len(), c.Digest)
	} else {
		p, _ := json.Marshal(c.Translator.Prefix.String())
		fmt.Fprintf(bw, "{\"prefix\":%s,\"digest\":%q,\"count\":%d,\"mappings\":[", p, c.Digest, t.Len())
	}
	i := 0
	for e := range t.All() {
		buf = buf[:0]
		k := 1
		if i < c.origin.blocks {
			k = 0
		}
		line := 0
		if i < len(c.origin.lines) {
			line = int(c.origin.lines[i])
		}
		if format == FormatCSV {
			buf = appendSide(buf, e.IPv4)
			buf = append(buf, ',')
			buf = appendSide(buf, e.IPv6)
			buf = append(buf, " # "...)
			buf = append(buf, names[k]...)
			buf = append(buf, ':')
			buf = strconv.AppendInt(buf, int64(line), 10)
			buf = append(buf, '\n')
		} else {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, "\n{\"ipv4\":\""...)
			buf = e.IPv4.AppendTo(buf)
			buf = append(buf, "\",\"ipv6\":\""...)
			buf = e.IPv6.AppendTo(buf)
			buf = append(buf, "\",\"file\":"...)
			buf = append(buf, names[k]...)
			buf = append(buf, ",\"line\":"...)
			buf = strconv.AppendInt(buf, int64(line), 10)
			buf = append(buf, '}')
		}
		if _, err := bw.Write(buf); err != nil {
			return err
		}
		i++
	}
	if format == FormatJSON {
		bw.WriteString("\n]}\n")
	}
	return bw.Flush()
}

// appendSide writes a /32 or /128 as a bare address, as mappings files
// usually do, and anything else as a prefix.
func appendSide(b []byte, p netip.Prefix) []byte {
	if p.IsSingleIP() {
		return p.Addr().AppendTo(b)
	}
	return p.AppendTo(b)
}

// MappingInfo is one EAM entry and where it was written.
type MappingInfo struct {
	IPv4 netip.Prefix `json:"ipv4"`
	IPv6 netip.Prefix `json:"ipv6"`
	File string       `json:"file,omitempty"`
	Line int          `json:"line,omitempty"`
}

// LookupResult says how the translator treats one address.
type LookupResult struct {
	Address    netip.Addr   `json:"address"`
	Translated netip.Addr   `json:"translated,omitzero"` // the zero Addr when not translatable
	By         string       `json:"by"`                  // "eam", "prefix" or "none"
	Entry      *MappingInfo `json:"entry,omitempty"`     // the EAM entry used (By "eam")
	Prefix     netip.Prefix `json:"prefix,omitzero"`     // the RFC 6052 prefix used (By "prefix")
	// Drop is the drop reason (as map646 stats counts it: "denied",
	// "own_address" or "broadcast") the engine gives packets to the
	// address, or to its translation, for what the address is; "" for
	// none.
	Drop string `json:"drop,omitempty"`
	Note string `json:"note,omitempty"` // why not translated, and what Drop is
}

// String is the one-line form `map646 lookup` prints.
func (r *LookupResult) String() string {
	var s string
	switch r.By {
	case "eam":
		s = fmt.Sprintf("%v -> %v by EAM entry %v = %v", r.Address, r.Translated, r.Entry.IPv4, r.Entry.IPv6)
		if r.Entry.File != "" {
			s += fmt.Sprintf(" (%s:%d)", r.Entry.File, r.Entry.Line)
		}
	case "prefix":
		s = fmt.Sprintf("%v -> %v by prefix %v", r.Address, r.Translated, r.Prefix)
	default:
		s = fmt.Sprintf("%v: not translatable", r.Address)
	}
	if r.Note != "" {
		s += "; " + r.Note
	}
	return s
}

// Lookup says which EAM entry or prefix translates a (an IPv4 or IPv6
// address) and to what: EAM entries first, then the prefix (RFC 7757
// section 3.3), exactly as the translator's per-packet lookups do; and
// which of eng's address rules (xlat.Engine.AddressRule: deny_ipv4, the
// translator's own addresses, directed broadcast addresses) drops packets
// to a or to its translation, as the engine applies them. eng is the
// engine that translates with c: the running one, whose own addresses
// include the host's in host mode; nil builds one from c alone (the
// file's own addresses). Naming the entry scans the table, so this is for
// operators, not packets.
func (c *Config) Lookup(a netip.Addr, eng *xlat.Engine) (*LookupResult, error) {
	if c.snap == nil {
		return nil, errNoMap
	}
	if eng == nil {
		xc, err := c.Xlat()
		if err != nil {
			return nil, err
		}
		if eng, err = xlat.NewEngine(xc); err != nil {
			return nil, err
		}
	}
	a = a.Unmap().WithZone("")
	r := &LookupResult{Address: a, By: "none"}
	t := c.snap.Table()
	var o mapping.Origin
	var idx int
	if a.Is4() {
		v6, _, org := c.snap.To6(a.As4())
		o, r.Translated = org, netip.AddrFrom16(v6)
		if o == mapping.ByEAM {
			idx, _ = t.Find4(a.As4())
		}
	} else {
		got, _, org := c.snap.To4(a.As16())
		o, r.Translated = org, netip.AddrFrom4(got)
		if o == mapping.ByEAM {
			idx, _ = t.Find6(a.As16())
		}
	}
	switch o {
	case mapping.ByEAM:
		e := t.Entry(idx)
		r.By, r.Entry = "eam", &MappingInfo{IPv4: e.IPv4, IPv6: e.IPv6}
		if f, l, ok := c.MappingOrigin(idx); ok {
			r.Entry.File, r.Entry.Line = f, l
		}
	case mapping.ByPrefix:
		r.By, r.Prefix = "prefix", c.Translator.Prefix
	default:
		r.Translated = netip.Addr{}
		switch p := c.snap.Prefix(); {
		case a.Is4() && p.IsWellKnown(), a.Is6() && p.Contains(a.As16()):
			r.Note = fmt.Sprintf("with the well-known prefix %v, non-global IPv4 addresses are not translated (RFC 6052 section 3.1)", mapping.WellKnown)
		case a.Is4():
			r.Note = "no EAM entry covers it and no prefix is configured"
		default:
			r.Note = fmt.Sprintf("no EAM entry covers it and it is outside the prefix %v", c.Translator.Prefix)
		}
	}
	// The address first, then its translation: a packet to the address
	// meets the rules of its own side before it is translated (RFC 7915
	// sections 4.1 and 5.1).
	for _, x := range []netip.Addr{a, r.Translated} {
		if !x.IsValid() {
			continue
		}
		why := eng.AddressRule(x)
		if why == xlat.ReasonNone {
			continue
		}
		r.Drop = why.String()
		n := c.ruleNote(why, x)
		if r.Note == "" {
			r.Note = "but " + n
		} else {
			r.Note += "; " + n
		}
		break
	}
	return r, nil
}

// ruleNote says why the engine's address rule why (AddressRule) drops
// packets to and from a.
func (c *Config) ruleNote(why xlat.Reason, a netip.Addr) string {
	switch why {
	case xlat.ReasonDenied:
		for _, d := range c.Translator.DenyIPv4 {
			if d.Contains(a) {
				return fmt.Sprintf("deny_ipv4 %v drops packets to and from %v", d, a)
			}
		}
		return fmt.Sprintf("deny_ipv4 drops packets to and from %v", a)
	case xlat.ReasonOwnAddress:
		return fmt.Sprintf("%v is one of the translator's own addresses (in host mode every address of the host is one): packets to and from it are dropped as %v, and Echo Requests to it answered by the translator", a, why)
	default:
		return fmt.Sprintf("%v is the directed broadcast address of an own or mapped subnet: packets to and from it are dropped as %v (RFC 1812 section 5.3.5.2)", a, why)
	}
}
