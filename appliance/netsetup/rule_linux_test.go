package netsetup

import (
	"encoding/hex"
	"testing"

	"golang.org/x/sys/unix"
)

// ruleMsgs are RTM_NEWRULE bodies (struct fib_rule_hdr and FRA_*
// attributes, after the nlmsghdr) as Linux 6.18 dumped them after each
// `ip rule add` (iproute2 6.1) in a fresh namespace, on a little-endian
// machine, each with what decodeRule must make of it and the Rule it is,
// if a Rule can say all of it. After them, bodies written by hand: a
// selector iproute2 6.1 cannot add, another family, and malformed ones.
var ruleMsgs = []struct {
	name string
	hex  string
	want fibRule
	rule *Rule // nil: not a Rule, never ours
}{
	// Ours, as daemon.policyRules adds them, and tables and protocols
	// that change nothing of what the rule selects.
	{"ip -4 rule add pref 6460 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646}, &Rule{Family: 4, Priority: 6460, Table: 646}},
	{"ip -4 rule add pref 6461 iif lo lookup main",
		"02000000fe0000010000000008000f00fe00000008000e00ffffffff0500150000000000070003006c6f0000080006003d190000",
		fibRule{family: unix.AF_INET, priority: 6461, action: unix.FR_ACT_TO_TBL, table: 254, iif: "lo"}, &Rule{Family: 4, Priority: 6461, Iif: "lo", Table: 254}},
	{"ip -4 rule add pref 6463 unreachable",
		"02000000000000070000000008000f000000000008000e00ffffffff0500150000000000080006003f190000",
		fibRule{family: unix.AF_INET, priority: 6463, action: unix.FR_ACT_UNREACHABLE, table: 0}, &Rule{Family: 4, Priority: 6463, Unreachable: true}},
	{"ip -6 rule add pref 6460 lookup 646",
		"0a000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET6, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646}, &Rule{Family: 6, Priority: 6460, Table: 646}},
	{"ip -6 rule add pref 6462 iif dm0 lookup main",
		"0a000000fe0000010000000008000f00fe00000008000e00ffffffff050015000000000008000300646d3000080006003e190000",
		fibRule{family: unix.AF_INET6, priority: 6462, action: unix.FR_ACT_TO_TBL, table: 254, iif: "dm0"}, &Rule{Family: 6, Priority: 6462, Iif: "dm0", Table: 254}},
	{"ip -6 rule add pref 6462 iif dmgone lookup main",
		"0a000000fe0000010800000008000f00fe00000008000e00ffffffff05001500000000000b000300646d676f6e650000080006003e190000",
		fibRule{family: unix.AF_INET6, priority: 6462, action: unix.FR_ACT_TO_TBL, table: 254, iif: "dmgone"}, &Rule{Family: 6, Priority: 6462, Iif: "dmgone", Table: 254}},
	{"ip -4 rule add pref 6460 lookup 100000",
		"02000000fc0000010000000008000f00a086010008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 100000}, &Rule{Family: 4, Priority: 6460, Table: 100000}},
	{"ip -4 rule add pref 6460 lookup 646 proto static",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150004000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, protocol: unix.RTPROT_STATIC}, &Rule{Family: 4, Priority: 6460, Table: 646}},
	{"ip -4 rule add pref 6460 from 192.0.2.0/24 lookup 646",
		"02001800fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000200c0000200",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 to 198.51.100.0/24 lookup 646",
		"02180000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000100c6336400",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -6 rule add pref 6460 from 2001:db8::/32 lookup 646",
		"0a002000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c1900001400020020010db8000000000000000000000000",
		fibRule{family: unix.AF_INET6, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 tos 0x10 lookup 646",
		"02000010fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 fwmark 1 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000a000100000008001000ffffffff",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 fwmark 0x1/0xff lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000a000100000008001000ff000000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 ipproto tcp lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c1900000500160006000000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 sport 1000 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008001700e803e80306001c00ffff0000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 dport 53-54 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c1900000800180035003600",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 uidrange 1000-2000 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c1900000c001400e8030000d0070000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 l3mdev",
		"02000000000000010000000008000f000000000008000e00ffffffff0500150000000000080006003c1900000500130001000000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 0, other: true}, nil},
	{"ip -4 rule add pref 6460 not lookup 646",
		"02000000fc0000010200000008000f008602000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 lookup 646 suppress_prefixlength 0",
		"02000000fc0000010000000008000f008602000008000e00000000000500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 lookup 646 suppress_ifgroup 1",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000d0001000000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 oif dm0 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff050015000000000008001100646d3000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, oif: "dm0"}, nil},
	{"ip -4 rule add pref 6460 realms 1/2 lookup 646",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c19000008000b0002000100",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ip -4 rule add pref 6460 blackhole",
		"02000000000000060000000008000f000000000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_BLACKHOLE, table: 0}, nil},
	{"ip -4 rule add pref 6460 prohibit",
		"02000000000000080000000008000f000000000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_PROHIBIT, table: 0}, nil},
	{"ip -4 rule add pref 6460 goto 6463",
		"02000000000000020000000008000f000000000008000e00ffffffff0500150000000000080006003c190000080004003f190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_GOTO, table: 0, other: true}, nil},
	{"ip -4 rule add pref 6460 nop",
		"02000000000000030000000008000f000000000008000e00ffffffff0500150000000000080006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_NOP, table: 0}, nil},
	{"ip -6 rule add pref 6463 unreachable",
		"0a000000000000070000000008000f000000000008000e00ffffffff0500150000000000080006003f190000",
		fibRule{family: unix.AF_INET6, priority: 6463, action: unix.FR_ACT_UNREACHABLE, table: 0}, &Rule{Family: 6, Priority: 6463, Unreachable: true}},
	{"ip -6 rule add pref 6463 prohibit",
		"0a000000000000080000000008000f000000000008000e00ffffffff0500150000000000080006003f190000",
		fibRule{family: unix.AF_INET6, priority: 6463, action: unix.FR_ACT_PROHIBIT, table: 0}, nil},
	// Hand-written.
	{"ours and FRA_DSCP (Linux 6.13: ip rule add dscp 4)",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000" + "0500190004000000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"the IPv4 multicast family (RTNL_FAMILY_IPMR)",
		"80000000fc0000010000000008000f008602000008000600" + "3c190000",
		fibRule{family: 128, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646}, nil},
	{"header cut short",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000"[:22],
		fibRule{other: true}, nil},
	{"ours and two bytes of an attribute",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000" + "0800",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"ours and an attribute longer than the message",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000" + "100006003c190000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
	{"an attribute of length 3",
		"02000000fc00000100000000" + "03000600",
		fibRule{family: unix.AF_INET, action: unix.FR_ACT_TO_TBL, table: 252, other: true}, nil},
	{"FRA_PRIORITY of two bytes",
		"02000000fc00000100000000" + "060006003c190000",
		fibRule{family: unix.AF_INET, action: unix.FR_ACT_TO_TBL, table: 252, other: true}, nil},
	{"FRA_TABLE of two bytes",
		"02000000fc00000100000000" + "06000f0086020000",
		fibRule{family: unix.AF_INET, action: unix.FR_ACT_TO_TBL, table: 252, other: true}, nil},
	{"FRA_IIFNAME without its NUL",
		"02000000fe00000100000000" + "060003006c6f0000" + "080006003d190000",
		fibRule{family: unix.AF_INET, priority: 6461, action: unix.FR_ACT_TO_TBL, table: 254, other: true}, nil},
	{"FRA_SUPPRESS_PREFIXLEN of two bytes",
		"02000000fc0000010000000008000f008602000008000e00ffffffff0500150000000000080006003c190000" + "06000e00ffff0000",
		fibRule{family: unix.AF_INET, priority: 6460, action: unix.FR_ACT_TO_TBL, table: 646, other: true}, nil},
}

// TestDecodeRule: decodeRule reads priority, action, table, input and
// output interface from the kernel's own messages, and flags every other
// selector; rule() turns into a Rule only what a Rule says entirely, so
// that no look-alike of one of ours passes for it.
func TestDecodeRule(t *testing.T) {
	for _, c := range ruleMsgs {
		b, err := hex.DecodeString(c.hex)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := decodeRule(b)
		if got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
		r, ok := got.rule()
		switch {
		case c.rule == nil && ok:
			t.Errorf("%s: rule() = %v; want none (not ours)", c.name, r)
		case c.rule != nil && (!ok || r != *c.rule):
			t.Errorf("%s: rule() = %v, %v; want %v", c.name, r, ok, *c.rule)
		}
	}
}

// FuzzDecodeRule: whatever the bytes, decodeRule does not panic, and a
// message it reads as a Rule is one appendRuleMsg writes back the same:
// nothing the decoder let pass is lost.
func FuzzDecodeRule(f *testing.F) {
	for _, c := range ruleMsgs {
		b, err := hex.DecodeString(c.hex)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, ok := decodeRule(b).rule()
		if !ok {
			return
		}
		if r.Family != 4 && r.Family != 6 {
			t.Fatalf("rule of family %d from %x", r.Family, b)
		}
		msg := appendRuleMsg(nil, unix.RTM_NEWRULE, 0, 1, r, RuleProtocol)
		back, ok := decodeRule(msg[unix.NLMSG_HDRLEN:]).rule()
		if !ok || back != r.canonical() {
			t.Fatalf("%x: %v, written and read again: %v, %v", b, r, back, ok)
		}
	})
}

// TestFirstDeleted: the rule a delete request naming a rule of ours and
// a protocol removes, as the kernel's rule_find picks it: the first of
// the family, priority and action, of the table and input interface the
// request names (none for unreachable, none for an empty one), of the
// protocol unless 0, whatever else the rule selects (a source prefix, an
// output interface: other, oif).
func TestFirstDeleted(t *testing.T) {
	const static, boot = unix.RTPROT_STATIC, unix.RTPROT_BOOT
	lookup := Rule{Family: 4, Priority: 6460, Table: 646}
	unreach := Rule{Family: 6, Priority: 6463, Unreachable: true}
	iif := Rule{Family: 4, Priority: 6461, Iif: "lo", Table: 254}
	f4 := func(prio uint32, table uint32, proto uint8) fibRule {
		return fibRule{family: unix.AF_INET, priority: prio, action: unix.FR_ACT_TO_TBL, table: table, protocol: proto}
	}
	from := f4(6460, 646, 0)
	from.other = true // from 192.0.2.0/24
	viaOif := f4(6460, 646, static)
	viaOif.oif = "dm0"
	onIif := f4(6460, 646, 0)
	onIif.iif = "dm0"
	un6 := fibRule{family: unix.AF_INET6, priority: 6463, action: unix.FR_ACT_UNREACHABLE}
	lo := f4(6461, 254, 0)
	lo.iif = "lo"
	for _, c := range []struct {
		name  string
		rules []fibRule
		r     Rule
		proto uint8
		want  int
	}{
		{"the identical one", []fibRule{f4(6460, 646, 0)}, lookup, 0, 0},
		{"a look-alike first, protocol 0", []fibRule{from, f4(6460, 646, 0)}, lookup, 0, 0},
		{"a look-alike first, its protocol named", []fibRule{from, f4(6460, 646, static)}, lookup, static, 1},
		{"an output interface first", []fibRule{viaOif, f4(6460, 646, static)}, lookup, static, 0},
		{"an input interface first, none named", []fibRule{onIif, f4(6460, 646, boot)}, lookup, 0, 0},
		{"another table, priority, family first", []fibRule{f4(6460, 647, 0), f4(6459, 646, 0), un6, f4(6460, 646, 0)}, lookup, 0, 3},
		{"unreachable: any table", []fibRule{f4(6463, 0, 0), un6}, unreach, 0, 1},
		{"input interface named", []fibRule{f4(6461, 254, 0), lo}, iif, 0, 1},
		{"none", []fibRule{from, f4(6460, 646, static)}, lookup, boot, -1},
	} {
		if got := firstDeleted(c.rules, c.r, c.proto); got != c.want {
			t.Errorf("%s: firstDeleted = %d, want %d", c.name, got, c.want)
		}
	}
}
