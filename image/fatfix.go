package image

import (
	"encoding/binary"
	"fmt"
	"os"
)

// FAT32 on-disk offsets (Microsoft FAT specification, "BPB" and "FAT32
// extended BPB"; directory entries are 32 bytes).
const (
	bpbBytesPerSector = 11
	bpbSecPerCluster  = 13
	bpbReservedSecs   = 14
	bpbNumFATs        = 16
	bpbFATSize32      = 36
	bpbRootCluster    = 44
	bpbBackupBootSec  = 50
	dirEntrySize      = 32
	attrDirectory     = 0x10
	attrLFN           = 0x0f
	fatEOC            = 0x0ffffff8
)

// fat32Volume reads and patches a FAT32 file system inside an image file.
type fat32Volume struct {
	f                    *os.File
	start                int64 // byte offset of the volume in the image
	bytesPerSector       int64
	bytesPerCluster      int64
	fatStart, dataStart  int64 // byte offsets inside the volume
	rootCluster          uint32
	reservedSecs, backup int64
}

func openFAT32(f *os.File, start int64) (*fat32Volume, error) {
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, start); err != nil {
		return nil, err
	}
	v := &fat32Volume{f: f, start: start}
	v.bytesPerSector = int64(binary.LittleEndian.Uint16(bs[bpbBytesPerSector:]))
	v.bytesPerCluster = v.bytesPerSector * int64(bs[bpbSecPerCluster])
	v.reservedSecs = int64(binary.LittleEndian.Uint16(bs[bpbReservedSecs:]))
	fatSize := int64(binary.LittleEndian.Uint32(bs[bpbFATSize32:]))
	v.fatStart = v.reservedSecs * v.bytesPerSector
	v.dataStart = v.fatStart + int64(bs[bpbNumFATs])*fatSize*v.bytesPerSector
	v.rootCluster = binary.LittleEndian.Uint32(bs[bpbRootCluster:])
	v.backup = int64(binary.LittleEndian.Uint16(bs[bpbBackupBootSec:]))
	if v.bytesPerCluster == 0 || v.rootCluster < 2 || v.backup == 0 || v.backup >= v.reservedSecs {
		return nil, fmt.Errorf("image: not a FAT32 boot sector at offset %d", start)
	}
	return v, nil
}

func (v *fat32Volume) clusterOffset(c uint32) int64 {
	return v.start + v.dataStart + int64(c-2)*v.bytesPerCluster
}

// chain follows the FAT from cluster c.
func (v *fat32Volume) chain(c uint32) ([]uint32, error) {
	var out []uint32
	b := make([]byte, 4)
	for c >= 2 && c < fatEOC {
		if len(out) > 1<<20 {
			return nil, fmt.Errorf("image: FAT chain loop at cluster %d", c)
		}
		out = append(out, c)
		if _, err := v.f.ReadAt(b, v.start+v.fatStart+int64(c)*4); err != nil {
			return nil, err
		}
		c = binary.LittleEndian.Uint32(b) & 0x0fffffff
	}
	return out, nil
}

// fixRootDotDot points the ".." entry of every directory directly under
// the root at cluster 0, as the FAT specification requires ("if the parent
// is the root directory, the cluster is 0"). go-diskfs v1.9.4 writes the
// root's cluster number there, which fsck.fat reports as an error.
func (v *fat32Volume) fixRootDotDot() error {
	clusters, err := v.chain(v.rootCluster)
	if err != nil {
		return err
	}
	buf := make([]byte, v.bytesPerCluster)
	for _, c := range clusters {
		if _, err := v.f.ReadAt(buf, v.clusterOffset(c)); err != nil {
			return err
		}
		for off := int64(0); off+dirEntrySize <= int64(len(buf)); off += dirEntrySize {
			e := buf[off : off+dirEntrySize]
			if e[0] == 0 {
				return nil // end of directory
			}
			if e[0] == 0xe5 || e[11] == attrLFN || e[11]&attrDirectory == 0 || e[0] == '.' {
				continue
			}
			sub := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
			if sub < 2 {
				continue
			}
			dot := make([]byte, dirEntrySize)
			at := v.clusterOffset(sub) + dirEntrySize // ".." is the second slot
			if _, err := v.f.ReadAt(dot, at); err != nil {
				return err
			}
			if string(dot[:11]) != "..         " {
				return fmt.Errorf("image: directory at cluster %d has no '..' entry in its second slot", sub)
			}
			binary.LittleEndian.PutUint16(dot[20:], 0)
			binary.LittleEndian.PutUint16(dot[26:], 0)
			if _, err := v.f.WriteAt(dot, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyBootToBackup makes the backup boot sector equal the primary again
// after syslinux rewrote the primary with its boot code.
func (v *fat32Volume) copyBootToBackup() error {
	bs := make([]byte, v.bytesPerSector)
	if _, err := v.f.ReadAt(bs, v.start); err != nil {
		return err
	}
	_, err := v.f.WriteAt(bs, v.start+v.backup*v.bytesPerSector)
	return err
}
