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
	// a place of its own and is never ours.
	Route Route
	// Replaced: Route replaced a route in place (`ip route replace`),
	// which the kernel announces without deleting the old one.
	Replaced bool
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
	buf   []byte
	names map[int32]string
	msgs  int // messages received, for tests of the socket filter
}

// Watch opens the subscription. Route replacements sent from the netlink
// socket of port ownPort (Netlink.PortID: a restore replaces every route
// the daemon owns, a million for a sparse table) are not delivered; 0:
// all are.
func Watch(ownPort uint32) (*Watcher, error) {
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
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, watchFilter(ownPort)); err != nil {
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
	w := &Watcher{f: os.NewFile(uintptr(fd), "netlink-watch"), buf: make([]byte, 1<<16), names: map[int32]string{}}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			w.names[int32(i.Index)] = i.Name
		}
	}
	return w, nil
}

// watchFilter is a classic BPF program that accepts rtnetlink messages of
// type RTM_NEWLINK, RTM_DELLINK, RTM_DELROUTE, RTM_NEWADDR, RTM_DELADDR
// and RTM_DELRULE, and RTM_NEWROUTE with NLM_F_REPLACE not sent from
// ownPort (unless 0), and drops the rest (each notification is an skb of
// its own). A plain RTM_NEWROUTE cannot change a route of ours (the
// kernel refuses one with the same table, destination and metric), and
// every one the daemon installs would overflow the socket. A
// notification's nlmsg_pid is the port of the socket whose request
// caused it. BPF loads read network byte order; the netlink header is in
// host order.
func watchFilter(ownPort uint32) *unix.SockFprog {
	be := func(t uint16) uint32 {
		return uint32(binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, t)))
	}
	jeq := func(k uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k}
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 4}, // nlmsg_type
		jeq(be(unix.RTM_NEWLINK)), jeq(be(unix.RTM_DELLINK)), jeq(be(unix.RTM_DELROUTE)),
		jeq(be(unix.RTM_NEWADDR)), jeq(be(unix.RTM_DELADDR)), jeq(be(unix.RTM_DELRULE)),
	}
	accepts := len(prog)                            // prog[1:accepts] jump to accept when equal
	prog = append(prog, jeq(be(unix.RTM_NEWROUTE)), // falls through when equal
		unix.SockFilter{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 6}, // nlmsg_flags
		unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: be(unix.NLM_F_REPLACE)})
	drops := []int{len(prog) - 3, len(prog) - 1} // jump to drop when not
	if ownPort != 0 {
		prog = append(prog, unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 12}, // nlmsg_pid
			jeq(binary.BigEndian.Uint32(binary.NativeEndian.AppendUint32(nil, ownPort))))
		last := len(prog) - 1
		prog[last].Jt = 1 // ours: drop
	}
	accept := len(prog)
	prog = append(prog, unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: 0})
	drop := accept + 1
	for i := 1; i < accepts; i++ {
		prog[i].Jt = uint8(accept - i - 1)
	}
	for _, i := range drops {
		prog[i].Jf = uint8(drop - i - 1)
	}
	return &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
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
			if len(body) < unix.SizeofRtMsg {
				continue
			}
			replaced := typ == unix.RTM_NEWROUTE
			if replaced && binary.NativeEndian.Uint16(b0[6:8])&unix.NLM_F_REPLACE == 0 {
				continue // added beside what is there (the filter passes none)
			}
			family, dstLen, table, rtype := body[0], int(body[1]), uint32(body[4]), body[7]
			var r Route
			var dst []byte
			var metric uint32
			for t, v := range attrs(body[unix.SizeofRtMsg:]) {
				switch t {
				case unix.RTA_DST:
					dst = v
				case unix.RTA_PRIORITY:
					if len(v) >= 4 {
						metric = binary.NativeEndian.Uint32(v)
					}
				case unix.RTA_TABLE:
					if len(v) >= 4 {
						table = binary.NativeEndian.Uint32(v)
					}
				case unix.RTA_OIF:
					if len(v) >= 4 {
						idx := int32(binary.NativeEndian.Uint32(v))
						r.Dev = w.name(idx)
					}
				case unix.RTA_GATEWAY:
					r.Via, _ = netip.AddrFromSlice(v)
				case unix.RTA_VIA:
					if len(v) > 2 {
						r.Via, _ = netip.AddrFromSlice(v[2:])
					}
				}
			}
			if metric != installedMetric(family) {
				// Another place than any of ours (the kernel keys a
				// route on table, destination and metric): someone
				// else's route, deleted or replaced, is not ours.
				continue
			}
			var a netip.Addr
			switch {
			case family == unix.AF_INET && (dst == nil || len(dst) == 4):
				a = netip.IPv4Unspecified()
			case family == unix.AF_INET6 && (dst == nil || len(dst) == 16):
				a = netip.IPv6Unspecified()
			default:
				continue
			}
			if dst != nil {
				a, _ = netip.AddrFromSlice(dst)
			}
			p, err := a.Prefix(dstLen)
			if err != nil || p.Addr() != a {
				continue
			}
			r.Dst = p
			if table != unix.RT_TABLE_MAIN {
				r.Table = int(table)
			}
			switch {
			case rtype == unix.RTN_BLACKHOLE:
				r = Route{Dst: r.Dst, Table: r.Table, Blackhole: true}
			case rtype != unix.RTN_UNICAST:
				// unreachable, prohibit, throw...: nothing of
				// ours, which is unicast or a blackhole.
				r = Route{Dst: r.Dst, Table: r.Table}
			}
			cs = append(cs, Change{Route: r, Replaced: replaced})
		}
	}
	return cs
}

// installedMetric is the metric (RTA_PRIORITY) the kernel reports for
// the routes Netlink installs, which set none: 0 for IPv4 (fib_dump_info
// leaves the attribute out), IP6_RT_PRIO_USER (1024) for IPv6
// (ip6_route_info_create puts a route without a metric there).
func installedMetric(family uint8) uint32 {
	if family == unix.AF_INET6 {
		return 1024
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
