package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The tun-echo setup: native IPv6 forwarding with a detour through a tun
// whose reader (bench/tunecho) writes every packet back unchanged. The
// router's kernel sends what comes in on either veth into the tun (policy
// rules by input interface, table tunEchoTable) and routes what comes back
// out of it (input interface: the tun, so the main table) on to the other
// side, both directions, as a translator's traffic goes. It measures the
// floor of any tun translator on the machine: the tun's two copies, two
// system calls and wake-up per packet and the kernel's second routing pass,
// without any translation.
const (
	tunEchoTun = "bn-tunecho"
	// tunEchoTable is the routing table of the detour; the rules that
	// select it take the preference of the same number.
	tunEchoTable = 100
	// tunEchoVnetHdr is the virtio_net_hdr size map646 sets on its own
	// tun (stack/tun VnetHdrLen): the same framing, the same offloads.
	tunEchoVnetHdr = 10
	// tunEchoQueues is the number of tun queues, one reader thread each:
	// map646 attaches one per core of the 2-core machines this runs on.
	tunEchoQueues = 2
	serverNet6    = "2001:db8:6::/64"
	clientNet6    = "2001:db8:1::/64"
)

// tunEchoTranslator runs bench/tunecho on a multi-queue tun that the
// harness opens in the router namespace (as for map646-fd) and hands over
// as descriptors 3 onwards.
type tunEchoTranslator struct {
	bin, dir string
	queues   int
	uring    bool // the echo's io_uring loop (-uring)
	proc     *process
	tuns     []*os.File // the harness's copies of the queues
}

func (x *tunEchoTranslator) tunName() string { return tunEchoTun }

// tunEchoRoutes are the router's `ip -batch` lines that bring the tun up
// and route both IPv6 prefixes into it in the detour's table.
func tunEchoRoutes(tun string) []string {
	return []string{
		fmt.Sprintf("link set %s mtu %d up", tun, mtu6),
		fmt.Sprintf("route replace %s dev %s table %d", serverNet6, tun, tunEchoTable),
		fmt.Sprintf("route replace %s dev %s table %d", clientNet6, tun, tunEchoTable),
	}
}

// tunEchoRules are the IPv6 policy rules (arguments of `ip -6 rule add`)
// that send what arrives on either veth through the detour's table. What
// the echo writes back arrives on the tun and takes the main table.
func tunEchoRules() [][]string {
	var out [][]string
	for _, ifc := range []string{router4If, router6If} {
		out = append(out, []string{"iif", ifc, "lookup", strconv.Itoa(tunEchoTable), "pref", strconv.Itoa(tunEchoTable)})
	}
	return out
}

func (x *tunEchoTranslator) start(ctx context.Context, t topology) (*process, error) {
	fs, err := openTunQueuesIn(t.Router, tunEchoTun, x.queues, tunEchoVnetHdr)
	if err != nil {
		return nil, err
	}
	x.tuns = fs
	if err := ipBatch(ctx, t.Router, tunEchoRoutes(tunEchoTun)); err != nil {
		return nil, err
	}
	for _, r := range tunEchoRules() {
		if _, err := run(ctx, append([]string{"ip", "-n", t.Router, "-6", "rule", "add"}, r...)...); err != nil {
			return nil, err
		}
	}
	argv, log := []string{x.bin, "-queues", strconv.Itoa(len(fs))}, "tunecho.log"
	if x.uring {
		argv, log = append(argv, "-uring"), "tunecho-uring.log"
	}
	p, err := startEcho(ctx, t, filepath.Join(x.dir, log), fs, argv)
	if p != nil {
		x.proc = p
	}
	return p, err
}

// startEcho starts an echo (bench/tunecho, bench/pktecho) in the router
// namespace with files inherited from fd 3 on, and waits until native
// IPv6 passes through it; the process is returned whenever it started.
func startEcho(ctx context.Context, t topology, logPath string, files []*os.File, argv []string) (*process, error) {
	p, err := startInWith(t.Router, logPath, files, argv...)
	if err != nil {
		return nil, err
	}
	if err := waitForwardTo(ctx, t, p, server6, 15*time.Second); err != nil {
		return p, err
	}
	return p, nil
}

// stop ends the echo, closes the tun (its routes go with it) and removes
// the rules, so that the router forwards natively again.
func (x *tunEchoTranslator) stop(ctx context.Context, t topology) error {
	var err error
	if x.proc != nil {
		err = x.proc.stop(5 * time.Second)
		x.proc = nil
	}
	for _, f := range x.tuns {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	x.tuns = nil
	for _, r := range tunEchoRules() {
		// Best effort: absent when start failed before adding them.
		_, _ = run(ctx, append([]string{"ip", "-n", t.Router, "-6", "rule", "del"}, r...)...)
	}
	return err
}

// buildBenchTool compiles bench/NAME into dir, statically; hint follows
// the failing command's name in the error.
func buildBenchTool(ctx context.Context, dir, name, hint string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/map646/map646/bench/"+name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build bench/%s%s: %w\n%s", name, hint, err, out)
	}
	return bin, nil
}

// buildTunEcho compiles bench/tunecho into dir, for runs that do not name
// a binary with -tun-echo. It needs the module's source: the harness runs
// from the repository (go run ./bench/netns).
func buildTunEcho(ctx context.Context, dir string) (string, error) {
	return buildBenchTool(ctx, dir, "tunecho", " (or give -tun-echo PATH)")
}
