package qemutests

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

var nsCounter atomic.Int32

// netns is a network namespace this test created (named qm-<pid>-<n>).
type netns struct {
	t    *testing.T
	name string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	name := fmt.Sprintf("qm-%d-%d", os.Getpid(), nsCounter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n := &netns{t: t, name: name}
	// No duplicate address detection: a tentative address would hold the
	// first packets for a second or more.
	n.run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	n.ip("link", "set", "lo", "up")
	return n
}

// exec runs a command inside the namespace and returns its output.
func (n *netns) exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.name}, args...)...).CombinedOutput()
	return string(out), err
}

func (n *netns) run(args ...string) string {
	n.t.Helper()
	out, err := n.exec(args...)
	if err != nil {
		n.t.Fatalf("%s: %s: %v\n%s", n.name, strings.Join(args, " "), err, out)
	}
	return out
}

func (n *netns) ip(args ...string) string {
	n.t.Helper()
	return n.run(append([]string{"ip"}, args...)...)
}

// do runs fn on an OS thread that has entered the namespace: sockets fn
// creates belong to it and keep working after the thread leaves.
func (n *netns) do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + n.name)
	if err != nil {
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", n.name, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// This thread cannot go back: let it die with the goroutine.
		runtime.Goexit()
	}
	return ferr
}

// tap creates a tap device inside the namespace and returns its file, for
// QEMU's -netdev tap,fd=N. The device lives as long as a copy of the fd.
func (n *netns) tap(name string) *os.File {
	n.t.Helper()
	var f *os.File
	err := n.do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { f.Close() })
	return f
}
