package daemon

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/stack/tun"
)

// openTunFD opens a tun or tap named name with flags (IFF_TUN or IFF_TAP
// and more) in ns, with a virtio_net_hdr of vnet bytes if vnet > 0, as a
// VM manager or supervisor would before handing it over.
func openTunFD(t *testing.T, ns *netnstest.NS, name string, flags uint16, vnet int) int {
	t.Helper()
	fd := -1
	err := ns.Do(func() error {
		var err error
		if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		if vnet > 0 {
			flags |= unix.IFF_VNET_HDR
		}
		ifr.SetUint16(flags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("TUNSETIFF: %w", err)
		}
		if vnet > 0 {
			return unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet)
		}
		return nil
	})
	if fd >= 0 {
		t.Cleanup(func() { unix.Close(fd) })
	}
	if err != nil {
		t.Fatalf("tun %s: %v", name, err)
	}
	return fd
}

// TestOpenLinkFDFraming: the daemon asks an inherited tun or tap how it
// frames packets, serves a virtio_net_hdr of 10 or 12 bytes with the
// offloads set on the device, takes a socket's framing from vnet_hdr, and
// refuses at start-up, naming the fd block's file:line:col, a descriptor
// the configuration contradicts or whose framing it cannot read.
func TestOpenLinkFDFraming(t *testing.T) {
	netnstest.RequireTun(t, "fdl-")
	ns := netnstest.New(t, "fdl-")
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pair[0]); unix.Close(pair[1]) })
	const pos = "run.hcl:4:3"
	tunFlags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	tapFlags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	for _, tc := range []struct {
		name     string
		fd       func() int
		vnet     config.VnetHdr
		ethernet bool
		want     int    // the virtio_net_hdr size served
		offloads bool   // TSO set on the device
		err      string // or the error, which names pos too
	}{
		{name: "socket", fd: func() int { return pair[0] }},
		{name: "socket vnet_hdr", fd: func() int { return pair[0] }, vnet: config.VnetOn, want: tun.VnetHdrLen},
		{name: "plain tun", fd: func() int { return openTunFD(t, ns, "fdl-plain", tunFlags, 0) }},
		{name: "tun vnet 10", fd: func() int { return openTunFD(t, ns, "fdl-v10", tunFlags, 10) }, want: 10, offloads: true},
		{name: "tun vnet 12 insisted", fd: func() int { return openTunFD(t, ns, "fdl-v12", tunFlags, 12) }, vnet: config.VnetOn, want: 12, offloads: true},
		{name: "tap vnet 12", fd: func() int { return openTunFD(t, ns, "fdl-tap", tapFlags, 12) }, ethernet: true, want: 12, offloads: true},
		{name: "tun vnet 16", fd: func() int { return openTunFD(t, ns, "fdl-v16", tunFlags, 16) }, err: "virtio_net_hdr of 16 bytes"},
		{name: "vnet_hdr on a plain tun", fd: func() int { return openTunFD(t, ns, "fdl-p2", tunFlags, 0) }, vnet: config.VnetOn, err: "opened without IFF_VNET_HDR"},
		{name: "vnet_hdr off on a vnet tun", fd: func() int { return openTunFD(t, ns, "fdl-v3", tunFlags, 10) }, vnet: config.VnetOff, err: "opened with IFF_VNET_HDR"},
		{name: "tap without ethernet", fd: func() int { return openTunFD(t, ns, "fdl-tap2", tapFlags, 10) }, err: "set ethernet = true"},
		{name: "tun with ethernet", fd: func() int { return openTunFD(t, ns, "fdl-tun2", tunFlags, 10) }, ethernet: true, err: "remove ethernet = true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd := tc.fd()
			tr := config.Translator{Link: config.LinkFD, LinkPos: pos, FD: config.FD{FD: fd, MTU: 1500, Queues: 1, VnetHdr: tc.vnet, Ethernet: tc.ethernet}}
			dev, err := openLink(tr)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), pos+": ") || !strings.Contains(err.Error(), fmt.Sprintf("fd %d", fd)) {
					t.Fatalf("got error %v, want one at %s with %q", err, pos, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := dev.(*fdLink)
			if l.vnetHdr != tc.want || (l.tap != nil && l.tap.VnetHdr != tc.want) {
				t.Errorf("virtio_net_hdr %d, want %d", l.vnetHdr, tc.want)
			}
			if got := l.offloads&tun.OffloadTSO4 != 0; got != tc.offloads || (tc.offloads && !strings.Contains(dev.Offloads(), "tso4")) {
				t.Errorf("offloads %q", dev.Offloads())
			}
		})
	}
}
