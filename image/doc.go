// Package image builds the map646 appliance: a Linux kernel, an initramfs whose
// /init is the static map646 binary with the HCL configuration baked in, and a
// hybrid GPT disk that boots that pair under BIOS (syslinux) and UEFI
// (systemd-boot), shipped raw and as qcow2.
//
// Every output is reproducible: the same kernel, binary, configuration and
// command line give byte-identical files. Times are fixed (SOURCE_DATE_EPOCH,
// default 1980-01-01, the FAT epoch), archive entries are sorted and GUIDs are
// derived from the inputs instead of drawn at random.
package image
