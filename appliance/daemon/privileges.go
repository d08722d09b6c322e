package daemon

import (
	"errors"
	"fmt"
	"os/user"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
)

// identity is who the translator runs as after set-up; zero values of
// set mean: stay the user it was started as.
type identity struct {
	set      bool
	uid, gid int
	name     string // for the log
}

// resolveIdentity turns the run_as user and group (names or numbers) into
// ids, before anything is set up, so that a misspelt name stops the start
// instead of leaving a translator running as root. An empty group means
// the user's primary group.
func resolveIdentity(ra config.RunAs) (identity, error) {
	if ra.User == "" {
		if ra.Group != "" {
			return identity{}, errors.New("run_as: a group needs a user")
		}
		return identity{}, nil
	}
	u, err := nameOrID(ra.User, user.Lookup, user.LookupId)
	if err != nil {
		return identity{}, err
	}
	id := identity{set: true, name: u.Username}
	if id.uid, err = strconv.Atoi(u.Uid); err != nil {
		return identity{}, fmt.Errorf("run_as: user %s: uid %q", u.Username, u.Uid)
	}
	gid := u.Gid
	if ra.Group != "" {
		g, err := nameOrID(ra.Group, user.LookupGroup, user.LookupGroupId)
		if err != nil {
			return identity{}, err
		}
		gid = g.Gid
	}
	if id.gid, err = strconv.Atoi(gid); err != nil {
		return identity{}, fmt.Errorf("run_as: gid %q", gid)
	}
	return id, nil
}

// nameOrID looks a user or group up by name, and a number that is no
// name by id (as chown does).
func nameOrID[T any](s string, byName, byID func(string) (*T, error)) (*T, error) {
	v, err := byName(s)
	if err != nil {
		if _, nerr := strconv.Atoi(s); nerr != nil {
			return nil, fmt.Errorf("run_as: %w", err)
		}
		if v, err = byID(s); err != nil {
			return nil, fmt.Errorf("run_as: %w", err)
		}
	}
	return v, nil
}

// neededCaps are the capabilities the running translator keeps:
// CAP_NET_ADMIN for what it does after set-up (reloads change routes,
// rules, addresses and MTUs; restores put back what the kernel removed;
// the stop removes everything and resets the forwarding sysctls, which a
// network namespace's administrator may write), CAP_NET_BIND_SERVICE when
// the BGP speaker listens on a port below 1024 and CAP_NET_RAW for router
// advertisements (a reload that changes those blocks restarts them).
func neededCaps(cfg *config.Config) []uintptr {
	caps := []uintptr{unix.CAP_NET_ADMIN}
	if cfg.BGP != nil && cfg.BGP.ListenPort > 0 && cfg.BGP.ListenPort < 1024 {
		caps = append(caps, unix.CAP_NET_BIND_SERVICE)
	}
	if len(cfg.RouterAdvertisements) > 0 {
		caps = append(caps, unix.CAP_NET_RAW)
	}
	return caps
}

// keptCaps are the capabilities the running translator keeps: neededCaps
// of the file it started with, and CAP_NET_BIND_SERVICE and CAP_NET_RAW
// whenever the process holds them (held), so that a reload can add a BGP
// speaker listening below 1024 or router advertisements, or restart them
// (an announcer restarted with settings the process can no longer serve
// fails, and runs again with its previous ones). They add little to
// CAP_NET_ADMIN, which the translator needs anyway and which already lets
// it read any interface's traffic (a tun of its own and a tc mirred rule)
// and send anything through one; to run without them, start the process
// without them (the service's CapabilityBoundingSet), and a reload that
// needs them then fails for that announcer only.
func keptCaps(cfg *config.Config, held func(c uintptr) bool) []uintptr {
	need := neededCaps(cfg)
	var keep []uintptr
	for _, c := range []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE, unix.CAP_NET_RAW} {
		if slices.Contains(need, c) || held != nil && held(c) {
			keep = append(keep, c)
		}
	}
	return keep
}

// heldCap reports whether capability c is in this thread's permitted set
// (at start, every thread's is the same).
func heldCap(c uintptr) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Permitted&(1<<(c%32)) != 0
}

// errCgoThreads is why a binary linked with cgo cannot drop privileges:
// Linux credentials belong to each thread, and Go changes them on every
// thread (syscall.AllThreadsSyscall) only when it owns all of them.
var errCgoThreads = errors.New("this map646 is built with cgo, so it cannot change the capabilities of all its threads; build it with CGO_ENABLED=0 (as `make` does)")

// dropPrivileges switches every thread of the process to id (if set) and
// to exactly the capabilities keep, effective and permitted, with none
// inheritable and no new privileges from exec. Linux keeps credentials
// per thread; the Go runtime changes them on all threads only through
// syscall.AllThreadsSyscall (and syscall.Setuid and friends, which use
// it), so nothing here runs on a single locked thread.
func dropPrivileges(id identity, keep []uintptr) error {
	// The permitted set survives the change of uid only with keepcaps
	// (capabilities(7), "Effect of user ID changes on capabilities").
	if err := allThreadsPrctl(unix.PR_SET_KEEPCAPS, 1); err != nil {
		if errors.Is(err, syscall.ENOTSUP) {
			return errCgoThreads
		}
		return fmt.Errorf("PR_SET_KEEPCAPS: %w", err)
	}
	if id.set {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(id.gid); err != nil {
			return fmt.Errorf("setgid %d: %w", id.gid, err)
		}
		if err := syscall.Setuid(id.uid); err != nil {
			return fmt.Errorf("setuid %d: %w", id.uid, err)
		}
	}
	if err := allThreadsCapset(keep); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := allThreadsPrctl(unix.PR_SET_KEEPCAPS, 0); err != nil {
		return fmt.Errorf("PR_SET_KEEPCAPS: %w", err)
	}
	if err := allThreadsPrctl(unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
		return fmt.Errorf("PR_SET_NO_NEW_PRIVS: %w", err)
	}
	return nil
}

func allThreadsPrctl(option, arg uintptr) error {
	if _, _, e := syscall.AllThreadsSyscall6(unix.SYS_PRCTL, option, arg, 0, 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// allThreadsCapset sets the effective and permitted sets of every thread
// to caps and clears the inheritable set.
func allThreadsCapset(caps []uintptr) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	for _, c := range caps {
		data[c/32].Effective |= 1 << (c % 32)
		data[c/32].Permitted |= 1 << (c % 32)
	}
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if e != 0 {
		return e
	}
	return nil
}

// capNames names caps for the log.
func capNames(caps []uintptr) []string {
	names := map[uintptr]string{unix.CAP_NET_ADMIN: "CAP_NET_ADMIN", unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE", unix.CAP_NET_RAW: "CAP_NET_RAW"}
	out := make([]string, len(caps))
	for i, c := range caps {
		out[i] = names[c]
	}
	return out
}
