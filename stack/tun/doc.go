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
// The tun is also a gVisor link endpoint: NewEndpoint returns an Endpoint,
// a stack.LinkEndpoint (and stack.GSOEndpoint) over the same queues, for
// any stack.NetworkDispatcher, the translator's stack.Handler in
// particular (stack.ServeLink). Its virtio_net_hdr travels as the
// PacketBuffer's GSOOptions and RXChecksumValidated (OffloadToPacket,
// OffloadFromPacket), so TSO/USO super-packets and partial checksums cross
// it unchanged. That is the general path.
//
// stack.Serve, which the daemon runs, does not use it: it reads the same
// queues into its own buffer and hands the bytes straight to the engine,
// with no PacketBuffer and no copy. Both allocate nothing per packet (gVisor
// pools its PacketBuffers), but the PacketBuffer route copies each packet
// four times (into the PacketBuffer, into the Handler's buffer with
// headroom, into a new PacketBuffer, into the write buffer) and goes
// through the Handler's lock. Measured by stack.BenchmarkPathPerPacket
// (real engine, no system calls, median of 5 on the 2-core build machine):
//
//	                        fast path   LinkEndpoint+Handler
//	TCP 4->6, 1500 bytes      154 ns      398 ns
//	TCP 6->4, 1500 bytes      162 ns      418 ns
//	TSO 4->6, 64 KiB          802 ns     4435 ns
//	TSO 6->4, 64 KiB          795 ns     4369 ns
//	allocations per packet      0           0
package tun
