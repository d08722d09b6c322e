package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Offload flags of TUNSETOFFLOAD (include/uapi/linux/if_tun.h): what the
// kernel may hand us unfinished. They are not in x/sys/unix.
const (
	OffloadCsum = 0x01 // TUN_F_CSUM: partial checksums (NEEDS_CSUM)
	OffloadTSO4 = 0x02 // TUN_F_TSO4: TCP/IPv4 super-packets
	OffloadTSO6 = 0x04 // TUN_F_TSO6: TCP/IPv6 super-packets
	OffloadUSO4 = 0x20 // TUN_F_USO4: UDP/IPv4 super-packets (Linux >= 6.2)
	OffloadUSO6 = 0x40 // TUN_F_USO6: UDP/IPv6 super-packets (Linux >= 6.2)
)

// MaxQueues is the kernel's limit on queues of one multi-queue tun
// (MAX_TAP_QUEUES).
const MaxQueues = 256

// Config describes the tun to create.
type Config struct {
	// Name is the interface name; empty lets the kernel pick one (tun%d).
	// The interface must not exist: Open never attaches to a tun that
	// another process (or a persistent device left behind) holds.
	Name string
	// Queues is the number of queues, each with its own file descriptor
	// and goroutine; 0 means one per CPU.
	Queues int
	// MTU is set on the interface; 0 keeps the kernel's default (1500).
	// For the translator it should be at least the IPv4 MTU + 20 so that
	// full-size IPv6 packets of the servers fit (RFC 7755 section 5).
	MTU int
	// Offload asks for checksum and segmentation offloads. The kernel may
	// refuse some; Device.Offloads says what was granted.
	Offload bool
	// SteerPrefix is the translator's RFC 6052 prefix. When set (and there
	// is more than one queue), a steering program puts both directions of
	// a translated flow on one queue (steer_linux.go); a kernel that
	// refuses it leaves the kernel's own choice, and Device.SteeringErr
	// says why.
	SteerPrefix netip.Prefix
}

// Device is an open multi-queue tun with virtio_net_hdr on every packet.
// Open brings the interface up; addresses and routes are the caller's.
type Device struct {
	name     string
	mtu      int
	offloads int
	queues   []*Queue
	steerErr error

	closeOnce sync.Once
	closeErr  error

	wakeMu sync.Mutex
	wakers []func() // endpoints' wake-ups, called before the queues close
}

// onClose registers wake, to be called by Close before it closes the
// queues: an Endpoint's loops wait in ppoll, which a close does not end.
func (d *Device) onClose(wake func()) {
	d.wakeMu.Lock()
	defer d.wakeMu.Unlock()
	d.wakers = append(d.wakers, wake)
}

// Queue is one queue of a Device. Read returns one packet (with its
// VnetHdrLen-byte header in front) per call; Write sends one. The
// descriptor is non-blocking and kept out of the Go runtime poller: an
// Endpoint waits for it on its own thread (rawio_linux.go), and a poller
// registration would wake the poller's thread for every packet that
// arrives at an idle queue. Read of an empty queue fails with EAGAIN.
// A Queue must be read by one goroutine at a time.
type Queue struct {
	f     *os.File
	index int
}

// Read reads one packet, prefixed by its virtio_net_hdr, into p. p should
// hold VnetHdrLen + 65535 bytes: a super-packet is truncated otherwise.
func (q *Queue) Read(p []byte) (int, error) { return q.f.Read(p) }

// Write writes one packet prefixed by its virtio_net_hdr.
func (q *Queue) Write(p []byte) (int, error) { return q.f.Write(p) }

// SetReadDeadline fails with os.ErrNoDeadline: Read never blocks. An
// Endpoint stops its loops through its wake eventfd instead.
func (q *Queue) SetReadDeadline(t time.Time) error { return q.f.SetReadDeadline(t) }

// SyscallConn gives raw access to the queue's descriptor (the data path
// reads and writes it by raw system calls).
func (q *Queue) SyscallConn() (syscall.RawConn, error) { return q.f.SyscallConn() }

// Index is the position of q among its device's queues.
func (q *Queue) Index() int { return q.index }

// Open creates (or attaches to) the multi-queue tun described by c in the
// network namespace of the calling thread, sets its virtio_net_hdr size and
// offloads, sets its MTU and brings it up.
func Open(c Config) (*Device, error) {
	n := c.Queues
	if n == 0 {
		n = runtime.NumCPU()
	}
	if n < 0 || n > MaxQueues {
		return nil, fmt.Errorf("tun: %d queues: want 0 (one per CPU) to %d", c.Queues, MaxQueues)
	}
	if len(c.Name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tun: interface name %q longer than %d bytes", c.Name, unix.IFNAMSIZ-1)
	}
	if c.MTU < 0 || c.MTU > 65535 {
		return nil, fmt.Errorf("tun: MTU %d out of range", c.MTU)
	}
	d := &Device{name: c.Name}
	busyUntil := time.Now().Add(busyWait)
	for i := 0; i < n; i++ {
		fd, name, err := openQueue(d.name, i == 0)
		for i == 0 && c.Name != "" && errors.Is(err, unix.EBUSY) && time.Now().Before(busyUntil) {
			// A tun whose owner has just died can outlive it briefly: a
			// file registered with an io_uring is let go by the ring's
			// exit work, after the process is gone. A restart right
			// after a crash waits for it rather than failing; a link
			// that is not a tun (a veth, a bridge) will not go away.
			if drv := existingDriver(c.Name); drv != "" && drv != "tun" {
				break
			}
			time.Sleep(10 * time.Millisecond)
			fd, name, err = openQueue(d.name, true)
		}
		if err != nil {
			d.Close()
			if i == 0 && c.Name != "" {
				if drv := existingDriver(c.Name); drv != "" && drv != "tun" {
					return nil, fmt.Errorf("tun: a link named %q exists and is not a tun (its driver is %s): choose another tun name, or remove that link if it is not in use: %w", c.Name, drv, err)
				}
			}
			if i == 0 && errors.Is(err, unix.EBUSY) {
				return nil, fmt.Errorf("tun: create %q: an interface of that name exists already "+
					"(another process's tun, or a persistent one left behind: remove it with 'ip link del %s'): %w", c.Name, c.Name, err)
			}
			if i == 0 {
				return nil, fmt.Errorf("tun: create %q: %w", c.Name, err)
			}
			return nil, fmt.Errorf("tun %s: queue %d: %w", d.name, i, err)
		}
		d.name = name
		if i == 0 {
			// Device-wide settings, made once through the first queue.
			if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("tun %s: TUNSETVNETHDRSZ: %w", name, err)
			}
			set := func(flags int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, flags) }
			if d.offloads, err = negotiateOffloads(set, c.Offload); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("tun %s: %w", name, err)
			}
			if c.SteerPrefix.IsValid() && n > 1 {
				d.steerErr = setSteering(fd, c.SteerPrefix)
			}
		}
		// The fd is still blocking here, so os.NewFile keeps it out of
		// the runtime poller (Queue); then it is made non-blocking, which
		// the data path's raw reads need. f.Fd must not be called: it
		// would make it blocking again.
		f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		if err := unix.SetNonblock(fd, true); err != nil {
			f.Close()
			d.Close()
			return nil, fmt.Errorf("tun %s: queue %d: O_NONBLOCK: %w", name, i, err)
		}
		d.queues = append(d.queues, &Queue{f: f, index: i})
	}
	if err := setLink(d.name, c.MTU); err != nil {
		d.Close()
		return nil, fmt.Errorf("tun %s: %w", d.name, err)
	}
	d.mtu = c.MTU
	if d.mtu == 0 {
		d.mtu = 1500
	}
	return d, nil
}

// busyWait is how long Open waits for an existing tun of its name to go
// away before it reports it: a killed translator's tun is destroyed when
// the kernel has let go of its last queue, which for a queue registered
// with an io_uring happens in the ring's exit work, tens of milliseconds
// after the process has been reaped.
var busyWait = 2 * time.Second

// openQueue opens /dev/net/tun and attaches it to interface name, returning
// the name the kernel used. The first queue (create) carries IFF_TUN_EXCL,
// with which TUNSETIFF fails with EBUSY if the interface exists already
// (drivers/net/tun.c, tun_set_iff): attaching to a live translator's tun
// would steal part of its traffic. The other queues attach to the tun the
// first one created.
func openQueue(name string, create bool) (int, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, "", err
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE)
	if create {
		flags |= unix.IFF_TUN_EXCL
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, "", fmt.Errorf("TUNSETIFF: %w", err)
	}
	return fd, ifr.Name(), nil
}

// offloadSteps is what Open asks for, best first: the kernel answers EINVAL
// to flags it does not know (USO before Linux 6.2).
var offloadSteps = []int{
	OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4 | OffloadUSO6,
	OffloadCsum | OffloadTSO4 | OffloadTSO6,
}

// negotiateOffloads asks set for the best offloads the kernel accepts, or
// for none if want is false or all are refused. Only a failure to set "no
// offloads" is an error.
func negotiateOffloads(set func(flags int) error, want bool) (int, error) {
	if want {
		for _, flags := range offloadSteps {
			if set(flags) == nil {
				return flags, nil
			}
		}
	}
	if err := set(0); err != nil {
		return 0, fmt.Errorf("TUNSETOFFLOAD 0: %w", err)
	}
	return 0, nil
}

// OffloadNames spells TUNSETOFFLOAD flags, e.g. "csum,tso4,tso6,uso4,uso6",
// or "none".
func OffloadNames(flags int) string {
	names := []struct {
		bit  int
		name string
	}{{OffloadCsum, "csum"}, {OffloadTSO4, "tso4"}, {OffloadTSO6, "tso6"}, {OffloadUSO4, "uso4"}, {OffloadUSO6, "uso6"}}
	var s []string
	for _, n := range names {
		if flags&n.bit != 0 {
			s = append(s, n.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// setLink sets the interface's MTU (if mtu > 0) and brings it up.
func setLink(name string, mtu int) error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if mtu > 0 {
		ifr.SetUint32(uint32(mtu))
		if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
			return fmt.Errorf("set MTU %d: %w", mtu, err)
		}
	}
	if err := noLinkLocal(name); err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up: %w", err)
	}
	return nil
}

// noLinkLocal sets the interface's IPv6 address generation mode to none
// before it comes up. A tun with a link-local address sends MLD reports and
// router solicitations from it into its own queues, where the translator
// can only count them as drops of an illegal source. Kernels without IPv6
// have no such setting, which is fine.
func noLinkLocal(name string) error {
	err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/addr_gen_mode", []byte("1"), 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("turn off IPv6 link-local address: %w", err)
	}
	return nil
}

// Name is the interface name.
func (d *Device) Name() string { return d.name }

// MTU is the interface MTU set by Open.
func (d *Device) MTU() int { return d.mtu }

// Queues are the device's queues, one per file descriptor.
func (d *Device) Queues() []*Queue { return d.queues }

// OffloadFlags are the TUNSETOFFLOAD flags the kernel granted.
func (d *Device) OffloadFlags() int { return d.offloads }

// Offloads names the granted offloads, e.g. "csum,tso4,tso6,uso4,uso6", or
// "none".
func (d *Device) Offloads() string { return OffloadNames(d.offloads) }

// SteeringErr says why Config.SteerPrefix was not used (the kernel chooses
// the queues itself then), or nil.
func (d *Device) SteeringErr() error { return d.steerErr }

// Close closes every queue; blocked reads return os.ErrClosed. The
// interface disappears with its last queue.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		d.wakeMu.Lock()
		for _, wake := range d.wakers {
			wake()
		}
		d.wakeMu.Unlock()
		var errs []error
		for _, q := range d.queues {
			errs = append(errs, q.f.Close())
		}
		d.closeErr = errors.Join(errs...)
	})
	return d.closeErr
}

// existingDriver names the driver of the link called name in this network
// namespace (ethtool's driver info, as "ethtool -i" shows it: "tun",
// "dummy", "veth", "bridge"...), or "" if there is no such link. TUNSETIFF
// on a name that belongs to another kind of link fails with a bare EINVAL
// (drivers/net/tun.c, tun_set_iff), which says nothing to an operator.
func existingDriver(name string) string {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return "unknown"
		}
		return ""
	}
	if drv := unix.ByteSliceToString(info.Driver[:]); drv != "" {
		return drv
	}
	return "unknown"
}
