package pid1

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzProbeLabel: whatever a disk attached to the appliance holds (its
// first sector and the 2 KiB at byte 32768, where ISO9660 keeps its
// primary volume descriptor, ECMA-119 section 8.4), ProbeLabel does not
// panic, and it reports a label only of a file system it names, no longer
// than that file system's label field (11 bytes for FAT, 32 for ISO9660).
func FuzzProbeLabel(f *testing.F) {
	fat := make([]byte, 512)
	binary.LittleEndian.PutUint16(fat[11:], 512)
	fat[13] = 4
	binary.LittleEndian.PutUint16(fat[22:], 32)
	fat[38] = 0x29
	copy(fat[43:], "MAP646     ")
	fat[510], fat[511] = 0x55, 0xaa
	fat32 := bytes.Clone(fat)
	binary.LittleEndian.PutUint16(fat32[22:], 0)
	fat32[66] = 0x29
	copy(fat32[71:], "CIDATA     ")
	pvd := make([]byte, 2048)
	pvd[0] = 1
	copy(pvd[1:], "CD001")
	copy(pvd[40:], "config-2                        ")
	f.Add(fat, []byte{}, 40000)
	f.Add(fat32, []byte{}, 40000)
	f.Add(make([]byte, 512), pvd, 40000)
	f.Add([]byte("x"), pvd[:100], 32800)
	f.Fuzz(func(t *testing.T, first, iso []byte, size int) {
		// A disk of size bytes (at most 64 KiB) with first at byte 0
		// and iso at byte 32768, as far as they fit.
		disk := make([]byte, min(max(size, 0), 64<<10))
		copy(disk, first)
		if len(disk) > 32768 {
			copy(disk[32768:], iso)
		}
		label, fs, ok := ProbeLabel(bytes.NewReader(disk))
		switch {
		case !ok:
			if label != "" || fs != "" {
				t.Fatalf("not a file system, but label %q, fs %q", label, fs)
			}
		case fs == VFAT:
			if len(label) > 11 {
				t.Fatalf("FAT label %q longer than 11 bytes", label)
			}
		case fs == ISO9660:
			if len(label) > 32 {
				t.Fatalf("ISO9660 label %q longer than 32 bytes", label)
			}
		default:
			t.Fatalf("ok with file system %q", fs)
		}
	})
}
