// Package qemutests boots the map646 appliance image under QEMU (TCG) and
// sends real traffic through it: an IPv4-only client network namespace and
// an IPv6-only server namespace, each attached to the VM by a tap device
// created inside the namespace and handed to QEMU as a file descriptor.
// TestTraffic runs the same checks in each link mode the image can run
// (tun and NIC): the image's default as baked, the other from a config
// drive.
//
// The tests need root, /dev/net/tun and qemu-system-x86_64; they skip with
// the reason when one is missing. Namespaces are named qm-<pid>-<n>.
package qemutests
