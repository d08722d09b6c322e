// Package stack is the translator's data path: packets taken from a gVisor
// link endpoint are handed to Handler, a gVisor stack.NetworkDispatcher
// that has the engine of package stack/xlat rewrite their headers, and the
// result is written back through the endpoint's WritePackets. It counts
// what happens at the link (LinkStats) and watches that every queue makes
// progress (Datapath.Check).
//
// The product's path (ServeTun, what `map646 run` and the image run) is
// the offload-aware multi-queue tun of package stack/tun as a
// tun.Endpoint. Each queue has one dispatch goroutine that reads a packet
// or GSO super-packet with its virtio_net_hdr into the queue's tun.Frame
// (a buffer with xlat.Headroom in front of the packet) and, on the same
// goroutine, delivers it to the Handler as a PacketBuffer over that
// memory, stamped with the queue index in PacketBuffer.Hash. The Handler
// keeps one translator (an xlat.Worker) and one set of buffers per queue,
// selected by that index, with no lock: it translates the packet in place,
// with the frame's Offload as its offload metadata, and writes a
// PacketBuffer over the result back with the same Hash, which the endpoint
// sends to the same queue from the frame, its header encoded in front.
// Per packet: one read, one write, no copy in between, no allocation, no
// goroutine hand-off. docs/datapath.md draws the path and gives the
// measurements.
//
// The fd path (ServeFDQueues, ServeTap) serves inherited descriptors.
// Queues of one tun go to a tun.Endpoint, host mode's queue loops
// (serveTunFDs in fd.go). Sockets and taps go to an endpoint of ours
// (fd_tap.go): one goroutine per descriptor reads into a frame with
// headroom, the same Handler translates in place, and the result is
// written with one writev (behind an Ethernet header to the resolved next
// hop for a tap, whose ARP and Neighbor Discovery it answers itself:
// arp.go). A tun, tap or socket with a virtio_net_hdr has it read beside
// the frame and written in front of the result, so that super-packets
// cross it whole too. Any
// link endpoint can use Handler (NewHandler), provided each queue index in
// PacketBuffer.Hash is delivered by one goroutine at a time; the
// PacketBuffers of an endpoint not ours (gVisor's fdbased) are copied into
// the queue's own frame (they have no headroom).
//
// Before the engine, the Handler sets aside the host's own link chatter on
// the tun (IPv6 from :: or fe80::/10 to ff02::/16: the kernel's MLD, router
// and neighbour solicitations), counted as LinkStats.LinkChatter rather
// than as dropped traffic. An opt-in drop log (Datapath.SetDropLog; the
// configuration's log.drops) writes a rate-limited line per packet the
// engine drops, from a copy of the packet's head taken before the engine
// rewrote it. What every drop reason and link counter means, and what to
// do about it, is in DropReasons and LinkCounters.
//
// A translator that panics loses the packet it panicked on, nothing
// else: the Handler recovers on the queue, counts it (LinkStats.Panics),
// logs it with the packet in hex at most once per PanicLogInterval, and
// the queue goes on. A queue whose reads keep failing (tun.MaxReadErrors,
// or at once when the interface is deleted) stops the data path, and
// Datapath.Wait returns its error.
//
// NIC mode (ServeNIC) reads the appliance's NICs directly: per NIC, a
// PACKET_FANOUT_EBPF group (steered by the tun's program; PACKET_FANOUT_HASH
// without it) of AF_PACKET sockets with PACKET_VNET_HDR and a receive ring,
// the sockets of index i of both NICs one queue of a tun.Endpoint (nicConn
// moves the Ethernet header aside so that the sockets have a tun's
// framing), so it is the tun's path: a goroutine per index reads a packet
// or GRO/GSO super-packet from either NIC into its frame, the Handler
// translates it in place, and the next hop NIC's socket of that index
// sends it to the next hop's link address from the kernel's routing and
// neighbour tables (resolver). gVisor's own fdbased endpoint is not used
// there: the pinned version drops the virtio_net_hdr that PACKET_VNET_HDR
// puts before received frames, so super-packets and partial checksums
// could not pass.
package stack
