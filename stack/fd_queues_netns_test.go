package stack

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// TestNetnsFDQueuesAreDistinct: the descriptors of a tun served as several
// queues must be that many queues: two readers of one queue (a tun opened
// without IFF_MULTI_QUEUE, which has one; the same queue's descriptor
// handed over twice) would take its packets in turn and reorder every
// flow, so ServeFDQueues refuses them, naming the descriptors.
func TestNetnsFDQueuesAreDistinct(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdqd-")
	var single int
	var multi []int
	if err := ns.Do(func() (err error) {
		if single, err = openVnetTun("dp-sq0", false); err != nil {
			return err
		}
		multi, err = openTunQueues("dp-mq0", 2, maxVnetHdr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(single)
	defer func() {
		for _, fd := range multi {
			unix.Close(fd)
		}
	}()
	dup := func(fd int) int {
		d, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(d) })
		return d
	}
	for _, c := range []struct {
		name string
		fds  []int
		want string // "" : served
	}{
		{name: "one queue twice", fds: []int{single, dup(single)}, want: "IFF_MULTI_QUEUE"},
		{name: "a queue of a multi-queue tun twice", fds: []int{multi[0], dup(multi[0])}, want: "the same queue"},
		{name: "two queues", fds: multi},
		{name: "one queue", fds: []int{single}},
	} {
		t.Run(c.name, func(t *testing.T) { serveFDsOrRefuse(t, c.fds, maxVnetHdr, c.want) })
	}
}

// TestNetnsFDQueuesAllHandedOver: the descriptors of a multi-queue tun
// must be all the queues attached to it. The kernel spreads flows over
// every attached queue, so with 3 attached and 2 handed over a third of
// the flows would go to a queue nobody here reads while every served
// queue looks healthy: ServeFDQueues refuses that, saying how many queues
// the tun has. A queue detached with IFF_DETACH_QUEUE gets no packets and
// does not count. The tun lives in a namespace of its own, as an
// inherited one may, so the count comes from a sysfs mounted for that
// namespace (attachedQueues); from inside the namespace, from /sys.
func TestNetnsFDQueuesAllHandedOver(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdqa-")
	var three, detached []int
	if err := ns.Do(func() (err error) {
		if three, err = openTunQueues("dp-mq3", 3, 0); err != nil {
			return err
		}
		if detached, err = openTunQueues("dp-mqd", 3, 0); err != nil {
			return err
		}
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_DETACH_QUEUE)
		if err := unix.IoctlIfreq(detached[2], unix.TUNSETQUEUE, ifr); err != nil {
			return fmt.Errorf("TUNSETQUEUE IFF_DETACH_QUEUE: %w", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, fd := range append(append([]int(nil), three...), detached...) {
		defer unix.Close(fd)
	}
	if got := ns.Run("ls", "/sys/class/net/dp-mq3/queues"); strings.Count(got, "rx-") != 3 {
		t.Fatalf("ip netns exec ls /sys/class/net/dp-mq3/queues: %q, want 3 rx queues", got)
	}
	t.Run("count", func(t *testing.T) {
		for _, c := range []struct {
			fd   int
			name string
			want int
		}{{three[0], "dp-mq3", 3}, {detached[0], "dp-mqd", 2}} {
			n, err := attachedQueues(c.fd, c.name)
			if err != nil || n != c.want {
				t.Errorf("attachedQueues(%s) from outside its namespace = %d, %v; want %d", c.name, n, err, c.want)
			}
			if err := ns.Do(func() error {
				n, err := attachedQueues(c.fd, c.name)
				if err != nil || n != c.want {
					return fmt.Errorf("attachedQueues(%s) from inside its namespace = %d, %v; want %d", c.name, n, err, c.want)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
	})
	for _, c := range []struct {
		name string
		fds  []int
		want string // "": served
	}{
		{name: "2 of 3 queues", fds: three[:2], want: "tun dp-mq3 has 3 queues attached but 2 of them were handed over"},
		{name: "1 of 3 queues", fds: three[2:], want: "has 3 queues attached but 1 of them"},
		{name: "all 3 queues", fds: three},
		{name: "the 2 attached queues of 3", fds: detached[:2]},
	} {
		t.Run(c.name, func(t *testing.T) { serveFDsOrRefuse(t, c.fds, 0, c.want) })
	}
}

// TestNetnsFDQueuesAttachedLater: a queue attached to the inherited tun
// after the data path started (another process's TUNSETIFF) takes flows
// nobody here reads: Check reports it, naming the tun, within a recount
// (queueRecountEvery), and is content again once that queue is detached.
func TestNetnsFDQueuesAttachedLater(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdql-")
	defer func(e time.Duration) { queueRecountEvery = e }(queueRecountEvery)
	queueRecountEvery = 0
	var two, third []int
	if err := ns.Do(func() (err error) {
		two, err = openTunQueues("dp-mql", 2, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range append(two, third...) {
			unix.Close(fd)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := ServeFDQueues(ctx, testEngine(t), two, 1500, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Wait()
	defer cancel()
	if err := d.Check(); err != nil {
		t.Fatalf("all queues served: %v", err)
	}
	// From here on no sysfs can be mounted, as for a daemon that gave up
	// CAP_SYS_ADMIN after set-up (run_as): the counts must not need one.
	defer func(m func(string, string, string, uintptr, string) error) { mountFS = m }(mountFS)
	mountFS = func(string, string, string, uintptr, string) error { return unix.EPERM }
	if err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		third = append(third, fd)
		ifr, err := unix.NewIfreq("dp-mql")
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
		return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), "tun dp-mql has 3 queues attached now, 2 of them served here") {
		t.Fatalf("Check with a third queue attached = %v", err)
	}
	if d.Healthy() {
		t.Fatal("healthy with a third of the flows going to a queue nobody reads")
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_DETACH_QUEUE)
	if err := unix.IoctlIfreq(third[0], unix.TUNSETQUEUE, ifr); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatalf("Check with the third queue detached again = %v", err)
	}
}

// TestNetnsTapQueuesAllHandedOver: a tap opened with IFF_MULTI_QUEUE
// spreads flows over its queues as a tun does, so ServeTap, which serves
// one descriptor, refuses a tap that has another queue attached.
func TestNetnsTapQueuesAllHandedOver(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-tapqa-")
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if err := ns.Do(func() error {
		for range 2 {
			fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			ifr, err := unix.NewIfreq("dp-tapq")
			if err != nil {
				return err
			}
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
			if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
				return fmt.Errorf("TUNSETIFF: %w", err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if d, err := ServeTap(ctx, testEngine(t), TapConfig{FD: fds[0], MTU: 1500, MAC: tapMAC}, nil); err == nil || !strings.Contains(err.Error(), "tap dp-tapq has 2 queues attached but 1 of them were handed over") {
		if err == nil {
			cancel()
			d.Wait()
		}
		t.Fatalf("ServeTap on 1 of 2 queues: %v", err)
	}
	unix.Close(fds[1])
	fds = fds[:1]
	d, err := ServeTap(ctx, testEngine(t), TapConfig{FD: fds[0], MTU: 1500, MAC: tapMAC}, nil)
	if err != nil {
		t.Fatalf("ServeTap on the only queue: %v", err)
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Error(err)
	}
}

// TestNetnsFDDetachedQueue: a queue detached with IFF_DETACH_QUEUE keeps
// its device (TUNGETIFF answers) but receives nothing. Handed over, it is
// attached again and served, with a warning; and a detached queue handed
// over with another process's attached queue left out is refused, as
// that queue takes flows nobody here reads (counting alone would see 2
// queues attached for 2 descriptors).
func TestNetnsFDDetachedQueue(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fddq-")
	fds := tunQueuesIn(t, ns, "dp-mqx", 3)
	detach := func(fd int) {
		t.Helper()
		ifr, err := unix.NewIfreq("")
		if err != nil {
			t.Fatal(err)
		}
		ifr.SetUint16(unix.IFF_DETACH_QUEUE)
		if err := unix.IoctlIfreq(fd, unix.TUNSETQUEUE, ifr); err != nil {
			t.Fatal(err)
		}
	}
	detach(fds[1])
	detach(fds[2])
	// fds[0] and the detached fds[1] handed over, fds[2] detached
	// (nobody's): both served, fds[1] attached again.
	var logged bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	d, err := ServeFDQueues(ctx, testEngine(t), fds[:2], 1500, 0, slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := attachedQueues(fds[0], "dp-mqx"); err != nil || n != 2 {
		t.Errorf("%d queues attached while serving, %v; want 2", n, err)
	}
	if want := fmt.Sprintf("fd %d was a detached queue", fds[1]); !strings.Contains(logged.String(), want) {
		t.Errorf("log %q, want it to say %q", logged.String(), want)
	}
	cancel()
	if err := d.Wait(); err != nil {
		t.Fatal(err)
	}
	// Now fds[1] is attached and fds[2] detached: fds[0] and fds[2]
	// handed over leave fds[1] attached and unread.
	// The refusal leaves fds[2] detached, as it was handed over.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	d, err = ServeFDQueues(ctx, testEngine(t), []int{fds[0], fds[2]}, 1500, 0, nil)
	if err == nil {
		cancel()
		d.Wait()
		t.Fatal("served 2 queues of a tun that has 3 attached once the detached one is attached")
	}
	if want := "has 3 queues attached but 2 of them were handed over"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
	if n, err := attachedQueues(fds[0], "dp-mqx"); err != nil || n != 2 {
		t.Errorf("%d queues attached after the refusal, %v; want 2 (fds[2] detached again)", n, err)
	}
}

// TestNetnsFDQueuesCountedFromOwnSysfs: a daemon in the tun's namespace
// with that namespace's sysfs on /sys (as `ip netns exec` and a
// container give it) counts the queues from /sys, with no right to mount
// anything: the test binary runs itself there without CAP_SYS_ADMIN,
// opens a tun of 3 queues and checks 2 of them.
func TestNetnsFDQueuesCountedFromOwnSysfs(t *testing.T) {
	if os.Getenv("MAP646_QUEUES_HELPER") == "1" {
		countFromOwnSysfs(t)
		return
	}
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdqo-")
	out, err := ns.Output("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin",
		"env", "MAP646_QUEUES_HELPER=1", os.Args[0], "-test.run=^TestNetnsFDQueuesCountedFromOwnSysfs$", "-test.count=1", "-test.v")
	if err != nil || !strings.Contains(out, "--- PASS: TestNetnsFDQueuesCountedFromOwnSysfs") {
		t.Fatalf("without CAP_SYS_ADMIN in the tun's namespace: %v\n%s", err, out)
	}
}

// countFromOwnSysfs is TestNetnsFDQueuesCountedFromOwnSysfs inside the
// namespace.
func countFromOwnSysfs(t *testing.T) {
	fds, err := openTunQueues("dp-own", 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	nsfd, err := unix.IoctlRetInt(fds[0], tunGetDevNetns)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	if dir, err := openQueuesInNetns(nsfd, "dp-own"); err == nil {
		dir.Close()
		t.Fatal("a sysfs was mounted without CAP_SYS_ADMIN: this run does not show that /sys was read")
	}
	if n, err := attachedQueues(fds[0], "dp-own"); err != nil || n != 3 {
		t.Fatalf("attachedQueues = %d, %v; want 3", n, err)
	}
	infos := []FDInfo{{Tun: true, MultiQueue: true, Interface: "dp-own"}, {Tun: true, MultiQueue: true, Interface: "dp-own"}}
	_, err = checkAllQueues(fds[:2], infos, func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), "tun dp-own has 3 queues attached but 2 of them were handed over") {
		t.Fatalf("checkAllQueues on 2 of 3 queues: %v", err)
	}
}

// TestNetnsFDQueuesLeaveTheMainThread: counting the queues of a tun in
// another namespace (a sysfs mounted on a thread in that namespace) leaves
// the process's main thread alone, whose namespaces /proc/PID/ns/net and
// /proc/PID/mountinfo show (`ip netns identify PID`, `nsenter -t PID`),
// however often it is done: a goroutine that locks its thread and exits
// on the main thread does not end it but parks it for good, in the
// tun's namespaces.
func TestNetnsFDQueuesLeaveTheMainThread(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdqm-")
	fds := tunQueuesIn(t, ns, "dp-mqm", 2)
	mainNetns := func() uint64 {
		var st unix.Stat_t
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", os.Getpid()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	sysfsMounts := func() int {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), " - sysfs ")
	}
	ino, mounts := mainNetns(), sysfsMounts()
	for i := range 200 {
		if n, err := attachedQueues(fds[0], "dp-mqm"); err != nil || n != 2 {
			t.Fatalf("count %d: %d queues, %v; want 2", i, n, err)
		}
		if got := mainNetns(); got != ino {
			t.Fatalf("count %d: the main thread is in network namespace %d now, not %d", i, got, ino)
		}
	}
	if got := sysfsMounts(); got != mounts {
		t.Errorf("the main thread sees %d sysfs mounts after the counts, %d before", got, mounts)
	}
}

// serveFDsOrRefuse serves fds (with a virtio_net_hdr of vnet bytes) and
// stops again if want is empty; otherwise ServeFDQueues must refuse them
// with an error that says want.
func serveFDsOrRefuse(t *testing.T, fds []int, vnet int, want string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d, err := ServeFDQueues(ctx, testEngine(t), fds, 1500, vnet, nil)
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := d.Wait(); err != nil {
			t.Error(err)
		}
		return
	}
	if err == nil {
		cancel()
		d.Wait()
		t.Fatalf("served %v", fds)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
}

// tunQueuesIn opens the queues queues of a multi-queue tun named name
// (no virtio_net_hdr) in ns, closed when the test ends.
func tunQueuesIn(t *testing.T, ns *netnstest.NS, name string, queues int) []int {
	t.Helper()
	var fds []int
	if err := ns.Do(func() (err error) {
		fds, err = openTunQueues(name, queues, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	return fds
}
