package pid1

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
)

// FSType is a file system that a config drive may carry.
type FSType string

const (
	ISO9660 FSType = "iso9660"
	VFAT    FSType = "vfat"
)

// ProbeLabel reads the volume label of an ISO9660 or FAT file system from
// the start of a block device. ok is false for anything else.
//
// ISO9660 (ECMA-119 section 8.4): the primary volume descriptor is in
// sector 16 (byte 32768): type 1, "CD001", the volume identifier at offset
// 40, 32 characters padded with spaces.
//
// FAT (Microsoft FAT specification, BPB): a boot sector ending in 55 AA;
// FAT32 has 0 sectors per FAT in the 16-bit field at offset 22 and its
// extended boot signature 0x29 at 66 and label at 71; FAT12/16 have them
// at 38 and 43. The label is 11 characters padded with spaces.
func ProbeLabel(r io.ReaderAt) (label string, fs FSType, ok bool) {
	pvd := make([]byte, 2048)
	if _, err := r.ReadAt(pvd, 32768); err == nil && pvd[0] == 1 && string(pvd[1:6]) == "CD001" {
		return strings.TrimRight(string(pvd[40:72]), " \x00"), ISO9660, true
	}
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return "", "", false
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return "", "", false
	}
	bytesPerSector := binary.LittleEndian.Uint16(bs[11:])
	if bytesPerSector < 512 || bytesPerSector&(bytesPerSector-1) != 0 || bs[13] == 0 {
		return "", "", false // an MBR or some other boot sector, not a BPB
	}
	sig, lab := 38, 43
	if binary.LittleEndian.Uint16(bs[22:]) == 0 {
		sig, lab = 66, 71
	}
	if bs[sig] != 0x29 {
		return "", VFAT, true // a FAT without a label field
	}
	label = string(bytes.TrimRight(bs[lab:lab+11], " \x00"))
	if label == "NO NAME" {
		label = ""
	}
	return label, VFAT, true
}

// DriveKind says what a labelled volume is.
type DriveKind int

const (
	NotADrive DriveKind = iota
	Map646Drive
	NoCloudDrive
	ConfigDrive2
)

// ClassifyLabel maps a volume label to the kind of config drive (labels
// compare without case: FAT upper-cases them, cloud-init accepts both).
func ClassifyLabel(label string) DriveKind {
	switch strings.ToLower(label) {
	case "map646":
		return Map646Drive
	case "cidata":
		return NoCloudDrive
	case "config-2":
		return ConfigDrive2
	}
	return NotADrive
}

// ConfigFile is where a drive of this kind keeps the HCL configuration,
// relative to its root.
func (k DriveKind) ConfigFile() string {
	switch k {
	case Map646Drive:
		return "map646.hcl"
	case NoCloudDrive:
		return "user-data"
	case ConfigDrive2:
		return "openstack/latest/user_data"
	}
	return ""
}

func (k DriveKind) String() string {
	switch k {
	case Map646Drive:
		return "MAP646"
	case NoCloudDrive:
		return "cidata"
	case ConfigDrive2:
		return "config-2"
	}
	return "none"
}
