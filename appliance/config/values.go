package config

import (
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/map646/map646/stack/xlat"
)

// decoder collects diagnostics while it turns HCL bodies into Config values.
// Attribute helpers leave their destination untouched (holding its default)
// when the attribute is absent, and return the attribute only when it was
// present and valid, so that cross-field checks run on good values only.
type decoder struct {
	diags       hcl.Diagnostics
	files       map[string]*hcl.File
	dir         string     // the HCL file's directory: base of mappings_file
	src         fileSource // where mappings_file is read from
	mappingsSrc []byte     // the mappings file's bytes (digest, snippets)

	// Where each Translator.Mappings entry came from: a mapping block's
	// range for the first len(mappingBlocks) entries; CSV lines after.
	mappingBlocks   []hcl.Range
	blockOverlap    []bool    // each mapping block's overlap opt-in
	csvOverlap      bool      // mappings_overlap: every mappings file entry opts in
	mappingsName    string    // the mappings file's name in diagnostics
	csvLines        []uint32  // the line of each mappings file entry
	prefixRange     hcl.Range // the translator's prefix value
	ipv4AddrRange   hcl.Range // the translator's ipv4_address value, if given
	translatorRange hcl.Range // the translator block's header
	// side4Ranges, side6Ranges: where each name of tun.ipv4_interfaces
	// and tun.ipv6_interfaces is (checkSides).
	side4Ranges, side6Ranges map[string]hcl.Range
}

// diagf records a diagnostic of severity sev pointing at r (the
// file:line:col an operator sees).
func (d *decoder) diagf(sev hcl.DiagnosticSeverity, r hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: sev,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  r.Ptr(),
	})
}

func (d *decoder) errorf(r hcl.Range, summary, format string, args ...any) {
	d.diagf(hcl.DiagError, r, summary, format, args...)
}

func (d *decoder) warnf(r hcl.Range, summary, format string, args ...any) {
	d.diagf(hcl.DiagWarning, r, summary, format, args...)
}

func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)
	return c
}

// value evaluates attr without variables or functions (the file is plain
// data) and converts it to ty.
func (d *decoder) value(attr *hcl.Attribute, ty cty.Type) (cty.Value, bool) {
	v, diags := attr.Expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	if v.IsNull() {
		d.errorf(attr.Expr.Range(), "Invalid value", "%s must not be null.", attr.Name)
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, ty)
	if err != nil {
		d.errorf(attr.Expr.Range(), "Incorrect attribute value type", "%s: %s is required: %s.", attr.Name, ty.FriendlyName(), err)
		return cty.NilVal, false
	}
	if !cv.IsWhollyKnown() {
		d.errorf(attr.Expr.Range(), "Invalid value", "%s must be a constant.", attr.Name)
		return cty.NilVal, false
	}
	if unboundedNumber(cv) {
		d.errorf(attr.Expr.Range(), "Number out of range",
			"%s: map646 refuses numbers beyond 2^%d (or, but for 0, below 2^-%d), written as strings too: writing one out in decimal takes time and memory in proportion to its exponent.",
			attr.Name, maxNumberExp, maxNumberExp)
		return cty.NilVal, false
	}
	return cv, true
}

// boundedNumber reports whether f is 0 or within 2^±maxNumberExp, the
// bounds checkNesting holds number literals to. A string converted to a
// number ("1e-100000000") has no such bound until it is checked here.
func boundedNumber(f *big.Float) bool {
	exp := f.MantExp(nil)
	return f.Sign() == 0 || exp >= -maxNumberExp && exp <= maxNumberExp
}

// unboundedNumber reports whether v (a known value) is or holds a number
// beyond boundedNumber.
func unboundedNumber(v cty.Value) bool {
	found := false
	_ = cty.Walk(v, func(_ cty.Path, ev cty.Value) (bool, error) {
		if ev.Type() == cty.Number && !ev.IsNull() && !boundedNumber(ev.AsBigFloat()) {
			found = true
		}
		return !found, nil
	})
	return found
}

// numberText is f in decimal for a diagnostic, if boundedNumber: the
// time big.Float.Text takes grows with the exponent (quadratically for
// "1e-100000000"), so an unbounded number is only described.
func numberText(f *big.Float) string {
	if !boundedNumber(f) {
		return fmt.Sprintf("a number beyond 2^±%d", maxNumberExp)
	}
	return f.Text('g', -1)
}

// typed is attribute name of attrs converted to ty: a nil attribute when
// it is absent or (reported) not of that type.
func (d *decoder) typed(attrs hcl.Attributes, name string, ty cty.Type) (*hcl.Attribute, cty.Value) {
	a := attrs[name]
	if a == nil {
		return nil, cty.NilVal
	}
	v, ok := d.value(a, ty)
	if !ok {
		return nil, cty.NilVal
	}
	return a, v
}

func (d *decoder) str(attrs hcl.Attributes, name string, dst *string) *hcl.Attribute {
	a, v := d.typed(attrs, name, cty.String)
	if a != nil {
		*dst = v.AsString()
	}
	return a
}

// oneOf is str restricted to a set of words.
func (d *decoder) oneOf(attrs hcl.Attributes, name string, dst *string, words ...string) *hcl.Attribute {
	var s string
	a := d.str(attrs, name, &s)
	if a == nil {
		return nil
	}
	for _, w := range words {
		if s == w {
			*dst = s
			return a
		}
	}
	d.errorf(a.Expr.Range(), "Invalid "+name, "%q is not one of %s.", s, quoteList(words))
	return nil
}

func quoteList(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = fmt.Sprintf("%q", w)
	}
	if len(q) == 1 {
		return q[0]
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}

func (d *decoder) boolean(attrs hcl.Attributes, name string, dst *bool) *hcl.Attribute {
	a, v := d.typed(attrs, name, cty.Bool)
	if a != nil {
		*dst = v.True()
	}
	return a
}

// integer reads a whole number in [lo, hi]. zeroOK also admits 0 (the
// usual "unset" value) when lo > 0.
func (d *decoder) integer(attrs hcl.Attributes, name string, dst *int, lo, hi int64, zeroOK bool) *hcl.Attribute {
	a, v := d.typed(attrs, name, cty.Number)
	if a == nil {
		return nil
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() {
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s must be a whole number, not %s.", name, numberText(bf))
		return nil
	}
	n, acc := bf.Int64()
	if acc != big.Exact || (n < lo || n > hi) && !(zeroOK && n == 0) {
		if zeroOK {
			d.errorf(a.Expr.Range(), "Invalid "+name, "%s must be 0 or between %d and %d, not %s.", name, lo, hi, numberText(bf))
		} else {
			d.errorf(a.Expr.Range(), "Invalid "+name, "%s must be between %d and %d, not %s.", name, lo, hi, numberText(bf))
		}
		return nil
	}
	*dst = int(n)
	return a
}

// family restricts an address or prefix attribute.
type family uint8

const (
	anyFamily family = iota
	ipv4Only
	ipv6Only
)

func (f family) ok(a netip.Addr) bool {
	switch f {
	case ipv4Only:
		return a.Is4()
	case ipv6Only:
		return a.Is6()
	}
	return true
}

func (f family) String() string {
	switch f {
	case ipv4Only:
		return "an IPv4"
	case ipv6Only:
		return "an IPv6"
	}
	return "an IPv4 or IPv6"
}

// parseAddr parses a literal address: no zone, and no IPv4-mapped IPv6
// form (which would hide an IPv4 address on the IPv6 side).
func parseAddr(s string, fam family) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("%q: zones are not allowed here", s)
	}
	if a.Is4In6() {
		return a, errMapped(s, a.Unmap().String())
	}
	if !fam.ok(a) {
		return a, fmt.Errorf("%q is not %s address", s, fam)
	}
	return a, nil
}

// errMapped explains why an IPv4-mapped IPv6 address (::ffff:0:0/96, RFC
// 4291 section 2.5.5.2) is refused: it is how a dual-stack socket names an
// IPv4 peer and never appears in an IPv6 packet on the wire (RFC 7915
// section 5.1 translates to and from real IPv6 addresses), so accepting it
// would hide an IPv4 address on the IPv6 side.
func errMapped(s, plain string) error {
	return fmt.Errorf("%q: IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are not allowed: they never appear in IPv6 packets, so nothing could match; write the plain %s address", s, plain)
}

// prefixMode says how parsePrefix treats a string without "/len" and host
// bits.
type prefixMode uint8

const (
	network   prefixMode = iota // "a/len" with no host bits, or a bare address as a full-length prefix
	hostBits                    // "a/len" where a is an interface address (host bits kept)
	strictLen                   // "a/len" only, no host bits
)

func parsePrefix(s string, fam family, mode prefixMode) (netip.Prefix, error) {
	var p netip.Prefix
	if i := strings.IndexByte(s, '/'); i >= 0 {
		a, err := parseAddr(s[:i], anyFamily)
		if m, merr := netip.ParsePrefix(s); merr == nil && m.Addr().Is4In6() {
			plain := "IPv4"
			if m.Bits() >= 96 {
				plain = netip.PrefixFrom(m.Addr().Unmap(), m.Bits()-96).String()
			}
			return p, errMapped(s, plain)
		}
		if err != nil {
			return p, fmt.Errorf("%q is not an IP prefix (address/length)", s)
		}
		bits := s[i+1:]
		if bits == "" || strings.TrimLeft(bits, "0123456789") != "" {
			return p, fmt.Errorf("%q is a malformed prefix: after the \"/\" must come only the length, a number 0-%d", s, a.BitLen())
		}
		q, perr := netip.ParsePrefix(s)
		if perr != nil {
			return q, fmt.Errorf("%q is not an IP prefix: the length must be 0-%d", s, a.BitLen())
		}
		p = q
	} else {
		if mode != network {
			return p, fmt.Errorf("%q has no prefix length (write it as address/length)", s)
		}
		a, err := parseAddr(s, anyFamily)
		if err != nil {
			if _, perr := netip.ParseAddr(s); perr == nil {
				return p, err // an address, but not one allowed here: say why
			}
			return p, fmt.Errorf("%q is neither an IP address nor a prefix", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return p, errMapped(s, "IPv4")
	}
	if !fam.ok(p.Addr()) {
		return p, fmt.Errorf("%q is not %s prefix", s, fam)
	}
	if mode != hostBits && p.Masked() != p {
		return p, fmt.Errorf("%q has host bits set (did you mean %v?)", s, p.Masked())
	}
	return p, nil
}

func (d *decoder) addr(attrs hcl.Attributes, name string, dst *netip.Addr, fam family) *hcl.Attribute {
	var s string
	a := d.str(attrs, name, &s)
	if a == nil {
		return nil
	}
	v, err := parseAddr(s, fam)
	if err != nil {
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s.", err)
		return nil
	}
	*dst = v
	return a
}

func (d *decoder) prefix(attrs hcl.Attributes, name string, dst *netip.Prefix, fam family, mode prefixMode) *hcl.Attribute {
	var s string
	a := d.str(attrs, name, &s)
	if a == nil {
		return nil
	}
	v, err := parsePrefix(s, fam, mode)
	if err != nil {
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s.", err)
		return nil
	}
	*dst = v
	return a
}

// prefixList reads a list of prefixes; an element's error points at that
// element when the list is written literally.
func (d *decoder) prefixList(attrs hcl.Attributes, name string, dst *[]netip.Prefix, fam family, mode prefixMode) *hcl.Attribute {
	return uniqueList(d, attrs, name, dst, func(s string) (netip.Prefix, error) { return parsePrefix(s, fam, mode) },
		func(p netip.Prefix) string { return p.String() }, nil)
}

// ifNameList decodes a list of interface names into dst: each a valid
// name (validIfName), none twice. ranges, when not nil, gets where each
// name is.
func (d *decoder) ifNameList(attrs hcl.Attributes, name string, dst *[]string, ranges map[string]hcl.Range) *hcl.Attribute {
	return uniqueList(d, attrs, name, dst, func(s string) (string, error) { return s, validIfName(s) }, strconv.Quote, ranges)
}

// uniqueList decodes a list of strings into dst, each parsed by parse and
// none twice; an element's error points at that element when the list is
// written literally (else at the attribute), and any error leaves dst as
// it was. ranges, when not nil, gets where each element is.
func uniqueList[T comparable](d *decoder, attrs hcl.Attributes, name string, dst *[]T, parse func(string) (T, error), show func(T) string, ranges map[T]hcl.Range) *hcl.Attribute {
	a, v := d.typed(attrs, name, cty.List(cty.String))
	if a == nil {
		return nil
	}
	var elems []hcl.Expression
	if t, ok := a.Expr.(interface{ ExprList() []hcl.Expression }); ok {
		elems = t.ExprList()
	}
	out := []T{}
	seen := map[T]int{}
	good := true
	for i, ev := range v.AsValueSlice() {
		r := a.Expr.Range()
		if i < len(elems) {
			r = elems[i].Range()
		}
		if ev.IsNull() {
			d.errorf(r, "Invalid "+name, "list elements must not be null.")
			good = false
			continue
		}
		x, err := parse(ev.AsString())
		if err != nil {
			d.errorf(r, "Invalid "+name, "%s.", err)
			good = false
			continue
		}
		if j, dup := seen[x]; dup {
			d.errorf(r, "Duplicate "+name, "%s is listed twice (elements %d and %d).", show(x), j+1, i+1)
			good = false
			continue
		}
		seen[x] = i
		if ranges != nil {
			ranges[x] = r
		}
		out = append(out, x)
	}
	if !good {
		return nil
	}
	*dst = out
	return a
}

// validIfName follows the kernel's dev_valid_name: 1 to 15 bytes
// (IFNAMSIZ - 1), not "." or "..", no '/', ':' or white space.
func validIfName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("an interface name must not be empty")
	case len(s) > 15:
		return fmt.Errorf("%q is longer than 15 bytes, the kernel's limit for interface names", s)
	case s == "." || s == "..":
		return fmt.Errorf("%q is not a valid interface name", s)
	case strings.ContainsAny(s, "/: \t\n\r\v\f"):
		return fmt.Errorf("%q: interface names must not contain '/', ':' or white space", s)
	}
	return nil
}

// singleBlock reports every block of a type after the first.
func (d *decoder) singleBlock(blocks hcl.Blocks, what string) *hcl.Block {
	if len(blocks) == 0 {
		return nil
	}
	for _, b := range blocks[1:] {
		d.errorf(b.DefRange, "Duplicate "+what+" block", "Only one %s block is allowed; the first is at %s.", what, posString(blocks[0].DefRange))
	}
	return blocks[0]
}

func posString(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// tosSetting decodes traffic_class or tos (RFC 7915 sections 4.1 and
// 5.1): "copy", "zero", or a DSCP from 0 to 63 (RFC 2474), which replaces
// the upper six bits of the octet while the ECN bits are copied.
func (d *decoder) tosSetting(attrs hcl.Attributes, name string, dst *xlat.TOS) *hcl.Attribute {
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, diags := a.Expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	bad := func() *hcl.Attribute {
		d.errorf(a.Expr.Range(), "Invalid "+name, `%s must be "copy", "zero" or a DSCP value from 0 to 63 (the ECN bits are always copied).`, name)
		return nil
	}
	switch {
	case v.IsNull() || !v.IsWhollyKnown():
		return bad()
	case v.Type() == cty.String:
		switch v.AsString() {
		case "copy":
			*dst = xlat.TOS{}
		case "zero":
			*dst = xlat.TOS{Reset: true}
		default:
			return bad()
		}
	case v.Type() == cty.Number:
		n, acc := v.AsBigFloat().Int64()
		if acc != big.Exact || n < 0 || n > 63 {
			return bad()
		}
		*dst = xlat.TOS{Reset: true, DSCP: uint8(n)}
	default:
		return bad()
	}
	return a
}

// mtuPlateaus decodes mtu_plateaus: whole numbers from 68 to 65535, in
// any order (the engine sorts them), no duplicates, at most
// xlat.MaxMTUPlateaus. Each bad element is reported where it is written.
func (d *decoder) mtuPlateaus(attrs hcl.Attributes, dst *[]int) *hcl.Attribute {
	const name = "mtu_plateaus"
	a := attrs[name]
	if a == nil {
		return nil
	}
	v, ok := d.value(a, cty.List(cty.Number))
	if !ok {
		return nil
	}
	vals := v.AsValueSlice()
	switch {
	case len(vals) == 0:
		d.errorf(a.Expr.Range(), "Invalid "+name, "%s must not be empty; leave it out for the plateaus of RFC 1191 section 7.", name)
		return nil
	case len(vals) > xlat.MaxMTUPlateaus:
		d.errorf(a.Expr.Range(), "Invalid "+name, "%d plateaus: at most %d.", len(vals), xlat.MaxMTUPlateaus)
		return nil
	}
	out := make([]int, 0, len(vals))
	seen := map[int64]int{}
	good := true
	for i, ev := range vals {
		r := elemRange(a, i)
		if ev.IsNull() {
			d.errorf(r, "Invalid "+name, "list elements must not be null.")
			good = false
			continue
		}
		n, acc := ev.AsBigFloat().Int64()
		if acc != big.Exact || n < 68 || n > 65535 {
			d.errorf(r, "Invalid "+name, "a plateau is an MTU, a whole number from 68 (RFC 791) to 65535, not %s.", numberText(ev.AsBigFloat()))
			good = false
			continue
		}
		if j, dup := seen[n]; dup {
			d.errorf(r, "Duplicate "+name, "%d is listed twice (elements %d and %d).", n, j+1, i+1)
			good = false
			continue
		}
		seen[n] = i
		out = append(out, int(n))
	}
	if !good {
		return nil
	}
	*dst = out
	return a
}
