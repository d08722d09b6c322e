package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// ServeFDQueues runs the translator over descriptors that each carry one
// bare IP packet per read and write: typically the queues of one tun
// opened with IFF_MULTI_QUEUE (the kernel spreads flows over them, so a
// flood on one does not fill the queue of another flow, pings included),
// or one descriptor. Each has one goroutine that reads a packet into a
// frame with headroom; the Handler translates it there, on that
// descriptor's own queue (translator, counters), and the result is
// written back to the same descriptor: no copy besides the read and the
// write, no allocation per packet, and the engine's counters published
// whenever a descriptor has nothing to read. Descriptors of a tun run
// host mode's queue loop (serveTunFDs: raw I/O on a thread of their own,
// a wait that keeps the P, io_uring batches); sockets the endpoint of
// fd_tap.go without Ethernet (one writev per packet, poll when empty).
// ServeFDQueues makes the descriptors non-blocking but does not own them:
// close them after Wait returns. It returns at once; the data path stops
// when ctx is cancelled or any descriptor fails.
//
// vnetHdr is the size of the virtio_net_hdr (virtio 1.0 section 5.1.6)
// in front of every packet, 10 or 12 for a tun opened with IFF_VNET_HDR
// (see FDInfo), or 0 for none. With one, GSO and GRO super-packets and
// partial checksums cross the translator whole, as they do through the
// daemon's own tun, and the kernel behind the descriptor segments and
// completes them on the way out (RFC 7915 section 5.1.1 leaves segment
// sizes to the path).
func ServeFDQueues(ctx context.Context, eng *xlat.Engine, fds []int, mtu, vnetHdr int, log *slog.Logger) (*Datapath, error) {
	if eng == nil {
		return nil, errors.New("stack: ServeFDQueues needs an engine")
	}
	return serveFDs(ctx, func() Translator { return eng.NewWorker() }, fds, mtu, vnetHdr, log)
}

func serveFDs(ctx context.Context, newTranslator func() Translator, fds []int, mtu, vnetHdr int, log *slog.Logger) (*Datapath, error) {
	if len(fds) == 0 {
		return nil, errors.New("stack: no descriptor to serve")
	}
	if mtu <= 0 || mtu > maxPacket {
		return nil, fmt.Errorf("stack: fd %d: MTU %d out of range", fds[0], mtu)
	}
	if err := CheckVnetHdr(vnetHdr); err != nil {
		return nil, fmt.Errorf("stack: fd %d: %w", fds[0], err)
	}
	tuns := true
	infos := make([]FDInfo, len(fds))
	for i, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
		}
		info, err := ProbeFD(fd)
		if err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		tuns = tuns && info.Tun && !info.Tap
		if err := distinctQueue(fds[:i], fd, info, len(fds)); err != nil {
			return nil, fmt.Errorf("stack: %w", err)
		}
		infos[i] = info
	}
	warn := slog.New(slog.DiscardHandler).Warn
	if log != nil {
		warn = log.Warn
	}
	qc, err := checkAllQueues(fds, infos, warn)
	if err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if tuns {
		d, err := serveTunFDs(ctx, newTranslator, fds, mtu, vnetHdr, log)
		if err != nil {
			qc.close()
			return nil, err
		}
		d.watchQueues(qc)
		return d, nil
	}
	d := newDatapath(log)
	d.watchQueues(qc)
	var eps fdQueues
	for _, fd := range fds {
		eps = append(eps, newRawFDEndpoint(fd, mtu, vnetHdr, d.log))
	}
	serveFDEndpoints(ctx, d, eps, newTranslator)
	return d, nil
}

// serveTunFDs serves descriptors that are queues of one tun (TUNGETIFF
// answered, no IFF_TAP) as host mode serves its own tun's: through a
// tun.Endpoint, whose queue loops read and write by raw system calls on
// their own threads, wait for an empty queue in a raw ppoll that keeps
// the P, and batch through an io_uring while the queue is busy
// (stack/tun/rawio_linux.go, uringio_linux.go). The endpoint reads
// duplicates of the descriptors (F_DUPFD_CLOEXEC: the same open file, so
// the same tun queue), which it closes once its loops have ended: the
// caller's stay the caller's, and closing them does not pull a
// descriptor from under a loop or its io_uring.
func serveTunFDs(ctx context.Context, newTranslator func() Translator, fds []int, mtu, vnetHdr int, log *slog.Logger) (*Datapath, error) {
	files := make([]*os.File, 0, len(fds))
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	for _, fd := range fds {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("stack: fd %d: dup: %w", fd, err)
		}
		// As tun.Open does: blocking while os.NewFile looks, so that
		// the runtime poller does not watch it (its epoll would wake an
		// idle thread of the runtime at every packet that finds the queue
		// empty, for nobody), then non-blocking again for the raw reads.
		// O_NONBLOCK belongs to the open file, the caller's descriptor
		// shares it for this moment.
		if err := unix.SetNonblock(dup, false); err != nil {
			unix.Close(dup)
			closeAll()
			return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
		}
		f := os.NewFile(uintptr(dup), fmt.Sprintf("fd %d", fd))
		files = append(files, f)
		if err := unix.SetNonblock(dup, true); err != nil {
			closeAll()
			return nil, fmt.Errorf("stack: fd %d: %w", fd, err)
		}
	}
	ep, err := tun.NewEndpointFiles(files, mtu, 0, vnetHdr)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("stack: fd %d: %w", fds[0], err)
	}
	d, err := serveLinkHooks(ctx, newTranslator, ep, log, linkHooks{stopped: closeAll})
	if err != nil {
		closeAll()
		return nil, err
	}
	return d, nil
}

// distinctQueue refuses fd, the next of n descriptors after before, if it
// reads a queue another of them reads: a tun or tap opened without
// IFF_MULTI_QUEUE has one queue, and a descriptor that is a duplicate of
// another (the same open file) is the same queue. Two readers of one queue
// take its packets in turn, each translating on its own, and reorder
// every flow through it.
func distinctQueue(before []int, fd int, info FDInfo, n int) error {
	if info.Tun && !info.MultiQueue && n > 1 {
		return fmt.Errorf("fd %d: tun %s was opened without IFF_MULTI_QUEUE: it has one queue, served by one descriptor, not %d", fd, info.Interface, n)
	}
	for _, other := range before {
		if sameOpenFile(other, fd) {
			return fmt.Errorf("fds %d and %d are the same queue (duplicates of one open file): hand over each queue once", other, fd)
		}
	}
	return nil
}

// kcmpFile is KCMP_FILE (include/uapi/linux/kcmp.h).
const kcmpFile = 0

// sameOpenFile reports whether the descriptors a and b of this process
// refer to the same open file (kcmp(2)); false where the kernel cannot
// tell (no kcmp: CONFIG_KCMP off, or a seccomp filter).
func sameOpenFile(a, b int) bool {
	pid := uintptr(unix.Getpid())
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(a), uintptr(b), 0)
	return errno == 0 && r == 0
}

// maxVnetHdr is the largest virtio_net_hdr an fd may carry: struct
// virtio_net_hdr_mrg_rxbuf (virtio 1.0 section 5.1.6), which QEMU and
// Firecracker set on the taps they open (TUNSETVNETHDRSZ 12). Its last
// two bytes, num_buffers, mean nothing on a tun: they are read and
// ignored, and written as zero.
const maxVnetHdr = tun.VnetHdrLen + 2

// CheckVnetHdr accepts the virtio_net_hdr sizes the endpoint can frame:
// none, struct virtio_net_hdr (10) and virtio_net_hdr_mrg_rxbuf (12).
// Any other size (TUNSETVNETHDRSZ accepts larger ones) would shift every
// packet, so it is refused rather than guessed at.
func CheckVnetHdr(n int) error {
	if n != 0 && n != tun.VnetHdrLen && n != maxVnetHdr {
		return fmt.Errorf("virtio_net_hdr of %d bytes: only %d and %d are supported", n, tun.VnetHdrLen, maxVnetHdr)
	}
	return nil
}

// FDInfo is what an inherited descriptor says about its framing.
type FDInfo struct {
	// Tun: the descriptor is a tun or tap attached to an interface
	// (TUNGETIFF answered); false for sockets and anything else, whose
	// framing only the configuration can tell.
	Tun bool
	// Interface is the tun's or tap's name.
	Interface string
	Tap       bool // IFF_TAP: Ethernet frames
	// MultiQueue: opened with IFF_MULTI_QUEUE, so the tun or tap may have
	// several queues, each its own descriptor; without it, one.
	MultiQueue bool
	// VnetHdr is the size of the virtio_net_hdr in front of every packet
	// (TUNGETVNETHDRSZ) if the tun was opened with IFF_VNET_HDR, else 0.
	VnetHdr int
}

// ProbeFD asks the descriptor fd what it carries: TUNGETIFF gives a tun's
// IFF_ flags, TUNGETVNETHDRSZ the size of its virtio_net_hdr. A
// descriptor that is not a tun (ENOTTY, EINVAL: a socket, a pipe) is
// reported as such, without error; a tun not attached to an interface
// (EBADFD) is an error.
func ProbeFD(fd int) (FDInfo, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return FDInfo{}, err
	}
	switch err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); {
	case errors.Is(err, unix.EBADFD):
		return FDInfo{}, fmt.Errorf("fd %d: a tun descriptor attached to no interface (TUNSETIFF was not done)", fd)
	case err != nil:
		return FDInfo{}, nil
	}
	flags := ifr.Uint16()
	// IFF_NO_PI is not asked: TUNGETIFF reports it set on a tun opened
	// without it too (seen on Linux 6.18), so a struct tun_pi in front
	// of the packets cannot be told from here.
	info := FDInfo{
		Tun:        true,
		Interface:  ifr.Name(),
		Tap:        flags&unix.IFF_TAP != 0,
		MultiQueue: flags&unix.IFF_MULTI_QUEUE != 0,
	}
	if flags&unix.IFF_VNET_HDR != 0 {
		n, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ)
		if err != nil {
			return FDInfo{}, fmt.Errorf("fd %d: TUNGETVNETHDRSZ: %w", fd, err)
		}
		info.VnetHdr = n
	}
	return info, nil
}

// fdOffloadSteps are the TUNSETOFFLOAD flags SetFDOffloads asks for, best
// first: the kernel answers EINVAL to flags it does not know (USO before
// Linux 6.2). They are what the engine translates whole: TCP and UDP
// segmentation (RFC 7915 section 5.1.1 leaves segment sizes to the path)
// and partial checksums.
var fdOffloadSteps = []int{
	tun.OffloadCsum | tun.OffloadTSO4 | tun.OffloadTSO6 | tun.OffloadUSO4 | tun.OffloadUSO6,
	tun.OffloadCsum | tun.OffloadTSO4 | tun.OffloadTSO6,
	tun.OffloadCsum,
}

// SetFDOffloads sets the offloads of the tun or tap behind fd (opened with
// IFF_VNET_HDR): what its kernel side may hand the translator unfinished
// (TUNSETOFFLOAD; the device's, shared by all its queues). It returns the
// flags the kernel granted, 0 if it granted none. The other way needs no
// setting: a tun takes every kind of super-packet and partial checksum
// that is written to it (virtio_net_hdr_to_skb), and the translator
// writes only those it was handed, translated.
func SetFDOffloads(fd int) (int, error) {
	var err error
	for _, flags := range fdOffloadSteps {
		if err = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags); err == nil {
			return flags, nil
		}
	}
	if err0 := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err0 != nil {
		return 0, fmt.Errorf("fd %d: TUNSETOFFLOAD: %w", fd, err)
	}
	return 0, nil
}
