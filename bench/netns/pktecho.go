package main

import (
	"context"
	"path/filepath"
	"time"
)

// The pkt-echo setups: native IPv6 between client and server, moved by a
// program on AF_PACKET sockets instead of the router's kernel
// (bench/pktecho), as NIC mode moves translated packets: the router
// namespace's forwarding is off while it runs, and the echo sends every
// IPv6 frame that arrives on one veth out of the other, only its Ethernet
// addresses changed. It measures the floor of NIC mode on these links:
// the packet sockets' receive ring, recvmsg of each super-packet and its
// send, without any translation. pkt-echo-txring sends through a
// PACKET_TX_RING instead of sendmsg (the lever docs/datapath.md names for
// the send's copy).
type pktEchoTranslator struct {
	bin, dir string
	txRing   bool
	proc     *process
	noFwd    bool // forwarding was turned off and must be restored
}

// tunName: no tun, the veths themselves.
func (x *pktEchoTranslator) tunName() string { return "" }

// pktEchoArgs is the echo's command line: the router's two veths and the
// link addresses of their peers (the topology fixes them).
func pktEchoArgs(bin string, txRing bool) []string {
	argv := []string{bin, "-a", router4If, "-a-peer", macClient, "-b", router6If, "-b-peer", macServer}
	if txRing {
		argv = append(argv, "-txring")
	}
	return argv
}

func (x *pktEchoTranslator) start(ctx context.Context, t topology) (*process, error) {
	x.noFwd = true
	if err := setForwarding(ctx, t, false); err != nil {
		return nil, err
	}
	log := "pktecho.log"
	if x.txRing {
		log = "pktecho-txring.log"
	}
	p, err := startEcho(ctx, t, filepath.Join(x.dir, log), nil, pktEchoArgs(x.bin, x.txRing))
	if p != nil {
		x.proc = p
	}
	return p, err
}

// stop ends the echo and turns the router's forwarding back on.
func (x *pktEchoTranslator) stop(ctx context.Context, t topology) error {
	var err error
	if x.proc != nil {
		err = x.proc.stop(5 * time.Second)
		x.proc = nil
	}
	if x.noFwd {
		x.noFwd = false
		if ferr := setForwarding(ctx, t, true); ferr != nil && err == nil {
			err = ferr
		}
	}
	return err
}

// buildPktEcho compiles bench/pktecho into dir (go run ./bench/netns runs
// from the repository).
func buildPktEcho(ctx context.Context, dir string) (string, error) {
	return buildBenchTool(ctx, dir, "pktecho", "")
}
