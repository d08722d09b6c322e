// Package tun opens the translator's Linux tun device: multi-queue
// (IFF_MULTI_QUEUE, one file descriptor per queue), IP packets without the
// packet-information prefix (IFF_NO_PI), each prefixed by a little-endian
// struct virtio_net_hdr (IFF_VNET_HDR) so that the kernel can hand over
// TCP/UDP super-packets of up to 64 KiB with a partial checksum
// (TUNSETOFFLOAD) instead of one packet per MTU.
//
// The package does I/O only; packet handling lives in package stack, which
// runs one goroutine per Queue. The tun character device has no batched
// read or write call (no recvmmsg/sendmmsg on a file): the batching comes
// from the offloads, which put up to 44 MTU-sized segments in one read.
//
// Why a Device is not a gVisor stack.LinkEndpoint: that interface moves
// packets as PacketBuffers, in (NetworkDispatcher.DeliverNetworkPacket) and
// out (LinkWriter.WritePackets). On this path a PacketBuffer costs a pooled
// 64 KiB view cleared per packet and a copy each way, which is most of what
// made gVisor's fdbased endpoint reach 0.05x native forwarding here (see
// DESIGN.md). The narrowest gVisor-shaped piece that fits is therefore no
// interface at all but its vocabulary: a Queue is read and written with the
// virtio_net_hdr that gVisor's link endpoints also speak, and the stack
// package hands the bytes straight to the engine and back. The generic,
// PacketBuffer-based route (stack.Handler as a NetworkDispatcher over
// fdbased) remains for descriptors that are not this tun.
package tun
