package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultLockDir holds one lock file per network namespace that a
// translator runs in.
const DefaultLockDir = "/run/map646"

// instanceLock is the exclusive flock that makes a translator the only one
// in its network namespace. Routes, policy rules and forwarding sysctls
// belong to the namespace, not to a tun: a second daemon there would take
// over the first one's routes and delete them when it exits.
type instanceLock struct {
	f    *os.File
	path string
}

// netnsKey names the calling thread's network namespace by the inode of
// its nsfs file, which is what `ip netns identify` compares too.
func netnsKey() (string, error) {
	var st unix.Stat_t
	p := "/proc/thread-self/ns/net"
	if err := unix.Stat(p, &st); err != nil {
		p = "/proc/self/ns/net"
		if err := unix.Stat(p, &st); err != nil {
			return "", fmt.Errorf("network namespace: %w", err)
		}
	}
	return "net-" + strconv.FormatUint(st.Ino, 10), nil
}

// lockInstance takes dir/<netns>.lock with flock(LOCK_EX|LOCK_NB) and
// writes the process id into it. It fails at once, naming the holder, if
// another process has it. The kernel drops the lock when the process dies
// however it dies, so a crash never blocks the next start; the file itself
// stays (removing it would let a third process lock a fresh inode while
// the second still waits on the old one).
func lockInstance(dir string) (*instanceLock, error) {
	key, err := netnsKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	path := filepath.Join(dir, key+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("instance lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := ""
		if b, rerr := os.ReadFile(path); rerr == nil && len(b) > 0 {
			holder = " (pid " + strings.TrimSpace(string(b)) + ")"
		}
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another map646%s is running in this network namespace (it holds %s); stop it first", holder, path)
		}
		return nil, fmt.Errorf("instance lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &instanceLock{f: f, path: path}, nil
}

// release gives the lock up for the next translator of this namespace.
func (l *instanceLock) release() {
	_ = l.f.Truncate(0)
	_ = unix.Flock(int(l.f.Fd()), unix.LOCK_UN)
	_ = l.f.Close()
}
