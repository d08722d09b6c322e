package pid1

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// kernelMount is one file system that PID 1 mounts before anything else.
type kernelMount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var kernelMounts = []kernelMount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
}

// mountKernelFS mounts /proc, /sys, /dev, /run and /tmp. A mount point
// that is already mounted (EBUSY) is fine.
func mountKernelFS() error {
	var errs []error
	for _, m := range kernelMounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err))
		}
	}
	return errors.Join(errs...)
}

// reapChildren waits for every child that exits, so that orphans
// re-parented to PID 1 do not stay zombies, until stop is closed.
func reapChildren(stop <-chan struct{}) {
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		select {
		case <-stop:
			return
		case <-ch:
		}
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// uptime is the time since the kernel started, from /proc/uptime.
func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	s, err := strconv.ParseFloat(f, 64)
	if err != nil {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}

// halt ends the machine: flush, then power off or reboot. It does not
// return unless the kernel refuses.
func halt(cmd int) error {
	unix.Sync()
	return unix.Reboot(cmd)
}
