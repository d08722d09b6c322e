package daemon

import (
	"fmt"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/tun"
)

// fdFraming decides what the inherited descriptor fd of the fd block t
// carries in front of each packet, from what the descriptor says (info,
// stack.ProbeFD) and the block's vnet_hdr and ethernet: the size of its
// virtio_net_hdr, or 0. A tun or tap is believed over the file: the
// configuration must agree with it, or the error says what to change. A
// socket has a virtio_net_hdr only if vnet_hdr = true says so (then
// struct virtio_net_hdr, 10 bytes, as AF_PACKET's PACKET_VNET_HDR).
func fdFraming(t config.FD, fd int, info stack.FDInfo) (int, error) {
	if !info.Tun {
		if t.VnetHdr == config.VnetOn {
			return tun.VnetHdrLen, nil
		}
		return 0, nil
	}
	kind := map[bool]string{false: "tun (bare IP packets)", true: "tap (Ethernet frames)"}[info.Tap]
	switch {
	case info.Tap && !t.Ethernet:
		return 0, fmt.Errorf("fd %d is a tap (Ethernet frames), %s: set ethernet = true", fd, info.Interface)
	case !info.Tap && t.Ethernet:
		return 0, fmt.Errorf("fd %d is a tun (bare IP packets), %s: remove ethernet = true", fd, info.Interface)
	case t.VnetHdr == config.VnetOn && info.VnetHdr == 0:
		return 0, fmt.Errorf("fd %d: vnet_hdr = true, but the %s %s was opened without IFF_VNET_HDR: remove vnet_hdr, or open it with IFF_VNET_HDR", fd, kind, info.Interface)
	case t.VnetHdr == config.VnetOff && info.VnetHdr != 0:
		return 0, fmt.Errorf("fd %d: vnet_hdr = false, but the %s %s was opened with IFF_VNET_HDR (a %d-byte header in front of every packet): remove vnet_hdr", fd, kind, info.Interface, info.VnetHdr)
	}
	if err := stack.CheckVnetHdr(info.VnetHdr); err != nil {
		return 0, fmt.Errorf("fd %d, %s %s: %w (TUNGETVNETHDRSZ); set 10 or 12 with TUNSETVNETHDRSZ before handing it over", fd, kind, info.Interface, err)
	}
	return info.VnetHdr, nil
}

// probeFDLink fills in l's framing from its descriptors, which must all
// agree, and for a tun or tap with a virtio_net_hdr sets its offloads
// (stack.SetFDOffloads). An error names the fd block's place in the
// configuration (pos).
func probeFDLink(l *fdLink, t config.FD, pos string) error {
	for i, fd := range l.fds() {
		info, err := stack.ProbeFD(fd)
		var vnet int
		if err == nil {
			vnet, err = fdFraming(t, fd, info)
		}
		if err == nil && i > 0 && (vnet != l.vnetHdr || info.Tun != l.tun) {
			err = fmt.Errorf("fd %d is framed unlike fd %d: the queues of one link must be the same tun's", fd, l.fd)
		}
		if err != nil {
			return fmt.Errorf("%s: translator %w", pos, err)
		}
		l.vnetHdr, l.tun = vnet, info.Tun
	}
	if l.tun && l.vnetHdr > 0 {
		flags, err := stack.SetFDOffloads(l.fd)
		if err != nil {
			return fmt.Errorf("%s: translator %w", pos, err)
		}
		l.offloads = flags
	}
	return nil
}
