// Package tun opens the translator's Linux tun device: multi-queue
// (IFF_MULTI_QUEUE, one file descriptor per queue), IP packets without the
// packet-information prefix (IFF_NO_PI), each prefixed by a little-endian
// struct virtio_net_hdr (IFF_VNET_HDR) so that the kernel can hand over
// TCP/UDP super-packets of up to 64 KiB with a partial checksum
// (TUNSETOFFLOAD) instead of one packet per MTU.
//
// The package does I/O and framing only; translation lives in package
// stack. The tun character device has no batched read or write call (no
// recvmmsg/sendmmsg on a file): the batching comes from the offloads,
// which put up to 44 MTU-sized segments in one read (and, in a build
// that selects it, from io_uring, which carries many reads and writes in
// one system call).
//
// The tun is served as a gVisor link endpoint: NewEndpoint returns an
// Endpoint, a stack.LinkEndpoint (and stack.GSOEndpoint) over all the
// queues, with one dispatch goroutine per queue. That goroutine reads a
// packet into the queue's Frame and delivers it on the spot, stamped with
// the queue index in PacketBuffer.Hash; WritePackets sends each packet to
// the queue its Hash names. A FrameDispatcher (the translator's
// stack.Handler) is handed a PacketBuffer over the frame itself and
// rewrites it in place; the frame's Offload is the packet's
// virtio_net_hdr, decoded, and what the dispatcher leaves there is encoded
// in front of the result when it is written from the frame: one read and
// one write per packet, no copy. Any other dispatcher (a gVisor network
// stack) gets a copy whose GSOOptions and RXChecksumValidated say what the
// header said (OffloadToPacket), and what it writes is copied behind a
// header made from its GSOOptions (OffloadFromPacket). gVisor's GSO types
// describe TCP segmentation only; UDP segmentation (USO) is carried in
// frames only, never as an invented GSO type.
//
// Each queue's loop runs on a thread of its own and reads and writes its
// non-blocking descriptor by raw system calls (no entersyscall). By
// default (queueIO) a queue that stays busy runs on an io_uring where the
// kernel has one, as a batcher while the queue has packets: reads
// posted with RWF_NOWAIT, the writes of a batch submitted with the next
// reads in one io_uring_enter (uringio_linux.go). Either way an empty
// queue tells its dispatcher (which publishes batched counters), waits a
// little in ppoll(2) on the queue and the attachment's wake eventfd
// keeping its P, then blocks there through the ordinary syscall path,
// which lets the runtime use the P meanwhile; the descriptors are kept
// out of the runtime poller. A packet after an idle gap thus costs one
// wake-up, the kernel waking the loop's own thread (rawio_linux.go; the
// levers measured are in docs/datapath.md, "Latency levers" and
// "io_uring").
package tun
