package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/stack"
)

// The fd mode's plumbing: the tun is created inside the router namespace
// (not the harness's), reaches the child as descriptor 3 through `ip netns
// exec`, and disappears when the last descriptor closes.
func TestOpenTunInPassesFD3(t *testing.T) {
	netnstest.RequireTun(t, "bn-")
	ns := netnstest.New(t, "bn-")
	const name = "bn-fdtest"
	f, err := openTunIn(ns.Name, name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if out, err := ns.Output("ip", "link", "show", name); err != nil {
		t.Fatalf("tun not in %s: %v: %s", ns.Name, err, out)
	}
	if _, err := os.Stat("/sys/class/net/" + name); err == nil {
		t.Errorf("tun %s also appeared in the harness's namespace", name)
	}
	// The child reports what its fd 3 is and which tun it is attached to.
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := startInWith(ns.Name, log, []*os.File{f}, "sh", "-c", "readlink /proc/self/fd/3; grep iff /proc/self/fdinfo/3")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.stop(time.Second)
		t.Fatal("child did not exit")
	}
	b, _ := os.ReadFile(log)
	if p.err != nil || !strings.Contains(string(b), "/dev/net/tun") || !strings.Contains(string(b), name) {
		t.Errorf("child's fd 3: %v\n%s", p.err, b)
	}
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := ns.Output("ip", "link", "show", name); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tun %s still exists after its last descriptor closed", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NIC mode: the router's kernel forwarding is off while the translator
// runs (the fake prints what it sees) and on again once it is stopped, also
// when the translator never forwarded. The client's and server's veth
// offloads (tx checksum offload, TSO, GSO) are left as they are: NIC mode
// passes partial checksums and super-packets on.
func TestNICModeTurnsForwardingOff(t *testing.T) {
	netnstest.Require(t, "bn-")
	ns := netnstest.New(t, "bn-")
	ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	ns.Run("ip", "link", "add", clientIf, "type", "veth", "peer", "name", serverIf)
	// The server's veth starts with TSO off: the harness must not touch
	// either interface's state.
	ns.Run("ethtool", "-K", serverIf, "tso", "off")
	want := map[string]string{clientIf: "on on on", serverIf: "on off on"}
	for ifc, w := range want {
		if got := csumState(t, ns, ifc); got != w {
			t.Fatalf("%s before start: %q, want %q", ifc, got, w)
		}
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "map646")
	script := "#!/bin/sh\nsysctl -n net.ipv4.ip_forward net.ipv6.conf.all.forwarding | tr '\\n' ' '\necho\n" +
		"for i in " + clientIf + " " + serverIf + "; do ethtool -k $i | grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload):' | tr '\\n' ' '; echo; done\nexec sleep 600\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	topo := topology{Client: ns.Name, Router: ns.Name, Server: ns.Name}
	x := &map646Translator{bin: fake, dir: dir, mappings: 1, name: "nic", limit: time.Second, mode: modeNIC}
	ctx := t.Context()
	_, err := x.start(ctx, topo)
	if err == nil || !strings.Contains(err.Error(), "no echo reply") {
		t.Errorf("start: %v", err)
	}
	if err := x.stop(ctx, topo); err != nil {
		t.Errorf("stop: %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "nic.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || strings.TrimSpace(lines[0]) != "0 0" {
		t.Fatalf("translator saw:\n%s\nwant forwarding \"0 0\" and two offload lines", b)
	}
	for i, l := range lines[1:] {
		ifc := []string{clientIf, serverIf}[i]
		if got := strings.Join(strings.Fields(strings.NewReplacer("tx-checksumming:", "", "tcp-segmentation-offload:", "", "generic-segmentation-offload:", "").Replace(l)), " "); got != want[ifc] {
			t.Errorf("%s offloads seen by the translator: %q, want them unchanged, %q", ifc, l, want[ifc])
		}
	}
	for ifc, w := range want {
		if got := csumState(t, ns, ifc); got != w {
			t.Errorf("%s after stop: %q, want %q", ifc, got, w)
		}
	}
	if out := strings.Fields(ns.Run("sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding")); strings.Join(out, " ") != "1 1" {
		t.Errorf("forwarding after stop: %v, want 1 1", out)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, "nic.hcl"))
	if !strings.Contains(string(conf), `ipv4 = "rtr4"`) {
		t.Errorf("NIC config:\n%s", conf)
	}
}

// openTunIn must not end the thread it borrows: the harness's children are
// started with Pdeathsig, which the kernel fires when the thread that forked
// the child ends, and an ended thread took the iperf3 server with it (every
// later TCP test was refused). No thread that existed before the calls may be
// gone after them, and a child started before them is still running.
func TestOpenTunInKeepsThreads(t *testing.T) {
	netnstest.RequireTun(t, "bn-")
	ns := netnstest.New(t, "bn-")
	child, err := startIn(ns.Name, filepath.Join(t.TempDir(), "sleep.log"), "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	defer child.stop(time.Second)
	before := threads(t)
	for i := range 20 {
		f, err := openTunIn(ns.Name, fmt.Sprintf("bn-kt%d", i))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	after := threads(t)
	for tid := range before {
		if !after[tid] {
			t.Errorf("thread %s ended during openTunIn", tid)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if child.exited() {
		t.Errorf("a child started before openTunIn was killed: %v", child.err)
	}
	if _, err := os.Stat("/sys/class/net/bn-kt0"); err == nil {
		t.Error("a tun appeared in the harness's namespace")
	}
}

// threads returns the ids of the test process's threads.
func threads(t *testing.T) map[string]bool {
	es, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]bool{}
	for _, e := range es {
		m[e.Name()] = true
	}
	return m
}

// csumState is an interface's tx-checksumming, TSO and GSO state, "on off on".
func csumState(t *testing.T, ns *netnstest.NS, ifc string) string {
	t.Helper()
	st := parseEthtoolK(ns.Run("ethtool", "-k", ifc), offloadFeatures)
	return st["tx-checksumming"] + " " + st["tcp-segmentation-offload"] + " " + st["generic-segmentation-offload"]
}

// The fd setups hand over what a VM manager would: a tun with
// IFF_VNET_HDR, a 12-byte virtio_net_hdr and TSO set, which map646 reads
// off the fd; map646-fd-plain's tun has none of them.
func TestOpenTunVnet(t *testing.T) {
	netnstest.RequireTun(t, "bn-")
	ns := netnstest.New(t, "bn-")
	for _, c := range []struct {
		name string
		vnet int
		tso  string
	}{{"bn-vnet", vmVnetHdr, "on"}, {"bn-plain", 0, "off"}} {
		fs, err := openTunQueuesIn(ns.Name, c.name, 1, c.vnet)
		if err != nil {
			t.Fatal(err)
		}
		defer fs[0].Close()
		info, err := stack.ProbeFD(int(fs[0].Fd()))
		if err != nil || !info.Tun || info.VnetHdr != c.vnet {
			t.Errorf("%s: ProbeFD %+v, %v; want a virtio_net_hdr of %d", c.name, info, err, c.vnet)
		}
		out, err := ns.Output("ethtool", "-k", c.name)
		if err != nil {
			testenv.SkipOrFailf(t, "ethtool: %v", err)
		}
		if !strings.Contains(out, "tcp-segmentation-offload: "+c.tso) {
			t.Errorf("%s: TSO not %s:\n%s", c.name, c.tso, out)
		}
	}
}
