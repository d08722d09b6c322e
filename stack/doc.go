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
// The fd path (ServeFD) is the generic one: gVisor's fdbased endpoint reads
// the descriptor and hands PacketBuffers to Handler, a
// stack.NetworkDispatcher, which translates a copy and writes the result
// back through the endpoint.
package stack
