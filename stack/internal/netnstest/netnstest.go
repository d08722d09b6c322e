// Package netnstest creates throw-away network namespaces for tests that
// need a real kernel: tun devices, veth pairs, routes. Every namespace is
// named with the data path's "dp-" prefix plus the test process id, and is
// deleted when its test ends.
package netnstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Require skips t unless it runs as root with /dev/net/tun and iproute2,
// the capabilities every netns test needs.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, tun)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
}

// NS is a network namespace created for one test.
type NS struct {
	Name string
	t    testing.TB
}

var seq atomic.Int32

// New creates namespace dp-<short>-<pid>-<n> with loopback up and IPv6
// duplicate address detection off, and removes it when t ends.
func New(t testing.TB, short string) *NS {
	t.Helper()
	name := fmt.Sprintf("dp-%s-%d-%d", short, os.Getpid(), seq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns.Run("ip", "link", "set", "lo", "up")
	// No duplicate address detection on interfaces created later: a
	// link-local address still tentative holds up neighbour discovery,
	// and so the first packets, for a second.
	ns.Run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	return ns
}

// Run runs a command inside the namespace and fails t if it fails; it
// returns the standard output.
func (ns *NS) Run(args ...string) string {
	ns.t.Helper()
	out, err := ns.Try(args...)
	if err != nil {
		ns.t.Fatalf("%s: %s", strings.Join(args, " "), err)
	}
	return out
}

// Try runs a command inside the namespace; the error includes its stderr.
func (ns *NS) Try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v: %s%s", err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.String(), nil
}

// Do runs f on an OS thread that has joined the namespace. Sockets and
// tun devices created by f belong to the namespace for good, so they can be
// used from any goroutine afterwards.
func (ns *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If restoring the namespace fails, the thread stays locked and
		// dies with this goroutine instead of serving others in ns.
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open("/var/run/netns/"+ns.Name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// Veth connects a (interface nameA) and b (nameB) with a veth pair.
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", "name", nameA, "netns", a.Name, "type", "veth",
		"peer", "name", nameB, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v: %s", a.Name, nameA, b.Name, nameB, err, out)
	}
	a.Run("ip", "link", "set", nameA, "up")
	b.Run("ip", "link", "set", nameB, "up")
}
