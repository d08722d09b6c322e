package tun

import (
	"encoding/binary"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/stack/xlat"
	"golang.org/x/sys/unix"
)

// gsoTCP6 writes into b a virtio_net_hdr and an IPv6 TCP super-packet of
// segs segments of mss bytes from 2001:db8:2::1 to 2001:db8:1::2 with a
// partial checksum, as the translator writes one, and returns its length.
func gsoTCP6(b []byte, segs, mss int) int {
	const ip, tcp = 40, 20
	n := VnetHdrLen + ip + tcp + segs*mss
	EncodeVnetHdr(b, &xlat.Offload{Flags: xlat.OffloadNeedsCsum, GSOType: xlat.GSOTCPv6, HdrLen: ip + tcp, GSOSize: uint16(mss), CsumStart: ip, CsumOffset: 16})
	p := b[VnetHdrLen:n]
	clear(p[:ip+tcp])
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:], uint16(tcp+segs*mss))
	p[6], p[7] = unix.IPPROTO_TCP, 64
	copy(p[8:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 2, 14: 0, 15: 1})
	copy(p[24:], []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 14: 0, 15: 2})
	binary.BigEndian.PutUint16(p[ip:], 5201)
	binary.BigEndian.PutUint16(p[ip+2:], 40000)
	p[ip+12], p[ip+13] = 5<<4, 0x10 // 20-byte header, ACK
	return n
}

// hugePage is the size of an x86-64 transparent huge page.
const hugePage = 2 << 20

// io_uring's operations on registered buffers, which the queue loop does
// not use (BenchmarkTunCopy64K measured no gain).
const (
	uringOpReadFixed     = 4
	uringOpWriteFixed    = 5
	uringRegisterBuffers = 0
)

// prepFixed queues a read or write of b, which lies in the registered
// buffer idx (IORING_OP_READ_FIXED, WRITE_FIXED: the kernel pinned the
// buffer's pages once, at registration, instead of for each operation).
func (r *ring) prepFixed(op, flags uint8, rwFlags uint32, b []byte, idx int, userData uint64) {
	r.prepRW(op, flags, rwFlags, b, userData)
	r.sqes[(r.tail-1)&r.sqMask].bufIndex = uint16(idx)
}

// registerBuffers registers bufs with the ring, buffer i at index i
// (IORING_REGISTER_BUFFERS); the ring's close releases them.
func (r *ring) registerBuffers(bufs [][]byte) error {
	iov := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uringRegisterBuffers, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// BenchmarkTunCopy64K: one 64 KiB TCP super-packet written into a tun and
// read back (the namespace routes its destination into the same tun), the
// two copies and the skb a translated TCP segment costs the kernel, by the
// page size of the buffer and the calls that move it: read(2)/write(2), an
// io_uring write linked to the read (the queue loop's batch of one), and
// the same with the buffer registered (READ_FIXED/WRITE_FIXED).
func BenchmarkTunCopy64K(b *testing.B) {
	netnstest.RequireTun(b, "dp-")
	ns := netnstest.New(b, "dp-copy-")
	var dev *Device
	if err := ns.Do(func() (err error) {
		dev, err = Open(Config{Name: "dp-tun0", Queues: 1, MTU: 1500, Offload: true})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	ns.Sysctl("net.ipv6.conf.all.forwarding=1")
	ns.MustRun(b, "ip", "link", "set", "dp-tun0", "up")
	ns.MustRun(b, "ip", "-6", "route", "add", "2001:db8:1::/64", "dev", "dp-tun0")
	rc, err := dev.Queues()[0].f.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })

	// Buffers of each page size, outside Go's heap so that nothing else
	// decides their pages.
	mem, err := unix.Mmap(-1, 0, 3*hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mem)
	small := mem[:frameLen]
	unix.Madvise(small, unix.MADV_NOHUGEPAGE)
	off := hugePage - int(uintptrOf(mem)%hugePage) // the next 2 MiB boundary
	if off < frameLen {
		off += hugePage
	}
	huge := mem[off : off+hugePage]
	if err := unix.Madvise(huge, unix.MADV_HUGEPAGE); err != nil {
		b.Fatal(err)
	}
	huge[0], small[0] = 1, 1 // a first touch maps the huge page whole
	if kb := anonHugeKB(b, uintptrOf(huge)); kb < hugePage>>10 {
		b.Fatalf("the 2 MiB buffer has %d KiB of huge pages: transparent huge pages are off (/sys/kernel/mm/transparent_hugepage/enabled)", kb)
	}
	if kb := anonHugeKB(b, uintptrOf(small)); kb != 0 {
		b.Fatalf("the 4 KiB-page buffer has %d KiB of huge pages", kb)
	}
	const segs, mss = 45, 1428 // 64260 bytes of data: a 64 KiB super-packet
	for _, buf := range []struct {
		name string
		b    []byte
	}{{"4k", small}, {"2m", huge[:frameLen]}} {
		n := gsoTCP6(buf.b, segs, mss)
		b.Run(buf.name+"/rw", func(b *testing.B) {
			stray := 0
			defer func() { b.ReportMetric(float64(stray), "stray") }()
			b.SetBytes(int64(n))
			for b.Loop() {
				gsoTCP6(buf.b, segs, mss) // the hop limit went down
				if m, err := unix.Write(fd, buf.b[:n]); err != nil || m != n {
					b.Fatalf("write: %d %v", m, err)
				}
				for {
					m, err := unix.Read(fd, buf.b)
					if err != nil {
						b.Fatalf("read: %v", err)
					}
					if m == n {
						break
					}
					stray++ // the tun's own IPv6 control traffic (MLD)
				}
			}
		})
		for _, fixed := range []bool{false, true} {
			name := buf.name + "/uring"
			if fixed {
				name += "-fixed"
			}
			b.Run(name, func(b *testing.B) {
				// The ring takes submissions and runs completions on the
				// thread that made it only (SINGLE_ISSUER, DEFER_TASKRUN),
				// as a queue's ring on its locked thread.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var r *ring
				var setupErr error
				rc.Control(func(f uintptr) { r, setupErr = newRing(8, int(f)) })
				if setupErr != nil {
					testenv.SkipOrFailf(b, "no io_uring: %v", setupErr)
				}
				defer r.close()
				if fixed {
					if err := r.registerBuffers([][]byte{buf.b}); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(n))
				ts := unix.NsecToTimespec(1e9)
				waits, stray := 0, 0
				for b.Loop() {
					gsoTCP6(buf.b, segs, mss)
					if fixed {
						r.prepFixed(uringOpWriteFixed, uringSqeLink|uringSqeSkipSuccess, 0, buf.b[:n], 0, uringWrite)
						r.prepFixed(uringOpReadFixed, 0, unix.RWF_NOWAIT, buf.b, 0, uringRead)
					} else {
						r.prepRW(uringOpWrite, uringSqeLink|uringSqeSkipSuccess, 0, buf.b[:n], uringWrite)
						r.prepRW(uringOpRead, 0, unix.RWF_NOWAIT, buf.b, uringRead)
					}
					r.enter(false, nil, true)
					for {
						for r.ready() == 0 {
							waits++
							if errno := r.enter(true, &ts, true); errno != 0 && errno != unix.EINTR {
								b.Fatalf("wait: %v", errno)
							}
						}
						c := r.cqe(0)
						ud, res := c.userData, c.res
						r.consume(1)
						if ud != uringRead || res < 0 {
							b.Fatalf("completion %#x: %d, want the read of %d bytes", ud, res, n)
						}
						if int(res) == n {
							break
						}
						stray++
						r.prepRW(uringOpRead, 0, 0, buf.b, uringRead)
						r.enter(false, nil, true)
					}
				}
				b.ReportMetric(float64(ioWorkers(b)), "io-wq-workers")
				b.ReportMetric(float64(waits)/float64(b.N), "waits/op")
				b.ReportMetric(float64(stray), "stray")
			})
		}
	}
}

// anonHugeKB is AnonHugePages of the mapping that holds address a, from
// /proc/self/smaps.
func anonHugeKB(b *testing.B, a uintptr) int {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		b.Fatal(err)
	}
	in := false
	for _, l := range strings.Split(string(smaps), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && !strings.HasSuffix(f[0], ":") {
			s, err1 := strconv.ParseUint(lo, 16, 64)
			e, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && uintptr(s) <= a && a < uintptr(e)
			continue
		}
		if in && f[0] == "AnonHugePages:" && len(f) > 1 {
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	return 0
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
