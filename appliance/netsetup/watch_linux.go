package netsetup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Change is one kernel event that may undo what a Tracker installed.
type Change struct {
	// Link is the interface an RTM_NEWLINK or RTM_DELLINK was about;
	// Up is its administrative state afterwards (false when deleted).
	Link string
	Up   bool
	// Route is set (Dst valid) for RTM_DELROUTE: the route the kernel
	// removed, with the device it resolved; and for an RTM_NEWROUTE with
	// NLM_F_REPLACE (Replaced): the route that now has the place (table,
	// destination, metric) of another one, as the kernel describes it
	// (a blackhole, unicast through its device or gateway; any other
	// type with neither). Only routes at the metric Netlink installs
	// ours at (installedMetric) are reported: one at another metric has
	// a place of its own and is never ours. A deleted route is reported
	// only if it is of the protocol of ours (RouteProtocol).
	Route Route
	// Replaced: Route replaced a route in place (`ip route replace`),
	// which the kernel announces without deleting the old one.
	Replaced bool
	// Protocol is the rtm_protocol of Route (RouteProtocol for ours):
	// a route replaced by an identical-looking one of another protocol
	// (`ip route replace` defaults to proto boot) is no longer ours, and
	// its later deletion is not reported (see Route).
	Protocol uint8
	// Ahead is set (Dst valid) for an RTM_NEWROUTE of a route the
	// kernel now prefers to any of ours at the same table and
	// destination without having replaced it: an IPv4 route added in
	// front of others at the same place (`ip route prepend`: flags
	// NLM_F_CREATE without NLM_F_EXCL, NLM_F_APPEND or NLM_F_REPLACE)
	// at our metric (installedMetric), or, in the table Watch was given,
	// an IPv6 route at a metric below ours (a new place: the kernel
	// looks up the lowest metric first). Neither an appended route
	// (behind the others) nor an IPv6 route added at our metric is
	// reported: fib6 has no prepend, it goes behind ours, or, through a
	// gateway beside ours through one, joins ours as an ECMP next hop
	// (someone's intent, as an appended route is).
	Ahead AheadRoute
	// Addrs is true for an RTM_NEWADDR or RTM_DELADDR of an IPv4
	// address: the host's own addresses (Kernel.HostAddrs) changed.
	Addrs bool
	// Deleted is set (Prefix valid) for an RTM_DELADDR of either
	// family: the address the kernel removed, with its prefix length
	// and device, as Tracker.SyncAddrs installs them.
	Deleted Addr
	// Rule is set (Family not 0) for an RTM_DELRULE of either family
	// that a Rule describes exactly (decodeRule): the policy rule the
	// kernel removed, for Tracker.OwnsRule. A deleted rule with any
	// other selector or action is never ours and is not reported.
	Rule Rule
	// RuleProtocol is the deleted Rule's protocol (FRA_PROTOCOL; 0
	// when the kernel reported none): netsetup.RuleProtocol for a rule the
	// daemon added; another for an identical rule of someone else's,
	// or one AddRule took over.
	RuleProtocol uint8
	// Lost is true when the kernel dropped events (ENOBUFS): anything
	// may have changed.
	Lost bool
}

// Watcher receives link, route, address and policy rule events of the
// network namespace that was current for the thread that called Watch, on
// a netlink socket subscribed to RTNLGRP_LINK, RTNLGRP_IPV4_ROUTE,
// RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR,
// RTNLGRP_IPV4_RULE and RTNLGRP_IPV6_RULE.
// IPv4 routes that the kernel flushes with their link (ip link set down)
// produce no RTM_DELROUTE (fib_sync_down_dev): the link event is the
// only sign of them, so a reader must restore everything when a link
// comes back up.
type Watcher struct {
	f     *os.File // non-blocking, in the runtime poller: Close wakes Read
	table uint32   // the translator's own table, whose routes ahead of ours are reported at any metric
	buf   []byte
	names map[int32]string
	msgs  int // messages received, for tests of the socket filter
}

// Watch opens the subscription. Route replacements and additions sent
// from the netlink socket of port ownPort (Netlink.PortID: a restore
// replaces every route the daemon owns, a million for a sparse table) are
// not delivered; 0: all are. table is the translator's own table (routes
// ahead of ours there are reported at any metric: Change.Ahead); 0: none.
func Watch(ownPort uint32, table int) (*Watcher, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	// Only the messages a Watcher reads pass: the RTM_NEWROUTE of every
	// route the daemon installs (a million for a sparse table) would
	// overflow the socket, and losing events costs a full restore.
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, watchFilter(ownPort, uint32(table))); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink filter: %w", err)
	}
	groups := uint32(1<<(unix.RTNLGRP_LINK-1) | 1<<(unix.RTNLGRP_IPV4_ROUTE-1) | 1<<(unix.RTNLGRP_IPV6_ROUTE-1) |
		1<<(unix.RTNLGRP_IPV4_IFADDR-1) | 1<<(unix.RTNLGRP_IPV6_IFADDR-1) |
		1<<(unix.RTNLGRP_IPV4_RULE-1) | 1<<(unix.RTNLGRP_IPV6_RULE-1))
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groups}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	w := &Watcher{f: os.NewFile(uintptr(fd), "netlink-watch"), table: uint32(table), buf: make([]byte, 1<<16), names: map[int32]string{}}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			w.names[int32(i.Index)] = i.Name
		}
	}
	return w, nil
}

// watchFilter is a classic BPF program that accepts rtnetlink messages of
// type RTM_NEWLINK, RTM_DELLINK, RTM_DELROUTE, RTM_NEWADDR, RTM_DELADDR
// and RTM_DELRULE, and RTM_NEWROUTEs not sent from ownPort (unless 0)
// that may put a route in the place of ours or ahead of it: with
// NLM_F_REPLACE; with NLM_F_CREATE alone (prepended at a place that has
// routes); and with NLM_F_EXCL (a new place) only for IPv6 in table
// (unless 0), where a lower metric wins over ours. It drops the rest
// (each notification is an skb of its own): a route appended, or added
// at a new place elsewhere (every route the daemon installs, a full BGP
// table in main), would overflow the socket. A notification's nlmsg_pid
// is the port of the socket whose request caused it, its RTA_TABLE the
// first attribute after the rtmsg (fib_dump_info, rt6_fill_node). BPF
// loads read network byte order; the netlink message is in host order.
func watchFilter(ownPort, table uint32) *unix.SockFprog {
	be16 := func(v uint16) uint32 {
		return uint32(binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, v)))
	}
	be32 := func(v uint32) uint32 {
		return binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, v))
	}
	// A tiny assembler: jumps name their targets, resolved at the end.
	type insn struct {
		f      unix.SockFilter
		jt, jf string // "" falls through
	}
	var prog []insn
	labels := map[string]int{}
	label := func(l string) { labels[l] = len(prog) }
	op := func(code uint16, k uint32) { prog = append(prog, insn{f: unix.SockFilter{Code: code, K: k}}) }
	jmp := func(code uint16, k uint32, jt, jf string) {
		prog = append(prog, insn{f: unix.SockFilter{Code: code, K: k}, jt: jt, jf: jf})
	}
	const jeq, jset = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K

	op(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, 4) // nlmsg_type
	for _, t := range []uint16{unix.RTM_NEWLINK, unix.RTM_DELLINK, unix.RTM_DELROUTE, unix.RTM_NEWADDR, unix.RTM_DELADDR, unix.RTM_DELRULE} {
		jmp(jeq, be16(t), "accept", "")
	}
	jmp(jeq, be16(unix.RTM_NEWROUTE), "", "drop")
	op(unix.BPF_LD|unix.BPF_H|unix.BPF_ABS, 6) // nlmsg_flags
	jmp(jset, be16(unix.NLM_F_REPLACE), "sender", "")
	jmp(jset, be16(unix.NLM_F_APPEND), "drop", "")
	jmp(jset, be16(unix.NLM_F_EXCL), "", "sender")
	if table == 0 {
		jmp(unix.BPF_JMP|unix.BPF_JA, 0, "drop", "") // a JA's offset is its k
	} else {
		op(unix.BPF_LD|unix.BPF_B|unix.BPF_ABS, unix.NLMSG_HDRLEN) // rtm_family
		jmp(jeq, unix.AF_INET6, "", "drop")
		op(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, unix.NLMSG_HDRLEN+unix.SizeofRtMsg+4) // RTA_TABLE's value
		jmp(jeq, be32(table), "sender", "drop")
	}
	label("sender")
	if ownPort != 0 {
		op(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, 12) // nlmsg_pid
		jmp(jeq, be32(ownPort), "drop", "accept")
	}
	label("accept")
	op(unix.BPF_RET|unix.BPF_K, 0xffffffff)
	label("drop")
	op(unix.BPF_RET|unix.BPF_K, 0)

	out := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		f := in.f
		rel := func(l string) uint8 {
			if l == "" {
				return 0
			}
			return uint8(labels[l] - i - 1)
		}
		if f.Code == unix.BPF_JMP|unix.BPF_JA {
			f.K = uint32(rel(in.jt))
		} else {
			f.Jt, f.Jf = rel(in.jt), rel(in.jf)
		}
		out[i] = f
	}
	return &unix.SockFprog{Len: uint16(len(out)), Filter: &out[0]}
}

// Close ends the subscription; a blocked Read returns an error.
func (w *Watcher) Close() error {
	return w.f.Close()
}

// Read blocks until the kernel sends events and appends those that
// concern links (all of them), deleted routes, addresses and rules that
// may be ours to cs.
func (w *Watcher) Read(cs []Change) ([]Change, error) {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return cs, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), w.buf, 0)
		return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EINTR)
	})
	if err != nil {
		return cs, err
	}
	if errors.Is(rerr, unix.ENOBUFS) {
		return append(cs, Change{Lost: true}), nil
	}
	if rerr != nil {
		return cs, rerr
	}
	return w.parse(cs, w.buf[:n]), nil
}

// parse decodes a buffer of rtnetlink messages (include/uapi/linux/
// rtnetlink.h, if_link.h). Malformed messages are skipped.
func (w *Watcher) parse(cs []Change, b []byte) []Change {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return cs
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		b0, body := b[:unix.NLMSG_HDRLEN], b[unix.NLMSG_HDRLEN:l]
		w.msgs++
		b = b[min(nlAlign(l), len(b)):]
		switch typ {
		case unix.RTM_NEWLINK, unix.RTM_DELLINK:
			if len(body) < unix.SizeofIfInfomsg {
				continue
			}
			idx := int32(binary.NativeEndian.Uint32(body[4:8]))
			flags := binary.NativeEndian.Uint32(body[8:12])
			name := ""
			for t, v := range attrs(body[unix.SizeofIfInfomsg:]) {
				if t == unix.IFLA_IFNAME && len(v) > 0 {
					name = string(v[:max(0, len(v)-1)]) // NUL-terminated
				}
			}
			if name == "" {
				name = w.names[idx]
			}
			if name == "" {
				continue // a link we cannot name is none of ours
			}
			if typ == unix.RTM_DELLINK {
				delete(w.names, idx)
				cs = append(cs, Change{Link: name})
				continue
			}
			w.names[idx] = name
			cs = append(cs, Change{Link: name, Up: flags&unix.IFF_UP != 0})
		case unix.RTM_DELRULE:
			f := decodeRule(body)
			if r, ok := f.rule(); ok {
				cs = append(cs, Change{Rule: r, RuleProtocol: f.protocol})
			}
		case unix.RTM_NEWADDR, unix.RTM_DELADDR:
			if len(body) < unix.SizeofIfAddrmsg {
				continue
			}
			c := Change{Addrs: body[0] == unix.AF_INET}
			if typ == unix.RTM_DELADDR {
				c.Deleted = w.deletedAddr(body)
			}
			if c.Addrs || c.Deleted.Prefix.IsValid() {
				cs = append(cs, c)
			}
		case unix.RTM_DELROUTE, unix.RTM_NEWROUTE:
			flags := binary.NativeEndian.Uint16(b0[6:8])
			replaced := typ == unix.RTM_NEWROUTE && flags&unix.NLM_F_REPLACE != 0
			prepended := typ == unix.RTM_NEWROUTE && flags&(unix.NLM_F_REPLACE|unix.NLM_F_EXCL|unix.NLM_F_APPEND) == 0
			newPlace := typ == unix.RTM_NEWROUTE && !replaced && flags&unix.NLM_F_EXCL != 0
			if typ == unix.RTM_NEWROUTE && !replaced && !prepended && !newPlace {
				continue // appended behind what is there
			}
			k, ok := decodeRoute(body, w.name)
			if !ok {
				continue
			}
			family := body[0] // decodeRoute checked its length
			switch {
			case newPlace:
				// Ahead of ours only at a lower metric in the
				// translator's table (IPv6: IPv4's is 0).
				if family != unix.AF_INET6 || w.table == 0 || uint32(k.Table) != w.table || k.Metric >= installedMetric(family) {
					continue
				}
			case prepended && family != unix.AF_INET:
				continue // fib6 puts it behind the routes at its metric, or beside ours (ECMP)
			case k.Metric != installedMetric(family):
				// Another place than any of ours (the kernel keys a
				// route on table, destination, TOS and metric):
				// someone else's route, deleted, replaced or
				// prepended, is not ours, nor ahead of ours.
				continue
			case typ == unix.RTM_DELROUTE && k.Protocol != RouteProtocol:
				// Someone else's route, deleted, even at the place,
				// device and gateway of one of ours: a look-alike
				// (`ip route prepend ... proto boot`) the daemon
				// evicted from ahead of ours, which is still there.
				continue
			}
			if prepended || newPlace {
				cs = append(cs, Change{Ahead: k})
				continue
			}
			cs = append(cs, Change{Route: k.Route, Replaced: replaced, Protocol: k.Protocol})
		}
	}
	return cs
}

// decodeRoute decodes the body of an RTM_NEWROUTE or RTM_DELROUTE
// (struct rtmsg and attributes) of an IPv4 or IPv6 route of TOS 0 (ours
// are; a route of another TOS has a place of its own) as an AheadRoute:
// its table (0 for main), destination, metric (0 when absent), protocol,
// type, and for a unicast route its device (name resolves an ifindex)
// and gateway; a blackhole has neither (Route.Blackhole), another type
// (unreachable, prohibit, throw...: nothing of ours) neither either.
// False if it is malformed, of another family or TOS.
func decodeRoute(body []byte, name func(int32) string) (AheadRoute, bool) {
	if len(body) < unix.SizeofRtMsg {
		return AheadRoute{}, false
	}
	family, dstLen, tos, table := body[0], int(body[1]), body[3], uint32(body[4])
	k := AheadRoute{Protocol: body[5], Type: body[7]}
	if tos != 0 {
		return AheadRoute{}, false
	}
	var r Route
	var dst []byte
	for t, v := range attrs(body[unix.SizeofRtMsg:]) {
		switch t {
		case unix.RTA_DST:
			dst = v
		case unix.RTA_PRIORITY:
			if len(v) >= 4 {
				k.Metric = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_TABLE:
			if len(v) >= 4 {
				table = binary.NativeEndian.Uint32(v)
			}
		case unix.RTA_OIF:
			if len(v) >= 4 {
				r.Dev = name(int32(binary.NativeEndian.Uint32(v)))
			}
		case unix.RTA_GATEWAY:
			r.Via, _ = netip.AddrFromSlice(v)
		case unix.RTA_VIA:
			if len(v) > 2 {
				r.Via, _ = netip.AddrFromSlice(v[2:])
			}
		}
	}
	var a netip.Addr
	switch {
	case family == unix.AF_INET && (dst == nil || len(dst) == 4):
		a = netip.IPv4Unspecified()
	case family == unix.AF_INET6 && (dst == nil || len(dst) == 16):
		a = netip.IPv6Unspecified()
	default:
		return AheadRoute{}, false
	}
	if dst != nil {
		a, _ = netip.AddrFromSlice(dst)
	}
	p, err := a.Prefix(dstLen)
	if err != nil || p.Addr() != a {
		return AheadRoute{}, false
	}
	r.Dst = p
	if table != unix.RT_TABLE_MAIN {
		r.Table = int(table)
	}
	switch {
	case k.Type == unix.RTN_BLACKHOLE:
		r = Route{Dst: r.Dst, Table: r.Table, Blackhole: true}
	case k.Type != unix.RTN_UNICAST:
		r = Route{Dst: r.Dst, Table: r.Table}
	}
	k.Route = r
	return k, true
}

// installedMetric is the metric (RTA_PRIORITY) the kernel reports for
// the routes Netlink installs, which set none: 0 for IPv4 (fib_dump_info
// leaves the attribute out), IP6_RT_PRIO_USER (1024) for IPv6
// (ip6_route_info_create puts a route without a metric there).
func installedMetric(family uint8) uint32 {
	if family == unix.AF_INET6 {
		return ipv6Metric
	}
	return 0
}

// deletedAddr decodes an RTM_DELADDR's ifaddrmsg and attributes: the
// address is IFA_LOCAL where there is one (IFA_ADDRESS is the peer of a
// point-to-point IPv4 address), else IFA_ADDRESS. The zero Addr if it is
// malformed or on a link we cannot name.
func (w *Watcher) deletedAddr(body []byte) Addr {
	family, plen := body[0], int(body[1])
	idx := int32(binary.NativeEndian.Uint32(body[4:8]))
	var local, addr []byte
	for t, v := range attrs(body[unix.SizeofIfAddrmsg:]) {
		switch t {
		case unix.IFA_LOCAL:
			local = v
		case unix.IFA_ADDRESS:
			addr = v
		}
	}
	if local != nil {
		addr = local
	}
	a, ok := netip.AddrFromSlice(addr)
	if !ok || (family == unix.AF_INET) != (len(addr) == 4) || (family != unix.AF_INET && family != unix.AF_INET6) {
		return Addr{}
	}
	p, err := a.Prefix(plen)
	if err != nil {
		return Addr{}
	}
	dev := w.name(idx)
	if dev == "" {
		return Addr{}
	}
	return Addr{Dev: dev, Prefix: netip.PrefixFrom(a, p.Bits())}
}

func (w *Watcher) name(idx int32) string {
	if n, ok := w.names[idx]; ok {
		return n
	}
	if i, err := net.InterfaceByIndex(int(idx)); err == nil {
		w.names[idx] = i.Name
		return i.Name
	}
	return ""
}

// attrs iterates over the rtattrs in b, stopping at a malformed one.
func attrs(b []byte) func(yield func(uint16, []byte) bool) {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= 4 {
			l := int(binary.NativeEndian.Uint16(b[0:2]))
			t := binary.NativeEndian.Uint16(b[2:4]) &^ unix.NLA_F_NESTED
			if l < 4 || l > len(b) {
				return
			}
			if !yield(t, b[4:l]) {
				return
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}
