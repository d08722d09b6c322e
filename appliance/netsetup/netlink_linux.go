package netsetup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the Kernel of the network namespace that was current for the
// calling thread when Open ran: links and addresses through
// github.com/vishvananda/netlink, routes (in batches) and policy rules
// through rtnetlink requests of its own, sysctls through /proc/sys.
type Netlink struct {
	h *netlink.Handle

	mu    sync.Mutex // serialises route batches and rule requests on fd
	fd    int
	seq   uint32
	rbuf  []byte
	sysfs string // "/proc/sys", replaced in tests
}

var _ Kernel = (*Netlink)(nil)

// PortID is the netlink port of the socket the routes go through: the
// nlmsg_pid of the notifications they cause (Watch leaves out its
// replacements). 0 if it cannot be read.
func (n *Netlink) PortID() uint32 {
	sa, err := unix.Getsockname(n.fd)
	if nl, ok := sa.(*unix.SockaddrNetlink); err == nil && ok {
		return nl.Pid
	}
	return 0
}

// Open opens netlink sockets in the calling thread's network namespace.
func Open() (*Netlink, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	// Acks without the echoed request, and room for a whole batch of them.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	// Dumps filtered by the kernel (ScanRoutes: one table).
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1)
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		h.Close()
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	return &Netlink{h: h, fd: fd, rbuf: make([]byte, 1<<16), sysfs: "/proc/sys"}, nil
}

// Close releases the sockets.
func (n *Netlink) Close() error {
	n.h.Close()
	return unix.Close(n.fd)
}

// Link implements Kernel.
func (n *Netlink) Link(name string) (int, bool, error) {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return 0, false, fmt.Errorf("link %s: %w", name, err)
	}
	a := l.Attrs()
	return a.MTU, a.Flags&net.FlagUp != 0, nil
}

// SetLink implements Kernel.
func (n *Netlink) SetLink(name string, mtu int, up bool) error {
	l, err := n.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	if mtu > 0 && mtu != l.Attrs().MTU {
		if err := n.h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("link %s: mtu %d: %w", name, mtu, err)
		}
	}
	if up {
		err = n.h.LinkSetUp(l)
	} else {
		err = n.h.LinkSetDown(l)
	}
	if err != nil {
		return fmt.Errorf("link %s: set state: %w", name, err)
	}
	return nil
}

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// ReplaceAddr implements Kernel.
func (n *Netlink) ReplaceAddr(dev string, p netip.Prefix) error {
	l, err := n.h.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("link %s: %w", dev, err)
	}
	return n.h.AddrReplace(l, nlAddr(p))
}

// DelAddr implements Kernel.
func (n *Netlink) DelAddr(dev string, p netip.Prefix) error {
	l, err := n.h.LinkByName(dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("link %s: %w", dev, err)
	}
	if err := n.h.AddrDel(l, nlAddr(p)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// HostAddrs implements Kernel.
func (n *Netlink) HostAddrs() ([]netip.Prefix, error) {
	as, err := n.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	ps := make([]netip.Prefix, 0, len(as))
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || a.IPNet == nil {
			continue
		}
		bits, _ := a.Mask.Size()
		ps = append(ps, netip.PrefixFrom(ip.Unmap(), bits))
	}
	return ps, nil
}

// Sysctl implements Kernel. key is the path below /proc/sys with dots
// ("net.ipv6.conf.all.forwarding") or slashes, which keep the dots of an
// interface's name ("net/ipv4/conf/eth0.100/forwarding", sysctl(8)).
func (n *Netlink) Sysctl(key, value string) (string, error) {
	path := key
	if !strings.Contains(key, "/") {
		path = strings.ReplaceAll(key, ".", "/")
	}
	p := filepath.Join(n.sysfs, path)
	old, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	o := strings.TrimSpace(string(old))
	if o == value {
		return o, nil
	}
	if err := os.WriteFile(p, []byte(value), 0); err != nil {
		return o, fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return o, nil
}

// ReplaceRoutes implements Kernel: RTM_NEWROUTE with NLM_F_CREATE|
// NLM_F_REPLACE, many requests per sendmsg.
func (n *Netlink) ReplaceRoutes(rs []Route) error {
	_, err := n.routeBatch(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, rs)
	return err
}

// AddRoutes implements Kernel: RTM_NEWROUTE with NLM_F_CREATE|NLM_F_EXCL.
// The kernel answers EEXIST when the table has a route with the same
// destination, TOS and metric (fib_table_insert; fib6_add_rt2node for
// IPv6), whatever its device or gateway: that route is someone else's.
func (n *Netlink) AddRoutes(rs []Route) ([]Route, error) {
	return n.routeBatch(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, rs)
}

// AddRule implements Kernel: RTM_NEWRULE with protocol RuleProtocol,
// unless the kernel has r of that protocol already (left by a map646 that
// crashed). A rule identical to r of another protocol (one older than
// the protocol left, an operator's) is taken over by replacing it: ours
// goes in beside it first, so that r never lapses, then it is deleted by
// its own protocol (takeOver). So every rule the daemon holds carries
// RuleProtocol, by which the poll finds it (OwnRules) and Teardown
// deletes it and no look-alike. The dump decides, not NLM_F_EXCL:
// rule_exists leaves out of its comparison the source and destination
// prefixes and the TOS the request does not set (fib4_rule_compare,
// fib6_rule_compare), so that "6460: from 192.0.2.0/24 lookup 646" would
// pass for "6460: lookup 646".
func (n *Netlink) AddRule(r Rule) error {
	have, err := n.dumpRules()
	if err != nil {
		return fmt.Errorf("rule %v: %w", r, err)
	}
	r = r.canonical()
	if slices.ContainsFunc(have, func(f fibRule) bool { return f.protocol == RuleProtocol && f.is(r) }) {
		return nil
	}
	if err := n.ruleRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE, r, RuleProtocol); err != nil {
		return fmt.Errorf("rule %v: %w", r, err)
	}
	return n.takeOver(have, r)
}

// takeOver deletes, now that ours is in, each rule of have (a dump, in
// the kernel's order) identical to r and of another protocol, by a
// request that names r and that protocol. The kernel deletes the first
// rule the request matches (rule_find: each field the request sets and
// no other; the protocol only if not 0). Where that first match is not
// identical to r (a look-alike with another selector before it: "6460:
// from 192.0.2.0/24 lookup 646"), the identical rule is left where it
// is, neither ours nor ever deleted: deleting it would delete the
// look-alike.
func (n *Netlink) takeOver(have []fibRule, r Rule) error {
	for i := 0; i < len(have); i++ {
		f := have[i]
		if f.protocol == RuleProtocol || !f.is(r) {
			continue
		}
		j := firstDeleted(have, r, f.protocol)
		if j < 0 || !have[j].is(r) {
			continue
		}
		if err := n.ruleRequest(unix.RTM_DELRULE, 0, r, f.protocol); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("rule %v: taking over the one of protocol %d: %w", r, f.protocol, err)
		}
		// Gone: f, or one identical to it that came first.
		have = slices.Delete(have, j, j+1)
		i = -1 // what the next request matches first has changed
	}
	return nil
}

// firstDeleted returns the index in rules (a dump, in the kernel's order)
// of the rule an RTM_DELRULE naming r and protocol proto deletes, or -1:
// the first of r's family, priority and action, with its table unless
// the request names none (unreachable), its input interface unless r has
// none, and its protocol unless proto is 0, whatever else it selects
// (rule_find, fib4_rule_compare, fib6_rule_compare).
func firstDeleted(rules []fibRule, r Rule, proto uint8) int {
	want := r.fibRule()
	return slices.IndexFunc(rules, func(f fibRule) bool {
		return f.family == want.family && f.priority == want.priority && f.action == want.action &&
			(want.table == 0 || f.table == want.table) && (want.iif == "" || f.iif == want.iif) &&
			(proto == 0 || f.protocol == proto)
	})
}

// DelRule implements Kernel: the rule of protocol RuleProtocol, every
// one the daemon holds (AddRule), never a look-alike of someone else's.
func (n *Netlink) DelRule(r Rule) error {
	if err := n.ruleRequest(unix.RTM_DELRULE, 0, r, RuleProtocol); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rule %v: %w", r, err)
	}
	return nil
}

// ruleRequest sends one rule request and waits for the kernel's answer.
func (n *Netlink) ruleRequest(typ, flags uint16, r Rule, proto uint8) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	if err := unix.Sendto(n.fd, appendRuleMsg(nil, typ, flags, n.seq, r, proto), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	return n.receive(n.seq, nil)
}

// OwnRules implements Kernel: the rules of protocol RuleProtocol that a
// Rule describes exactly, from one dump (dumpRules).
func (n *Netlink) OwnRules() ([]Rule, error) {
	fs, err := n.dumpRules()
	if err != nil {
		return nil, err
	}
	var rs []Rule
	for _, f := range fs {
		if r, ok := f.rule(); ok && f.protocol == RuleProtocol {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// dumpRules is one RTM_GETRULE dump of every family, each rule read by
// decodeRule, in the kernel's order (priority, then the order they were
// added in), which is the order a delete request is matched in.
func (n *Netlink) dumpRules() ([]fibRule, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seq++
	req := binary.NativeEndian.AppendUint32(nil, unix.NLMSG_HDRLEN+fibRuleHdrLen)
	req = binary.NativeEndian.AppendUint16(req, unix.RTM_GETRULE)
	req = binary.NativeEndian.AppendUint16(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req = binary.NativeEndian.AppendUint32(req, n.seq)
	req = binary.NativeEndian.AppendUint32(req, 0)
	req = append(req, make([]byte, fibRuleHdrLen)...) // family AF_UNSPEC: all of them
	if err := unix.Sendto(n.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("rules: netlink send: %w", err)
	}
	var fs []fibRule
	err := n.receive(n.seq, func(typ uint16, body []byte) {
		if typ == unix.RTM_NEWRULE {
			fs = append(fs, decodeRule(body))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return fs, nil
}

// receive reads the replies to request seq on n.fd until its ack or
// error (NLMSG_ERROR) or the end of a dump (NLMSG_DONE), and hands each
// other message of seq to each. Replies to other requests (the stale
// acks of a batch that failed half way) are skipped. n.mu is held.
func (n *Netlink) receive(seq uint32, each func(typ uint16, body []byte)) error {
	interrupted := false
	for {
		done, err := n.recvMsgs(func(mtype, mflags uint16, mseq uint32, body []byte) (bool, error) {
			if mseq != seq {
				return false, nil
			}
			interrupted = interrupted || mflags&unix.NLM_F_DUMP_INTR != 0
			switch mtype {
			case unix.NLMSG_ERROR, unix.NLMSG_DONE:
				var errno int32
				if len(body) >= 4 {
					errno = -int32(binary.NativeEndian.Uint32(body[0:4]))
				} else if mtype == unix.NLMSG_ERROR {
					return true, errors.New("netlink: truncated error")
				}
				if errno != 0 {
					return true, unix.Errno(errno)
				}
				if interrupted {
					// The rules changed during the dump: what it
					// returned may be neither the old set nor the new.
					return true, errors.New("netlink: dump interrupted by a change")
				}
				return true, nil
			}
			if each != nil {
				each(mtype, body)
			}
			return false, nil
		})
		if done || err != nil {
			return err
		}
	}
}

// recvMsgs reads one datagram of replies on n.fd (again after EINTR) and
// hands each netlink message in it to each, until each says it is done
// or fails; a header whose length overruns the datagram is an error.
// n.mu is held.
func (n *Netlink) recvMsgs(each func(mtype, mflags uint16, seq uint32, body []byte) (done bool, err error)) (bool, error) {
	k, _, err := unix.Recvfrom(n.fd, n.rbuf, 0)
	for err == unix.EINTR {
		k, _, err = unix.Recvfrom(n.fd, n.rbuf, 0)
	}
	if err != nil {
		return false, fmt.Errorf("netlink receive: %w", err)
	}
	msgs := n.rbuf[:k]
	for len(msgs) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(msgs[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(msgs) {
			return false, errors.New("netlink: truncated reply")
		}
		mtype := binary.NativeEndian.Uint16(msgs[4:6])
		mflags := binary.NativeEndian.Uint16(msgs[6:8])
		seq := binary.NativeEndian.Uint32(msgs[8:12])
		body := msgs[unix.NLMSG_HDRLEN:l]
		msgs = msgs[min(nlAlign(l), len(msgs)):]
		if done, err := each(mtype, mflags, seq, body); done || err != nil {
			return done, err
		}
	}
	return false, nil
}

// DelRoutes implements Kernel (RTM_DELROUTE; ESRCH/ENODEV are ignored, the
// route is already gone, e.g. with its device).
func (n *Netlink) DelRoutes(rs []Route) error {
	_, err := n.routeBatch(unix.RTM_DELROUTE, 0, rs)
	return err
}

// DelRoutesAhead implements Kernel: one RTM_DELROUTE per route (a few),
// with its type, protocol, metric (RTA_PRIORITY when not 0) and device or
// gateway, which the kernel matches (fib_table_delete,
// ip6_route_del); ESRCH, ENOENT and ENODEV (gone already) are not errors.
func (n *Netlink) DelRoutesAhead(as []AheadRoute) error {
	var errs []error
	for _, a := range as {
		oif := 0
		if a.Dev != "" {
			ifi, err := net.InterfaceByName(a.Dev)
			if err != nil {
				continue // the device, and the route through it, are gone
			}
			oif = ifi.Index
		}
		n.mu.Lock()
		n.seq++
		b := appendRouteMsg(nil, unix.RTM_DELROUTE, 0, n.seq, a.Route, oif)
		// rtm_protocol and rtm_type, which a delete of ours leaves 0
		// (any), and the metric.
		b[unix.NLMSG_HDRLEN+5], b[unix.NLMSG_HDRLEN+7] = a.Protocol, a.Type
		if a.Metric != 0 {
			b = appendAttr(b, unix.RTA_PRIORITY, binary.NativeEndian.AppendUint32(nil, a.Metric))
			binary.NativeEndian.PutUint32(b, uint32(len(b)))
		}
		err := unix.Sendto(n.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == nil {
			err = n.receive(n.seq, nil)
		}
		n.mu.Unlock()
		if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("route delete %v: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// ScanRoutes implements Kernel: one RTM_GETROUTE dump of both families,
// each route of table (0: main) handed to each as decodeRoute reads it,
// in the kernel's order. The socket asks for strict checking
// (NETLINK_GET_STRICT_CHK), so the kernel dumps that table alone; an
// older kernel dumps them all, and the others are skipped here.
func (n *Netlink) ScanRoutes(table int, each func(AheadRoute)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	tb := uint32(unix.RT_TABLE_MAIN)
	if table != 0 {
		tb = uint32(table)
	}
	n.seq++
	req := binary.NativeEndian.AppendUint32(nil, 0)
	req = binary.NativeEndian.AppendUint16(req, unix.RTM_GETROUTE)
	req = binary.NativeEndian.AppendUint16(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req = binary.NativeEndian.AppendUint32(req, n.seq)
	req = binary.NativeEndian.AppendUint32(req, 0)
	req = append(req, make([]byte, unix.SizeofRtMsg)...) // family AF_UNSPEC: both
	req = appendAttr(req, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, tb))
	binary.NativeEndian.PutUint32(req, uint32(len(req)))
	if err := unix.Sendto(n.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("routes of table %d: netlink send: %w", tb, err)
	}
	names := map[int32]string{}
	name := func(idx int32) string {
		if nm, ok := names[idx]; ok {
			return nm
		}
		nm := ""
		if i, err := net.InterfaceByIndex(int(idx)); err == nil {
			nm = i.Name
		}
		names[idx] = nm
		return nm
	}
	err := n.receive(n.seq, func(typ uint16, body []byte) {
		if typ != unix.RTM_NEWROUTE {
			return
		}
		if k, ok := decodeRoute(body, name); ok && k.Table == table {
			each(k)
		}
	})
	if err != nil {
		return fmt.Errorf("routes of table %d: %w", tb, err)
	}
	return nil
}

// batchBytes bounds one sendmsg of route requests; the acks for one batch
// must fit the receive buffer, which is why it is not larger.
const batchBytes = 64 << 10

// routeBatch sends rs as requests of type typ, and returns the routes the
// kernel answered EEXIST for when flags has NLM_F_EXCL.
func (n *Netlink) routeBatch(typ uint16, flags uint16, rs []Route) (existed []Route, _ error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ifindex := map[string]int{}
	buf := make([]byte, 0, batchBytes+256)
	var pending []Route // pending[i] has sequence number base+i
	var errs []error
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		base := n.seq - uint32(len(pending)) + 1
		if err := unix.Sendto(n.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("netlink send: %w", err)
		}
		for left := len(pending); left > 0; {
			_, err := n.recvMsgs(func(mtype, _ uint16, seq uint32, body []byte) (bool, error) {
				if mtype != unix.NLMSG_ERROR || len(body) < 4 {
					return false, nil
				}
				i := int(seq - base)
				if i < 0 || i >= len(pending) {
					return false, nil // a stale reply from an earlier, failed batch
				}
				left--
				errno := -int32(binary.NativeEndian.Uint32(body[0:4]))
				if errno == 0 {
					return false, nil
				}
				e := unix.Errno(errno)
				if typ == unix.RTM_DELROUTE && (e == unix.ESRCH || e == unix.ENODEV || e == unix.ENOENT) {
					return false, nil
				}
				if flags&unix.NLM_F_EXCL != 0 && e == unix.EEXIST {
					existed = append(existed, pending[i])
					return false, nil
				}
				op := "add"
				if typ == unix.RTM_DELROUTE {
					op = "delete"
				}
				errs = append(errs, fmt.Errorf("route %s %v: %w", op, pending[i], e))
				return false, nil
			})
			if err != nil {
				return err
			}
		}
		buf = buf[:0]
		pending = pending[:0]
		return nil
	}
	for _, r := range rs {
		oif := 0
		if r.Dev != "" {
			idx, ok := ifindex[r.Dev]
			if !ok {
				// Looked up once per device, hits and misses alike: a
				// million routes must not mean a million link dumps.
				if ifi, err := net.InterfaceByName(r.Dev); err == nil {
					idx = ifi.Index
				}
				ifindex[r.Dev] = idx
			}
			if idx == 0 {
				if typ == unix.RTM_DELROUTE {
					continue // the device, and its routes, are gone
				}
				errs = append(errs, fmt.Errorf("route %v: no interface %q", r, r.Dev))
				continue
			}
			oif = idx
		}
		n.seq++
		buf = appendRouteMsg(buf, typ, flags, n.seq, r, oif)
		pending = append(pending, r)
		if len(buf) >= batchBytes {
			if err := flush(); err != nil {
				return existed, err
			}
		}
	}
	if err := flush(); err != nil {
		return existed, err
	}
	return existed, errors.Join(errs...)
}

func nlAlign(n int) int { return (n + 3) &^ 3 }

func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := 4 + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for range nlAlign(l) - l {
		b = append(b, 0)
	}
	return b
}

// appendRequestHeader appends the nlmsghdr of a request that asks for an
// ack, its length left 0 for the caller to set once the message is whole;
// the port id is 0, the kernel's.
func appendRequestHeader(b []byte, typ, flags uint16, seq uint32) []byte {
	b = binary.NativeEndian.AppendUint32(b, 0)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, unix.NLM_F_REQUEST|unix.NLM_F_ACK|flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	return binary.NativeEndian.AppendUint32(b, 0)
}

// appendRouteMsg appends one rtnetlink route request (nlmsghdr, struct
// rtmsg, attributes; include/uapi/linux/rtnetlink.h).
func appendRouteMsg(b []byte, typ, flags uint16, seq uint32, r Route, oif int) []byte {
	start := len(b)
	b = appendRequestHeader(b, typ, flags, seq)
	family := byte(unix.AF_INET6)
	if r.Dst.Addr().Is4() {
		family = unix.AF_INET
	}
	scope, rtype, proto := byte(unix.RT_SCOPE_LINK), byte(unix.RTN_UNICAST), byte(RouteProtocol)
	if r.Via.IsValid() {
		scope = unix.RT_SCOPE_UNIVERSE
	}
	if r.Blackhole {
		scope, rtype = unix.RT_SCOPE_UNIVERSE, unix.RTN_BLACKHOLE
	}
	if typ == unix.RTM_DELROUTE {
		scope, rtype, proto = unix.RT_SCOPE_NOWHERE, 0, 0
	}
	table := uint32(unix.RT_TABLE_MAIN)
	if r.Table != 0 {
		table = uint32(r.Table)
	}
	rtmTable := byte(unix.RT_TABLE_UNSPEC) // the table is in RTA_TABLE
	if table < 256 {
		rtmTable = byte(table)
	}
	b = append(b, family, byte(r.Dst.Bits()), 0, 0, rtmTable, proto, scope, rtype)
	b = binary.NativeEndian.AppendUint32(b, 0) // rtm_flags
	b = appendAttr(b, unix.RTA_TABLE, binary.NativeEndian.AppendUint32(nil, table))
	b = appendAttr(b, unix.RTA_DST, r.Dst.Masked().Addr().AsSlice())
	if oif > 0 {
		b = appendAttr(b, unix.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(oif)))
	}
	if r.Via.IsValid() {
		if r.Via.Is4() == r.Dst.Addr().Is4() {
			b = appendAttr(b, unix.RTA_GATEWAY, r.Via.AsSlice())
		} else { // struct rtvia: family then address (RFC 8950 next hop)
			v := binary.NativeEndian.AppendUint16(nil, unix.AF_INET6)
			if r.Via.Is4() {
				v = binary.NativeEndian.AppendUint16(nil, unix.AF_INET)
			}
			b = appendAttr(b, unix.RTA_VIA, append(v, r.Via.AsSlice()...))
		}
	}
	binary.NativeEndian.PutUint32(b[start:], uint32(len(b)-start))
	return b
}
