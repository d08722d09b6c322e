// Package failovertest holds the failover experiment (two translators
// behind a BGP router, an IPv6-only server that learns its way back from
// router advertisements) and the network namespace helpers that it and the
// BGP and RA tests share.
package failovertest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RequireNetns skips the test unless it may create network namespaces:
// root, the ip command, and a kernel that lets us unshare a namespace.
func RequireNetns(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	name := fmt.Sprintf("fo-probe-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace: %v: %s", err, out)
	}
	exec.Command("ip", "netns", "del", name).Run()
}

// Netns is a network namespace created for a test and deleted after it.
type Netns struct {
	Name string
	t    testing.TB
}

// NewNetns creates the namespace fo-<name>-<pid> with loopback up.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	n := &Netns{Name: fmt.Sprintf("fo-%s-%d", name, os.Getpid()), t: t}
	exec.Command("ip", "netns", "del", n.Name).Run() // leftover of a killed run
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.Name).Run() })
	n.Run("ip", "link", "set", "lo", "up")
	n.Sysctl("net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
	return n
}

// Run runs a command in the namespace and fails the test if it fails.
func (n *Netns) Run(args ...string) string {
	n.t.Helper()
	out, err := n.Output(args...)
	if err != nil {
		n.t.Fatalf("%s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Output runs a command in the namespace and returns its combined output.
func (n *Netns) Output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// Command returns a command that will run in the namespace.
func (n *Netns) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// Sysctl sets a sysctl inside the namespace.
func (n *Netns) Sysctl(kv ...string) {
	n.t.Helper()
	for _, s := range kv {
		n.Run("sysctl", "-qw", s)
	}
}

// Do runs f on an OS thread that has entered the namespace, so that sockets
// f opens belong to it; goroutines f starts keep using those sockets after
// Do returns.
func (n *Netns) Do(f func()) {
	n.t.Helper()
	if err := Do(n.Name, f); err != nil {
		n.t.Fatal(err)
	}
}

// Do runs f inside the named namespace (see Netns.Do).
func Do(name string, f func()) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine rather than
		// run other goroutines in the wrong namespace.
		return fmt.Errorf("setns back from %s: %w", name, err)
	}
	runtime.UnlockOSThread()
	return nil
}

var vethSeq atomic.Uint32

// Veth connects namespace a (interface ifa) and b (interface ifb).
func Veth(t testing.TB, a *Netns, ifa string, b *Netns, ifb string) {
	t.Helper()
	// Temporary names unique across processes (pid) and within one
	// (counter), within IFNAMSIZ.
	tmp := fmt.Sprintf("fo%d-%d", os.Getpid()%100000, vethSeq.Add(1)%1000)
	if out, err := exec.Command("ip", "link", "add", tmp+"a", "type", "veth", "peer", "name", tmp+"b").CombinedOutput(); err != nil {
		t.Fatalf("veth: %v: %s", err, out)
	}
	for _, x := range []struct {
		tmp, name string
		ns        *Netns
	}{{tmp + "a", ifa, a}, {tmp + "b", ifb, b}} {
		if out, err := exec.Command("ip", "link", "set", x.tmp, "netns", x.ns.Name).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", x.tmp).Run()
			t.Fatalf("veth to %s: %v: %s", x.ns.Name, err, out)
		}
		x.ns.Run("ip", "link", "set", x.tmp, "name", x.name)
		// No DAD: addresses, the link-local one included, are usable at once.
		x.ns.Sysctl("net.ipv6.conf." + x.name + ".accept_dad=0")
		x.ns.Run("ip", "link", "set", x.name, "up")
	}
}
