package netsetup

import (
	"bytes"
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// fibRuleHdrLen is the size of struct fib_rule_hdr
// (include/uapi/linux/fib_rules.h): family, dst_len, src_len, tos, table,
// res1, res2, action (u8 each), then flags (u32).
const fibRuleHdrLen = 12

// fibRule is a policy routing rule as the kernel reports it in an
// RTM_NEWRULE (a dump) or RTM_DELRULE (a notification): fib_nl_fill_rule
// writes both the same way. Only what a Rule can say is kept field by
// field; every other selector or modifier only sets other.
type fibRule struct {
	family   uint8  // AF_INET, AF_INET6, or another the kernel has rules for (RTNL_FAMILY_IPMR...)
	priority uint32 // FRA_PRIORITY; 0 when absent
	action   uint8  // FR_ACT_TO_TBL, FR_ACT_UNREACHABLE, FR_ACT_BLACKHOLE, FR_ACT_GOTO...
	table    uint32 // FRA_TABLE, else the header's 8-bit table
	iif, oif string // FRA_IIFNAME, FRA_OIFNAME
	protocol uint8  // FRA_PROTOCOL: who added it (RTPROT_*); 0 when absent
	// other: the rule selects or acts on more than priority, iif, oif
	// and table: a source or destination prefix or TOS in the header,
	// FIB_RULE_INVERT ("not"), a suppress_prefixlength or
	// suppress_ifgroup other than -1 (unset), or any attribute besides
	// those, FRA_PRIORITY, FRA_TABLE, FRA_IIFNAME, FRA_OIFNAME,
	// FRA_PROTOCOL (who added it, not what it matches) and FRA_PAD:
	// fwmark, ipproto, port and uid ranges, l3mdev, goto, tun_id,
	// realms, dscp, flow label, and any the kernel adds later. A
	// malformed or truncated message sets it too: what cannot be read
	// is not ours.
	other bool
}

// decodeRule decodes the body of an RTM_NEWRULE or RTM_DELRULE message
// (after the nlmsghdr). It never fails: a body too short for the header
// yields a rule with other set.
func decodeRule(b []byte) fibRule {
	if len(b) < fibRuleHdrLen {
		return fibRule{other: true}
	}
	f := fibRule{family: b[0], table: uint32(b[4]), action: b[7]}
	dstLen, srcLen, tos := b[1], b[2], b[3]
	flags := binary.NativeEndian.Uint32(b[8:12])
	f.other = dstLen != 0 || srcLen != 0 || tos != 0 || flags&unix.FIB_RULE_INVERT != 0
	for b = b[fibRuleHdrLen:]; len(b) > 0; {
		if len(b) < 4 {
			f.other = true // a truncated attribute
			break
		}
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4])
		if l < 4 || l > len(b) {
			f.other = true
			break
		}
		v := b[4:l]
		b = b[min(nlAlign(l), len(b)):]
		switch t {
		case unix.FRA_PRIORITY:
			if len(v) != 4 {
				f.other = true
				continue
			}
			f.priority = binary.NativeEndian.Uint32(v)
		case unix.FRA_TABLE:
			if len(v) != 4 {
				f.other = true
				continue
			}
			f.table = binary.NativeEndian.Uint32(v)
		case unix.FRA_IIFNAME, unix.FRA_OIFNAME:
			name, ok := ifName(v)
			if !ok {
				f.other = true
				continue
			}
			if t == unix.FRA_IIFNAME {
				f.iif = name
			} else {
				f.oif = name
			}
		case unix.FRA_SUPPRESS_PREFIXLEN, unix.FRA_SUPPRESS_IFGROUP:
			// fib_nl_fill_rule writes suppress_prefixlen even when
			// unset, as -1; a set one changes what the lookup does.
			if len(v) != 4 || binary.NativeEndian.Uint32(v) != 0xffffffff {
				f.other = true
			}
		case unix.FRA_PROTOCOL:
			// Who added the rule, not what it matches: not a
			// selector, but it tells ours (RuleProtocol) from an
			// identical rule of someone else's.
			if len(v) != 1 {
				f.other = true
				continue
			}
			f.protocol = v[0]
		case unix.FRA_PAD:
		default:
			f.other = true
		}
	}
	return f
}

// ifName reads an interface name attribute: a NUL-terminated string of
// at most IFNAMSIZ bytes with the NUL.
func ifName(v []byte) (string, bool) {
	i := bytes.IndexByte(v, 0)
	if i < 0 || i >= unix.IFNAMSIZ {
		return "", false
	}
	return string(v[:i]), true
}

// rule returns f as a Rule, and false when a Rule cannot say all of it
// (another family, an output interface, another selector, an action
// other than a table lookup or unreachable): such a rule is never one of
// ours, whatever its priority, input interface and table.
func (f fibRule) rule() (Rule, bool) {
	if f.other || f.oif != "" {
		return Rule{}, false
	}
	r := Rule{Priority: int(f.priority), Iif: f.iif, Table: int(f.table)}
	switch f.family {
	case unix.AF_INET:
		r.Family = 4
	case unix.AF_INET6:
		r.Family = 6
	default:
		return Rule{}, false
	}
	switch f.action {
	case unix.FR_ACT_TO_TBL:
	case unix.FR_ACT_UNREACHABLE:
		r.Unreachable = true
	default:
		return Rule{}, false
	}
	return r, true
}

// is reports whether f is r exactly, whatever its protocol.
func (f fibRule) is(r Rule) bool {
	g, ok := f.rule()
	return ok && g == r.canonical()
}

// fibRule is r as a request writes it (appendRuleMsg), without protocol.
func (r Rule) fibRule() fibRule {
	f := fibRule{family: unix.AF_INET, priority: uint32(r.Priority), action: unix.FR_ACT_TO_TBL, table: uint32(r.Table), iif: r.Iif}
	if r.Family == 6 {
		f.family = unix.AF_INET6
	}
	if r.Unreachable {
		f.action, f.table = unix.FR_ACT_UNREACHABLE, 0
	}
	return f
}

// appendRuleMsg appends one rtnetlink rule request (nlmsghdr, struct
// fib_rule_hdr, FRA_PRIORITY, FRA_TABLE for a lookup, FRA_IIFNAME,
// FRA_PROTOCOL unless proto is 0): r, with no other selector.
func appendRuleMsg(b []byte, typ, flags uint16, seq uint32, r Rule, proto uint8) []byte {
	start := len(b)
	b = appendRequestHeader(b, typ, flags, seq)
	family := byte(unix.AF_INET)
	if r.Family == 6 {
		family = unix.AF_INET6
	}
	action, table := byte(unix.FR_ACT_TO_TBL), uint32(r.Table)
	if r.Unreachable {
		action, table = unix.FR_ACT_UNREACHABLE, unix.RT_TABLE_UNSPEC
	}
	hdrTable := byte(unix.RT_TABLE_UNSPEC) // the table is in FRA_TABLE
	if table < 256 {
		hdrTable = byte(table)
	}
	b = append(b, family, 0, 0, 0, hdrTable, 0, 0, action)
	b = binary.NativeEndian.AppendUint32(b, 0) // flags
	b = appendAttr(b, unix.FRA_PRIORITY, binary.NativeEndian.AppendUint32(nil, uint32(r.Priority)))
	if !r.Unreachable {
		b = appendAttr(b, unix.FRA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	}
	if r.Iif != "" {
		b = appendAttr(b, unix.FRA_IIFNAME, append([]byte(r.Iif), 0))
	}
	if proto != 0 {
		b = appendAttr(b, unix.FRA_PROTOCOL, []byte{proto})
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}
