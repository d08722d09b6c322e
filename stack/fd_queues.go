package stack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

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
// the descriptors are served.
func checkAllQueues(fds []int, infos []FDInfo, warn func(msg string, args ...any)) error {
	handed := map[string][]int{}
	var names []string
	for i, info := range infos {
		if !info.Tun || !info.MultiQueue {
			continue
		}
		if handed[info.Interface] == nil {
			names = append(names, info.Interface)
		}
		handed[info.Interface] = append(handed[info.Interface], fds[i])
	}
	for _, name := range names {
		mine := handed[name]
		n, err := attachedQueues(mine[0], name)
		if err != nil {
			warn("inherited tun: cannot check that every queue was handed over; flows the kernel puts on a queue not handed over are lost", "interface", name, "fds", mine, "err", err)
			continue
		}
		if n > len(mine) {
			return fmt.Errorf("tun %s has %d queues attached but %d of them were handed over (fds %v): the kernel spreads flows over all %d, and those put on the other %d would be lost; hand over every queue, or detach the others first (TUNSETQUEUE with IFF_DETACH_QUEUE)",
				name, n, len(mine), mine, n, n-len(mine))
		}
	}
	return nil
}

// attachedQueues returns how many queues are attached to the tun named
// name behind the queue descriptor fd: the rx-N entries of its sysfs
// queues directory. A sysfs shows the devices of the network namespace
// that mounted it, so /sys is read directly only when the tun is in this
// process's namespace and /sys agrees on the device's ifindex; otherwise
// a sysfs of the tun's namespace (TUNGETDEVNETNS) is mounted on a thread
// of its own, in a mount namespace of its own, which ends with it
// (needs CAP_SYS_ADMIN).
func attachedQueues(fd int, name string) (int, error) {
	nsfd, nsErr := unix.IoctlRetInt(fd, tunGetDevNetns)
	if nsErr == nil {
		defer unix.Close(nsfd)
	}
	same := nsErr == nil && sameNetns(nsfd)
	if same || nsErr != nil {
		// Without TUNGETDEVNETNS (no CAP_NET_ADMIN, an old kernel) the
		// tun is taken to be in this namespace if /sys agrees.
		if n, err := sysfsQueues("/sys", name, true); err == nil {
			return n, nil
		} else if nsErr != nil {
			return 0, fmt.Errorf("%w: TUNGETDEVNETNS: %v; /sys: %v", errQueuesUnknown, nsErr, err)
		}
	}
	return queuesInNetns(nsfd, name)
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

// queuesInNetns counts name's queues in the network namespace nsfd from a
// sysfs mounted for it, on a locked thread that has its own mount
// namespace and is never unlocked: the runtime ends the thread with the
// goroutine, so no other goroutine runs in its namespaces.
func queuesInNetns(nsfd int, name string) (int, error) {
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		n, err := func() (int, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return 0, fmt.Errorf("unshare(CLONE_NEWNS): %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return 0, fmt.Errorf("making mounts private: %w", err)
			}
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				return 0, fmt.Errorf("setns: %w", err)
			}
			if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return 0, fmt.Errorf("mounting a sysfs of the tun's namespace: %w", err)
			}
			return sysfsQueues("/sys", name, false)
		}()
		done <- result{n, err}
	}()
	r := <-done
	if r.err != nil {
		return 0, fmt.Errorf("%w in its network namespace: %v", errQueuesUnknown, r.err)
	}
	return r.n, nil
}
