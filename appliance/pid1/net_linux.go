package pid1

import "github.com/vishvananda/netlink"

// loopbackUp brings up lo; nothing else does inside the VM.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}
