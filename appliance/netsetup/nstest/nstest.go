// Package nstest gives tests their own network namespaces: created with a
// caller-chosen name prefix, entered on a locked OS thread, removed when the
// test ends. Tests that need one skip, saying why, only when the machine
// truly cannot make namespaces (not root, no /proc/self/ns/net).
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace (visible to `ip netns exec`).
type NS struct {
	Name   string
	handle netns.NsHandle
}

var counter atomic.Uint32

// Available reports why namespaces cannot be used here, or "" if they can.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root to create network namespaces"
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return "kernel without network namespaces: " + err.Error()
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "needs iproute2 (ip): " + err.Error()
	}
	return ""
}

// New creates a namespace named prefix + a unique suffix, with loopback
// up and IPv6 duplicate address detection off, and deletes it at the end of the test. It skips the test when
// namespaces are unavailable.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip(why)
	}
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid()%100000, counter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	ns := &NS{Name: name, handle: h}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	// No duplicate address detection on links made later: a tentative
	// link-local address holds IPv6 neighbour discovery, and so the first
	// second of traffic, back.
	ns.MustRun(t, "sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// Do runs fn on an OS thread that is inside the namespace. Sockets and
// files that fn opens stay bound to the namespace; goroutines that fn
// starts do not run inside it.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// The thread is never unlocked: it exits with the goroutine
		// rather than going back to the pool in the wrong namespace.
		if err := netns.Set(ns.handle); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Run runs a command inside the namespace and returns its combined output.
func (ns *NS) Run(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// MustRun is Run that fails the test on error.
func (ns *NS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Run(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}
