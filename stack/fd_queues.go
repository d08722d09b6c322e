package stack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// tunGetDevNetns is TUNGETDEVNETNS (include/uapi/linux/if_tun.h,
// _IO('T', 227), Linux 5.2): a descriptor of the network namespace the
// tun behind a queue's descriptor lives in. It needs CAP_NET_ADMIN there.
const tunGetDevNetns = 0x54e3

// errQueuesUnknown: the number of queues attached to a tun could not be
// read (no sysfs for its namespace, no right to mount one).
var errQueuesUnknown = errors.New("cannot tell how many queues the tun has")

// checkAllQueues refuses descriptors that are not every queue of their
// multi-queue tun. The kernel spreads the packets it sends into a tun
// over all its attached queues (drivers/net/tun.c: with no steering
// program, tun_automq_select_queue takes the flow hash modulo numqueues;
// fd mode installs none), so the flows hashed to a queue that another
// process holds, or that nobody reads, vanish while every queue served
// here is healthy. A tun's attached queues are its real_num_rx_queues
// (tun_set_real_num_queues, after every attach and detach, detached
// queues left out), which sysfs lists as queues/rx-N. infos are ProbeFD's
// answers for fds. Where the count cannot be read, warn is told why and
// the descriptors are served. A descriptor handed over that is a detached
// queue is attached first (attachQueue), so that the count of attached
// queues is the descriptors' own plus any other.
//
// A queue can still be attached later (TUNSETIFF by another process, or
// IFF_ATTACH_QUEUE on a descriptor kept detached): the queueCheck
// returned counts again (Datapath.Check); close releases what it keeps.
func checkAllQueues(fds []int, infos []FDInfo, warn func(msg string, args ...any)) (*queueCheck, error) {
	handed := map[string][]int{}
	kind := map[string]string{}
	var names []string
	for i, info := range infos {
		if !info.Tun || !info.MultiQueue {
			continue
		}
		if handed[info.Interface] == nil {
			names = append(names, info.Interface)
			kind[info.Interface] = "tun"
			if info.Tap {
				kind[info.Interface] = "tap"
			}
		}
		handed[info.Interface] = append(handed[info.Interface], fds[i])
	}
	qc := &queueCheck{}
	var attached []int // by attachQueue, detached again if refused
	for _, name := range names {
		mine := handed[name]
		for _, fd := range mine {
			if attachQueue(fd, kind[name]+" "+name, warn) {
				attached = append(attached, fd)
			}
		}
		count, release := queueCounter(mine[0], name)
		n, err := count()
		if err != nil {
			release()
			warn("inherited "+kind[name]+": cannot check that every queue was handed over; flows the kernel puts on a queue not handed over are lost", "interface", name, "fds", mine, "err", err)
			continue
		}
		qc.tuns = append(qc.tuns, countedTun{name: kind[name] + " " + name, served: len(mine), count: count, release: release})
		if n > len(mine) {
			qc.close()
			for _, fd := range attached {
				setQueue(fd, unix.IFF_DETACH_QUEUE) // as they were handed over
			}
			return nil, fmt.Errorf("%s %s has %d queues attached but %d of them were handed over (fds %v): the kernel spreads flows over all %d, and those put on the other %d would be lost; hand over every queue, or detach the others first (TUNSETQUEUE with IFF_DETACH_QUEUE)",
				kind[name], name, n, len(mine), mine, n, n-len(mine))
		}
	}
	return qc, nil
}

// attachQueue attaches the queue descriptor fd of a multi-queue tun
// (named what) if it was detached (TUNSETQUEUE with IFF_DETACH_QUEUE), and
// says so through warn. A detached queue keeps its device (TUNGETIFF
// answers, writes go through) but the kernel puts no packet on it, so a
// detached queue handed over would be served idle, and the count of
// attached queues would no longer tell whether all of them were handed
// over. The only way to ask is to attach: TUNSETQUEUE with
// IFF_ATTACH_QUEUE is EINVAL on a queue that is attached already
// (tun_set_queue: no tfile->detached) and changes nothing then.
// It reports whether it attached fd.
func attachQueue(fd int, what string, warn func(msg string, args ...any)) bool {
	switch err := setQueue(fd, unix.IFF_ATTACH_QUEUE); {
	case err == nil:
		warn("inherited "+what+": fd "+strconv.Itoa(fd)+" was a detached queue (IFF_DETACH_QUEUE), which receives nothing; attached it so that it is served", "fd", fd)
		return true
	case errors.Is(err, unix.EINVAL):
	default:
		warn("inherited "+what+": cannot tell whether fd "+strconv.Itoa(fd)+" is an attached queue (a detached one receives nothing)", "fd", fd, "err", err)
	}
	return false
}

// setQueue is TUNSETQUEUE with flags (IFF_ATTACH_QUEUE, IFF_DETACH_QUEUE).
func setQueue(fd int, flags uint16) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	ifr.SetUint16(flags)
	return unix.IoctlIfreq(fd, unix.TUNSETQUEUE, ifr)
}

// queueCheck counts the queues of the multi-queue tuns a data path serves
// again while it runs (checkAllQueues), at most once per
// queueRecountEvery: Datapath.Check, which the daemon calls every
// second, reports the last count's finding in between.
type queueCheck struct {
	mu   sync.Mutex
	tuns []countedTun
	last int64 // monoNow of the last count; 0: none yet
	err  error // what it found
}

// queueRecountEvery is how often queueCheck counts again: a queue
// attached behind the data path's back shows in its health within this
// (and a health poll), without reading sysfs every second.
var queueRecountEvery = 5 * time.Second

// countedTun is one tun whose queues queueCheck counts.
type countedTun struct {
	name    string
	served  int                 // the queues handed over
	count   func() (int, error) // queueCounter's
	release func()
}

// check reports a tun that has more queues attached than the data path
// serves; a count that fails now is no fault (the tun going away stops the
// data path by itself). qc may be nil: nothing to count.
func (qc *queueCheck) check() error {
	if qc == nil {
		return nil
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	now := monoNow()
	if qc.last != 0 && time.Duration(now-qc.last) < queueRecountEvery {
		return qc.err
	}
	qc.last, qc.err = now, nil
	for _, t := range qc.tuns {
		if n, err := t.count(); err == nil && n > t.served {
			qc.err = fmt.Errorf("%s has %d queues attached now, %d of them served here: the flows the kernel puts on the other %d are lost", t.name, n, t.served, n-t.served)
			break
		}
	}
	return qc.err
}

// close releases what the counts keep (a namespace descriptor); check
// counts nothing afterwards.
func (qc *queueCheck) close() {
	if qc == nil {
		return
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	for _, t := range qc.tuns {
		t.release()
	}
	qc.tuns = nil
}

// queueCounter returns what counts the queues attached to the tun named
// name behind the queue descriptor fd, now and later: the rx-N entries of
// its sysfs queues directory. A sysfs shows the devices of the network
// namespace that mounted it, so /sys is read directly only when the tun
// is in this process's namespace and /sys agrees on the device's
// ifindex; otherwise a sysfs of the tun's namespace (TUNGETDEVNETNS) is
// mounted once, on a thread of its own, in a mount namespace of its own,
// which ends with it (needs CAP_SYS_ADMIN), and the queues directory
// opened there is what the later counts read, until release: the daemon
// gives up CAP_SYS_ADMIN after set-up (run_as), and a count that mounted
// again each time then failed, which check takes for no fault, so a queue
// attached later went unnoticed.
func queueCounter(fd int, name string) (count func() (int, error), release func()) {
	direct := func() (int, error) { return sysfsQueues("/sys", name, true) }
	nsfd, nsErr := unix.IoctlRetInt(fd, tunGetDevNetns) // O_CLOEXEC (open_related_ns)
	if nsErr != nil {
		// Without TUNGETDEVNETNS (no CAP_NET_ADMIN, a kernel before
		// 5.2) the tun is taken to be in this namespace if /sys agrees.
		return func() (int, error) {
			n, err := direct()
			if err != nil {
				return 0, fmt.Errorf("%w: TUNGETDEVNETNS: %v; /sys: %v", errQueuesUnknown, nsErr, err)
			}
			return n, nil
		}, func() {}
	}
	defer unix.Close(nsfd)
	if sameNetns(nsfd) {
		if _, err := direct(); err == nil {
			return direct, func() {}
		}
	}
	dir, err := openQueuesInNetns(nsfd, name)
	if err != nil {
		return func() (int, error) { return 0, err }, func() {}
	}
	return func() (int, error) { return countQueuesDir(dir) }, func() { dir.Close() }
}

// sameNetns reports whether the namespace descriptor nsfd is this
// thread's network namespace.
func sameNetns(nsfd int) bool {
	var a, b unix.Stat_t
	if unix.Fstat(nsfd, &a) != nil || unix.Stat("/proc/thread-self/ns/net", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// sysfsQueues counts the rx-N entries of name's queues directory in the
// sysfs mounted at root. check: make sure first that this sysfs is the
// calling thread's namespace's, by the device's ifindex.
func sysfsQueues(root, name string, check bool) (int, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return 0, fmt.Errorf("interface name %q", name)
	}
	dir := root + "/class/net/" + name
	if check {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return 0, err
		}
		b, err := os.ReadFile(dir + "/ifindex")
		if err != nil {
			return 0, err
		}
		if idx, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || idx != ifi.Index {
			return 0, fmt.Errorf("%s/ifindex is %q, not %d: that sysfs is another network namespace's", dir, strings.TrimSpace(string(b)), ifi.Index)
		}
	}
	ents, err := os.ReadDir(dir + "/queues")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "rx-") {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s/queues lists no rx queue", dir)
	}
	return n, nil
}

// openQueuesInNetns opens name's queues directory in the network
// namespace nsfd, from a sysfs mounted for it on a thread of its own
// (throwawayThread) that has its own mount namespace. The directory stays
// readable through the returned file after the thread, its mount
// namespace and so the mount are gone (a detached mount lives while a
// file holds it), and it lists the queues as they are when read.
func openQueuesInNetns(nsfd int, name string) (*os.File, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("interface name %q", name)
	}
	var dir *os.File
	var err error
	throwawayThread(func() {
		dir, err = func() (*os.File, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return nil, fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			}
			if err := mountFS("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return nil, fmt.Errorf("making mounts private: %w", err)
			}
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("setns: %w", err)
			}
			if err := mountFS("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return nil, fmt.Errorf("mounting a sysfs of the tun's namespace: %w", err)
			}
			return os.Open("/sys/class/net/" + name + "/queues")
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("%w in its network namespace: %v", errQueuesUnknown, err)
	}
	return dir, nil
}

// mountFS is mount(2); tests refuse it, as the loss of CAP_SYS_ADMIN
// does.
var mountFS = unix.Mount

// countQueuesDir counts the rx-N entries of the queues directory dir
// (openQueuesInNetns), read again from its start.
func countQueuesDir(dir *os.File) (int, error) {
	if _, err := dir.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range names {
		if strings.HasPrefix(e, "rx-") {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%s lists no rx queue", dir.Name())
	}
	return n, nil
}

// throwawayThread runs f, which may change its thread's namespaces, on a
// locked OS thread that is never unlocked, so that the runtime ends the
// thread with the goroutine and no other goroutine runs in them; and
// never on the process's main thread, which the runtime cannot end (it
// parks it for good) and whose namespaces are what /proc/PID/ns,
// /proc/PID/net and /proc/PID/mountinfo show, and what `ip netns
// identify` and `nsenter -t` read: the daemon would appear to live in the
// tun's namespace. A goroutine that finds itself on the main thread hands
// f to another while it keeps that thread.
func throwawayThread(f func()) {
	done := make(chan struct{})
	run := func() {
		runtime.LockOSThread()
		f()
		close(done)
	}
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			f()
			close(done)
			return
		}
		go run() // not on this thread: it is locked to us until done
		<-done
		runtime.UnlockOSThread()
	}()
	<-done
}
