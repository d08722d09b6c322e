// Package netnstest gives tests throw-away network namespaces: created with
// a caller-chosen name prefix, entered on a locked OS thread, deleted when
// the test ends. Each test package keeps its own prefix (dp-, dm-, qm-, fo-,
// bn-...) so that packages whose tests run in parallel never collide.
package netnstest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/testenv"
)

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

// Require stops t unless it may create network namespaces: root, iproute2,
// and a kernel that really lets us add one (checked by adding and deleting
// a probe namespace named prefix + "probe-" + pid). It skips, or fails on
// CI (testenv.SkipOrFail).
func Require(t testing.TB, prefix string) {
	t.Helper()
	if why := Available(); why != "" {
		testenv.SkipOrFail(t, why)
	}
	name := fmt.Sprintf("%sprobe-%d", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		testenv.SkipOrFailf(t, "cannot create a network namespace: %v: %s", err, out)
	}
	exec.Command("ip", "netns", "del", name).Run()
}

// RequireTun is Require plus /dev/net/tun, for tests that open tun devices.
func RequireTun(t testing.TB, prefix string) {
	t.Helper()
	Require(t, prefix)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFailf(t, "needs /dev/net/tun: %v", err)
	}
}

// NS is a named network namespace (visible to `ip netns exec`).
type NS struct {
	Name string
	t    testing.TB
}

var seq atomic.Uint32

// New creates namespace prefix<pid>-<n> with loopback up and IPv6 duplicate
// address detection off, and deletes it when t ends. It skips t when
// namespaces are unavailable, or fails it on CI.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	if why := Available(); why != "" {
		testenv.SkipOrFail(t, why)
	}
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), seq.Add(1))
	exec.Command("ip", "netns", "del", name).Run() // leftover of a killed run with the same pid
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	// No duplicate address detection on links made later: a tentative
	// link-local address holds IPv6 neighbour discovery, and so the first
	// second of traffic, back.
	ns.Run("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	ns.Run("ip", "link", "set", "lo", "up")
	return ns
}

// Command returns a command that will run inside the namespace.
func (ns *NS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

// Output runs a command inside the namespace (killed after 30 s) and
// returns its combined output.
func (ns *NS) Output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	out := b.String()
	if len(args) > 0 && args[0] == "ip" {
		out = numericProto(out, proto64Name)
	}
	return out, err
}

// proto64Name is the name iproute2 on this host gives protocol 64 (the
// translator's routes and rules: netsetup.RouteProtocol, RuleProtocol),
// "" if none: the docs suggest naming it in /etc/iproute2/rt_protos.d.
var proto64Name = protoName(protoFiles(), 64)

// protoFiles are iproute2's protocol name files, in the order it reads
// them (later ones win): the distribution's, then /etc's.
func protoFiles() []string {
	var fs []string
	for _, dir := range []string{"/usr/lib/iproute2", "/usr/share/iproute2", "/etc/iproute2"} {
		fs = append(fs, dir+"/rt_protos")
		d, _ := filepath.Glob(dir + "/rt_protos.d/*.conf")
		fs = append(fs, d...)
	}
	return fs
}

// protoName is the name files give protocol num ("64 map646" or "0x40
// map646" lines, # comments), "" if none does; the last one wins.
func protoName(files []string, num uint64) string {
	name := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			l, _, _ = strings.Cut(l, "#")
			fs := strings.Fields(l)
			if len(fs) < 2 {
				continue
			}
			if n, err := strconv.ParseUint(fs[0], 0, 8); err == nil && n == num {
				name = fs[1]
			}
		}
	}
	return name
}

// numericProto is ip's output out with protocol 64 as a number where
// name (protoName) named it: tests compare `ip route` and `ip rule`
// output with "proto 64", which a host that names the protocol would
// otherwise fail.
func numericProto(out, name string) string {
	if name == "" || name == "64" {
		return out
	}
	re := regexp.MustCompile(`proto ` + regexp.QuoteMeta(name) + `(\s|$)`)
	return re.ReplaceAllString(out, "proto 64$1")
}

// Run runs a command inside the namespace, fails the test that created the
// namespace if it fails, and returns its combined output.
func (ns *NS) Run(args ...string) string {
	ns.t.Helper()
	return ns.MustRun(ns.t, args...)
}

// MustRun is Run failing t (a subtest or benchmark) instead.
func (ns *NS) MustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Output(args...)
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Sysctl sets sysctls ("key=value") inside the namespace.
func (ns *NS) Sysctl(kv ...string) {
	ns.t.Helper()
	for _, s := range kv {
		ns.Run("sysctl", "-qw", s)
	}
}

// Do runs f on the calling goroutine's OS thread after it has entered the
// namespace, then returns the thread to where it was. Sockets, tun and tap
// devices f opens belong to the namespace for good and can be used from any
// goroutine afterwards; goroutines f starts do not run inside it.
func (ns *NS) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", ns.Name, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with this goroutine rather
		// than run other goroutines in the wrong namespace.
		return fmt.Errorf("setns back from %s: %w", ns.Name, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

var vethSeq atomic.Uint32

// Veth connects a (interface nameA) and b (interface nameB) with a veth
// pair and sets both ends up with duplicate address detection off. The
// pair is made in the caller's namespace under temporary names unique
// across processes (pid) and within one (counter), then moved and renamed.
// A pair made directly inside the namespaces left srv0 without a link-local
// address when appliance/ra's TestAdvertiserLinux opened it; this way does not.
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string) {
	t.Helper()
	tmp := fmt.Sprintf("nt%d-%d", os.Getpid()%100000, vethSeq.Add(1)%1000)
	if out, err := exec.Command("ip", "link", "add", tmp+"a", "type", "veth", "peer", "name", tmp+"b").CombinedOutput(); err != nil {
		t.Fatalf("veth %s/%s - %s/%s: %v: %s", a.Name, nameA, b.Name, nameB, err, out)
	}
	for _, x := range []struct {
		tmp, name string
		ns        *NS
	}{{tmp + "a", nameA, a}, {tmp + "b", nameB, b}} {
		if out, err := exec.Command("ip", "link", "set", x.tmp, "netns", x.ns.Name).CombinedOutput(); err != nil {
			exec.Command("ip", "link", "del", x.tmp).Run()
			t.Fatalf("veth to %s: %v: %s", x.ns.Name, err, out)
		}
		x.ns.MustRun(t, "ip", "link", "set", x.tmp, "name", x.name)
		x.ns.MustRun(t, "sysctl", "-qw", "net.ipv6.conf."+x.name+".accept_dad=0")
		x.ns.MustRun(t, "ip", "link", "set", x.name, "up")
	}
}

// Tap creates tap device name inside the namespace and returns its file,
// for QEMU's -netdev tap,fd=N; the device lives as long as a copy of the fd.
// The file is closed when t ends.
func (ns *NS) Tap(t testing.TB, name string) *os.File {
	t.Helper()
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
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
		f = os.NewFile(uintptr(fd), "tap:"+name)
		return nil
	})
	if err != nil {
		t.Fatalf("tap %s in %s: %v", name, ns.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// OpenFDs lists the descriptors the process has open (the names in
// /proc/self/fd), for a test to check that what it set up (a tun, its
// queues, an io_uring, a namespace's handle) was closed: compare the
// lists before and after.
func OpenFDs(t testing.TB) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]bool{}
	for _, e := range ents {
		fds[e.Name()] = true
	}
	return fds
}
