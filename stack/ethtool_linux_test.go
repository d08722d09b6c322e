package stack

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Legacy ethtool commands (include/uapi/linux/ethtool.h) that switch one
// offload on or off; the kernel still maps them onto netdev features.
const (
	ethtoolSTXCSUM = 0x17 // transmit checksum offload
	ethtoolSTSO    = 0x1f // TCP segmentation offload
	ethtoolSGSO    = 0x24 // generic segmentation offload
	ethtoolGGRO    = 0x2b // get generic receive offload
	ethtoolSGRO    = 0x2c // generic receive offload
)

// ethtoolSocket opens the socket that ethtool commands go through; the
// interfaces it reaches are those of the network namespace of the calling
// thread, whichever thread uses it later.
func ethtoolSocket() (int, error) {
	return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}

// setOffload switches one offload of interface name with a legacy
// SIOCETHTOOL command through socket fd.
func setOffload(fd int, name string, cmd uint32, on bool) error {
	_, err := ethtoolValue(fd, name, cmd, on)
	return err
}

// ethtoolValue runs a legacy SIOCETHTOOL command that takes and returns a
// struct ethtool_value, and returns the value the kernel left in it.
func ethtoolValue(fd int, name string, cmd uint32, on bool) (bool, error) {
	val := struct{ cmd, data uint32 }{cmd: cmd}
	if on {
		val.data = 1
	}
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data unsafe.Pointer
		_    [16]byte // the rest of struct ifreq's union
	}
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	ifr.data = unsafe.Pointer(&val)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); errno != 0 {
		return false, fmt.Errorf("%s: ethtool command %#x: %w", name, cmd, errno)
	}
	return val.data != 0, nil
}
