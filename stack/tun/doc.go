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
package tun
