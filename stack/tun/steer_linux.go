package tun

import (
	"fmt"
	"net/netip"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Queue steering: both directions of a translated flow on one queue.
//
// Without a steering program the kernel picks a tun queue from its flow
// table (tun_automq_select_queue): a flow's packets go to the queue that
// last wrote a packet of the same flow. A translator never writes the flow
// it reads (it reads IPv4 and writes IPv6), and the kernel learns a
// written flow only after it has delivered the packet (tun_get_user
// updates the table after netif_receive_skb), while the reply to that
// packet, on a host or namespace beside the translator, is routed back
// into the tun during that very delivery. So a reply goes to the queue
// that wrote the request before last: with two queues request and reply
// took turns on the two queues, every ping the reply woke the other
// queue's thread (docs/datapath.md, "Latency levers").
//
// The steering program (TUNSETSTEERINGEBPF) instead chooses a queue from
// what a packet and its translated reply have in common under RFC 7755's
// SIIT-DC: the address of the host on the IPv4 side and that host's port.
// That host is the source of an IPv4 packet read from the tun, and it is
// embedded (RFC 6052 section 2.2) in the destination of an IPv6 packet
// read from the tun, which goes to the IPv4 side. Its port is the IPv4
// packet's source port and the IPv6 packet's destination port (TCP, UDP),
// or the ICMP identifier (echo request and reply carry the same one). The
// translated reply to a packet read from queue q therefore comes back to
// queue q, and the loop that wrote the packet reads the reply without a
// wake-up. Fragments and other protocols use port 0; flows that do not fit
// the pattern (both addresses from EAM entries) still spread over the
// queues, only without that guarantee. Which queue a packet uses never
// matters for correctness.

// bpfInsn is one eBPF instruction (struct bpf_insn).
type bpfInsn struct {
	code uint8
	regs uint8 // dst in the low nibble, src in the high one
	off  int16
	imm  int32
}

// eBPF opcodes the steering program uses (include/uapi/linux/bpf.h and
// bpf_common.h), in the spelling of the kernel's filter.h macros.
const (
	bpfLD    = 0x00
	bpfALU   = 0x04 // 32-bit arithmetic
	bpfALU64 = 0x07
	bpfJMP   = 0x05
	bpfW     = 0x00
	bpfH     = 0x08
	bpfB     = 0x10
	bpfK     = 0x00
	bpfX     = 0x08
)

// Registers: r0 result, r1 context, r6 the context for LD_ABS/LD_IND,
// r7..r9 kept across the loads (which clobber r1..r5).
func mov64Reg(dst, src uint8) bpfInsn {
	return bpfInsn{code: bpfALU64 | unix.BPF_MOV | bpfX, regs: dst | src<<4}
}
func alu64Imm(op uint8, dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: bpfALU64 | op | bpfK, regs: dst, imm: imm}
}
func alu64Reg(op uint8, dst, src uint8) bpfInsn {
	return bpfInsn{code: bpfALU64 | op | bpfX, regs: dst | src<<4}
}
func alu32Imm(op uint8, dst uint8, imm int32) bpfInsn {
	return bpfInsn{code: bpfALU | op | bpfK, regs: dst, imm: imm}
}
func ldAbs(size uint8, off int32) bpfInsn {
	return bpfInsn{code: bpfLD | unix.BPF_ABS | size, imm: off}
}
func ldInd(size uint8, src uint8, off int32) bpfInsn {
	return bpfInsn{code: bpfLD | unix.BPF_IND | size, regs: src << 4, imm: off}
}
func jeqImm(dst uint8, imm int32, off int16) bpfInsn {
	return bpfInsn{code: bpfJMP | unix.BPF_JEQ | bpfK, regs: dst, imm: imm, off: off}
}
func jsetImm(dst uint8, imm int32, off int16) bpfInsn {
	return bpfInsn{code: bpfJMP | unix.BPF_JSET | bpfK, regs: dst, imm: imm, off: off}
}
func ja(off int16) bpfInsn { return bpfInsn{code: bpfJMP | unix.BPF_JA, off: off} }
func exit() bpfInsn        { return bpfInsn{code: bpfJMP | unix.BPF_EXIT} }

// embeddedOffsets are the byte offsets, within an IPv6 address, of the four
// bytes of an IPv4 address embedded with a prefix of the given length (RFC
// 6052 section 2.2: bits 64 to 71 are skipped).
func embeddedOffsets(bits int) ([4]int32, error) {
	switch bits {
	case 32:
		return [4]int32{4, 5, 6, 7}, nil
	case 40:
		return [4]int32{5, 6, 7, 9}, nil
	case 48:
		return [4]int32{6, 7, 9, 10}, nil
	case 56:
		return [4]int32{7, 9, 10, 11}, nil
	case 64:
		return [4]int32{9, 10, 11, 12}, nil
	case 96:
		return [4]int32{12, 13, 14, 15}, nil
	}
	return [4]int32{}, fmt.Errorf("prefix length %d is not one of RFC 6052's (32, 40, 48, 56, 64, 96)", bits)
}

// label is a jump target of the program being assembled.
type label int

// asm assembles a program with forward jumps to labels.
type asm struct {
	insns  []bpfInsn
	fixups map[int]label // instruction -> the label it jumps to
	at     map[label]int
}

func (a *asm) emit(i ...bpfInsn) { a.insns = append(a.insns, i...) }

// jump emits i (a jump) to l.
func (a *asm) jump(i bpfInsn, l label) {
	a.fixups[len(a.insns)] = l
	a.insns = append(a.insns, i)
}

func (a *asm) mark(l label) { a.at[l] = len(a.insns) }

func (a *asm) done() []bpfInsn {
	for i, l := range a.fixups {
		a.insns[i].off = int16(a.at[l] - i - 1)
	}
	return a.insns
}

// steeringProgram returns the steering program for the RFC 6052 prefix
// length bits. It returns a 16-bit mix of the IPv4-side host's address and
// port; the tun takes it modulo the number of queues (tun_ebpf_select_queue).
// A load beyond the packet's end ends the program with 0 (queue 0).
func steeringProgram(bits int) ([]bpfInsn, error) {
	emb, err := embeddedOffsets(bits)
	if err != nil {
		return nil, err
	}
	const (
		r0, r1, r6, r7, r8, r9                                    = 0, 1, 6, 7, 8, 9
		v4, v6, v4icmp, v4port, v6icmp, v6port, noPort, mix label = 0, 1, 2, 3, 4, 5, 6, 7
		ipv6Dst                                                   = 24
	)
	a := &asm{fixups: map[int]label{}, at: map[label]int{}}
	a.emit(
		mov64Reg(r6, r1),
		ldAbs(bpfB, 0), // version and IHL
		mov64Reg(r7, r0),
		alu64Imm(unix.BPF_RSH, r7, 4),
	)
	a.jump(jeqImm(r7, 4, 0), v4)
	a.jump(jeqImm(r7, 6, 0), v6)
	a.emit(alu64Imm(unix.BPF_MOV, r0, 0), exit())

	// IPv4: the source, its port after the header of IHL words.
	a.mark(v4)
	a.emit(
		alu64Imm(unix.BPF_AND, r0, 0xf),
		alu64Imm(unix.BPF_LSH, r0, 2),
		mov64Reg(r7, r0), // header length
		ldAbs(bpfW, 12),  // source address
		mov64Reg(r8, r0),
		ldAbs(bpfH, 6), // flags and fragment offset
	)
	a.jump(jsetImm(r0, 0x3fff, 0), noPort) // a fragment: no port in every part
	a.emit(ldAbs(bpfB, 9))                 // protocol
	a.jump(jeqImm(r0, unix.IPPROTO_ICMP, 0), v4icmp)
	a.jump(jeqImm(r0, unix.IPPROTO_TCP, 0), v4port)
	a.jump(jeqImm(r0, unix.IPPROTO_UDP, 0), v4port)
	a.jump(ja(0), noPort)
	a.mark(v4port)
	a.emit(ldInd(bpfH, r7, 0), mov64Reg(r9, r0)) // source port
	a.jump(ja(0), mix)
	a.mark(v4icmp)
	a.emit(ldInd(bpfH, r7, 4), mov64Reg(r9, r0)) // identifier
	a.jump(ja(0), mix)

	// IPv6: the IPv4 address embedded in the destination, the destination
	// port right after the fixed header (extension headers: port 0).
	a.mark(v6)
	a.emit(
		ldAbs(bpfB, ipv6Dst+emb[0]), alu64Imm(unix.BPF_LSH, r0, 24), mov64Reg(r8, r0),
		ldAbs(bpfB, ipv6Dst+emb[1]), alu64Imm(unix.BPF_LSH, r0, 16), alu64Reg(unix.BPF_OR, r8, r0),
		ldAbs(bpfB, ipv6Dst+emb[2]), alu64Imm(unix.BPF_LSH, r0, 8), alu64Reg(unix.BPF_OR, r8, r0),
		ldAbs(bpfB, ipv6Dst+emb[3]), alu64Reg(unix.BPF_OR, r8, r0),
		ldAbs(bpfB, 6), // next header
	)
	a.jump(jeqImm(r0, unix.IPPROTO_ICMPV6, 0), v6icmp)
	a.jump(jeqImm(r0, unix.IPPROTO_TCP, 0), v6port)
	a.jump(jeqImm(r0, unix.IPPROTO_UDP, 0), v6port)
	a.jump(ja(0), noPort)
	a.mark(v6port)
	a.emit(ldAbs(bpfH, 40+2), mov64Reg(r9, r0)) // destination port
	a.jump(ja(0), mix)
	a.mark(v6icmp)
	a.emit(ldAbs(bpfH, 40+4), mov64Reg(r9, r0)) // identifier
	a.jump(ja(0), mix)

	a.mark(noPort)
	a.emit(alu64Imm(unix.BPF_MOV, r9, 0))
	// A multiplicative mix in 32 bits; its high half is the result (the
	// tun keeps 16 bits of it).
	a.mark(mix)
	a.emit(
		mov64Reg(r0, r9),
		alu32Imm(unix.BPF_MUL, r0, -0x7a143595), // 0x85ebca6b
		alu64Reg(unix.BPF_XOR, r0, r8),
		alu32Imm(unix.BPF_MUL, r0, -0x61c8864f), // 0x9e3779b1
		alu32Imm(unix.BPF_RSH, r0, 16),
		exit(),
	)
	return a.done(), nil
}

// bpfProgLoad is the BPF_PROG_LOAD part of union bpf_attr.
type bpfProgLoad struct {
	progType    uint32
	insnCnt     uint32
	insns       uint64
	license     uint64
	logLevel    uint32
	logSize     uint32
	logBuf      uint64
	kernVersion uint32
	progFlags   uint32
}

// loadProgram loads insns as a socket filter program (the type a tun's
// steering program has) and returns its descriptor. The verifier's log is
// in the error.
func loadProgram(insns []bpfInsn) (int, error) {
	// The kernel reads the license only to allow GPL-only helpers; the
	// program calls no helper at all.
	license := []byte("GPL\x00")
	log := make([]byte, 64<<10)
	attr := bpfProgLoad{
		progType: unix.BPF_PROG_TYPE_SOCKET_FILTER,
		insnCnt:  uint32(len(insns)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1,
		logSize:  uint32(len(log)),
		logBuf:   uint64(uintptr(unsafe.Pointer(&log[0]))),
	}
	// The verifier gives up with EAGAIN when a signal is pending, and
	// the Go runtime signals its threads (preemption, the garbage
	// collector): a load that a signal interrupted is tried again, as
	// libbpf does.
	var fd uintptr
	var errno syscall.Errno
	for range 20 {
		fd, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != unix.EAGAIN && errno != unix.EINTR {
			break
		}
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	runtime.KeepAlive(log)
	if errno != 0 {
		msg := string(log[:clen(log)])
		return -1, fmt.Errorf("BPF_PROG_LOAD: %w: %s", errno, msg)
	}
	return int(fd), nil
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// LoadSteeringProgram loads the steering program for the RFC 6052 prefix
// and returns its descriptor, which the caller closes. The program reads a
// packet from its IP header on, so it also serves as a PACKET_FANOUT_EBPF
// program (the kernel runs fanout programs before the link header is
// pushed back), where the same choice puts a flow's two directions, read
// from two NICs, on sockets of the same index (stack.ServeNIC).
func LoadSteeringProgram(prefix netip.Prefix) (int, error) {
	if !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return -1, fmt.Errorf("steering: %v is not an IPv6 prefix", prefix)
	}
	insns, err := steeringProgram(prefix.Bits())
	if err != nil {
		return -1, fmt.Errorf("steering: %w", err)
	}
	prog, err := loadProgram(insns)
	if err != nil {
		return -1, fmt.Errorf("steering: %w", err)
	}
	return prog, nil
}

// setSteering loads the steering program for prefix and makes it the
// queue selector of the tun that queue descriptor fd belongs to. The tun
// holds its own reference on the program.
func setSteering(fd int, prefix netip.Prefix) error {
	prog, err := LoadSteeringProgram(prefix)
	if err != nil {
		return err
	}
	defer unix.Close(prog)
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETSTEERINGEBPF, prog); err != nil {
		return fmt.Errorf("steering: TUNSETSTEERINGEBPF: %w", err)
	}
	return nil
}

// Compile-time check that bpfInsn has the kernel's layout.
var _ = [1]struct{}{}[unsafe.Sizeof(bpfInsn{})-8]
