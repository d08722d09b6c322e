// Package stack is the translator's data path: it moves packets between a
// link (the offload-aware multi-queue tun of package stack/tun, or any file
// descriptor through gVisor's fdbased endpoint) and the translation engine
// of package stack/xlat, and counts what happens at the link.
//
// The tun path (Serve) runs one goroutine per queue. Each owns one buffer of
// VnetHdrLen + xlat.Headroom + 64 KiB, reads a packet with its
// virtio_net_hdr into it, has the engine rewrite packet and offload
// metadata in place, encodes the metadata back in front of the result and
// writes it to the same queue: one read and one write per packet or
// GSO super-packet, no copy and no allocation in between.
//
// The same tun is also a gVisor stack.LinkEndpoint (tun.NewEndpoint), the
// general path: ServeLink attaches Handler, a gVisor
// stack.NetworkDispatcher, which copies each delivered PacketBuffer into
// its own buffer, translates it with its offload metadata (the
// PacketBuffer's GSOOptions, converted to and from xlat.Offload) and
// writes the result back through the endpoint's WritePackets. It gives
// identical output (TestLinkEndpointMatchesFastPath) and allocates nothing
// per packet either, but costs 2.5x the fast path per 1500-byte packet and
// 5.5x per 64 KiB super-packet (BenchmarkPathPerPacket: 398 vs 154 ns and
// 4.4 vs 0.8 us; the numbers are in package tun's comment), so Serve, which
// the daemon runs, stays on the fast path.
//
// The fd path (ServeFD) is the generic one for other descriptors: gVisor's
// fdbased endpoint reads the descriptor and hands PacketBuffers to the same
// Handler, which writes the result back through that endpoint.
//
// NIC mode (ServeNIC) reads the appliance's NICs directly: per NIC, a
// PACKET_FANOUT_HASH group of AF_PACKET sockets, each read by its own
// fdbased endpoint (PACKET_MMAP ring, one processor: the reading goroutine
// translates) into its own Handler, whose output is a nicWriter: sendmsg to
// the next hop's link address from the kernel's routing and neighbour
// tables (resolver). What the pinned gVisor's fdbased offers there, and
// what ServeNIC therefore does itself: PACKET_MMAP (TPACKET_V1, 32 frames
// of 64 KiB per socket) and recvmmsg dispatch are both there; it creates a
// fanout group only across the descriptors of one endpoint, so ServeNIC
// joins its sockets itself (PreConfigured) to give each its own Handler;
// it writes a virtio_net_hdr for host GSO on sockets but drops the one
// PACKET_VNET_HDR puts before received frames, so super-packets cannot
// pass and ServeNIC turns GRO off on its NICs instead.
package stack
