// Package pid1 is what map646 does when the kernel starts it as /init inside
// the appliance VM: the duties of an init process (mount the kernel file
// systems, reap orphans, power off or reboot cleanly) and the appliance's
// start-up (pick the configuration, bring the network up, run the
// translator, announce readiness on the console).
//
// There is no udev and no shell: block and input devices are found through
// /sys, device nodes come from devtmpfs (or are made from /sys when missing).
//
// Configuration: /etc/map646.hcl is baked into the initramfs; a config drive
// replaces it when one is attached and valid. Recognised drives (ISO9660 or
// FAT, by volume label):
//
//	MAP646    /map646.hcl
//	cidata    /user-data                   (cloud-init NoCloud)
//	config-2  /openstack/latest/user_data  (OpenStack config drive)
//
// An invalid drive is reported on the console and the baked configuration
// runs instead. A drive's configuration may name only files on the drive
// (its mappings_file). A translator that stops on its own is restarted
// (backing off from 1 s to 30 s); after three failures in a row with the
// drive's configuration the baked one runs, and after three with that
// PID 1 stays up without a translator and says so on the console: it never
// reboots in a loop. The kernel command line option map646.drive_wait=DURATION
// (default 500ms) bounds how long /init waits for a drive to appear.
//
// Signals: SIGHUP re-reads the configuration in use. The ACPI power button
// (its input device, KEY_POWER), SIGTERM or SIGPWR power off; Ctrl-Alt-Del
// (SIGINT) reboots. The translator is stopped first, then the machine
// halts through reboot(2).
package pid1
