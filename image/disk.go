package image

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strconv"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// Disk layout. The FAT partition is 40 MiB: large enough for the kernel,
// the initramfs and two boot loaders, and a size for which go-diskfs
// v1.9.4 writes a FAT that fsck.fat accepts (64 MiB does not).
const (
	sectorSize     = 512
	partStartLBA   = 2048 // 1 MiB alignment
	partSize       = 40 << 20
	diskSize       = partStartLBA*sectorSize + partSize + 1<<20 // + room for the backup GPT
	bootLabel      = "M646BOOT"                                 // not MAP646: that label marks a config drive
	mbrBootCodeLen = 440                                        // MBR bytes before the disk signature
	// legacyBIOSBootable is GPT attribute bit 2: syslinux's gptmbr.bin
	// boots the partition that carries it.
	legacyBIOSBootable = 1 << 2
)

// Tools are the host files and programs that the disk needs. Zero fields
// take the Debian locations (packages syslinux, syslinux-common,
// systemd-boot-efi, dosfstools, qemu-utils).
type Tools struct {
	GPTMBR     string // syslinux gptmbr.bin
	Syslinux   string // syslinux (mtools installer)
	SystemdEFI string // systemd-bootx64.efi
	FsckFAT    string // fsck.fat
	QemuImg    string // qemu-img
}

func (t Tools) withDefaults() Tools {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&t.GPTMBR, "/usr/lib/syslinux/mbr/gptmbr.bin")
	def(&t.Syslinux, "syslinux")
	def(&t.SystemdEFI, "/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
	def(&t.FsckFAT, "fsck.fat")
	def(&t.QemuImg, "qemu-img")
	return t
}

// bootFile is one file of the boot partition.
type bootFile struct {
	path string
	data []byte
}

// syslinuxConfig boots the kernel straight away and mirrors the menu to the
// serial console.
func syslinuxConfig(cmdline string) []byte {
	return []byte("SERIAL 0 115200\nDEFAULT map646\nPROMPT 0\nTIMEOUT 0\n\nLABEL map646\n" +
		"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND " + cmdline + "\n")
}

// loaderConf makes systemd-boot boot the single entry without a menu.
func loaderConf() []byte {
	return []byte("default map646.conf\ntimeout 0\nconsole-mode keep\n")
}

func loaderEntry(cmdline string) []byte {
	return []byte("title map646\nlinux /vmlinuz\ninitrd /initrd.img\noptions " + cmdline + "\n")
}

// guidFrom derives a version 4 style GUID from a seed, so that the disk and
// partition identifiers are stable for the same inputs.
func guidFrom(seed []byte, what string) string {
	h := sha256.Sum256(append(append([]byte{}, seed...), what...))
	h[6] = h[6]&0x0f | 0x40
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// writeDisk creates the hybrid GPT disk at dst: one EFI system partition
// (FAT32) with the kernel, the initramfs, systemd-boot as the removable
// media loader EFI/BOOT/BOOTX64.EFI, and syslinux, whose gptmbr.bin in the
// protective MBR boots the partition marked legacy BIOS bootable.
func writeDisk(dst string, kernel, initrd []byte, cmdline string, epoch int64, tools Tools) error {
	tools = tools.withDefaults()
	gptmbr, err := os.ReadFile(tools.GPTMBR)
	if err != nil {
		return fmt.Errorf("image: syslinux MBR (Debian package syslinux): %w", err)
	}
	if len(gptmbr) > mbrBootCodeLen {
		return fmt.Errorf("image: %s is %d bytes, more than the %d of MBR boot code", tools.GPTMBR, len(gptmbr), mbrBootCodeLen)
	}
	efi, err := os.ReadFile(tools.SystemdEFI)
	if err != nil {
		return fmt.Errorf("image: systemd-boot (Debian package systemd-boot-efi): %w", err)
	}
	files := []bootFile{
		{"/EFI/BOOT/BOOTX64.EFI", efi},
		{"/loader/loader.conf", loaderConf()},
		{"/loader/entries/map646.conf", loaderEntry(cmdline)},
		{"/syslinux.cfg", syslinuxConfig(cmdline)},
		{"/vmlinuz", kernel},
		{"/initrd.img", initrd},
	}
	seed := sha256.New()
	for _, f := range files {
		seed.Write([]byte(f.path))
		seed.Write(f.data)
	}
	sum := seed.Sum(nil)

	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// go-diskfs stamps FAT entries with SOURCE_DATE_EPOCH when set, else
	// with the current time.
	restore := setenvTemp("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch, 10))
	defer restore()

	d, err := diskfs.Create(dst, diskSize, diskfs.SectorSizeDefault)
	if err != nil {
		return fmt.Errorf("image: create %s: %w", dst, err)
	}
	table := &gpt.Table{
		LogicalSectorSize:  sectorSize,
		PhysicalSectorSize: sectorSize,
		ProtectiveMBR:      true,
		GUID:               guidFrom(sum, "disk"),
		Partitions: []*gpt.Partition{{
			Index:      1,
			Start:      partStartLBA,
			End:        partStartLBA + partSize/sectorSize - 1,
			Type:       gpt.EFISystemPartition,
			Name:       "map646 boot",
			GUID:       guidFrom(sum, "boot"),
			Attributes: legacyBIOSBootable,
		}},
	}
	if err := d.Partition(table); err != nil {
		d.Close()
		return fmt.Errorf("image: partition %s: %w", dst, err)
	}
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{
		Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: bootLabel, Reproducible: true,
	})
	if err != nil {
		d.Close()
		return fmt.Errorf("image: FAT on %s: %w", dst, err)
	}
	for _, f := range files {
		if err := writeFATFile(fs, f.path, f.data); err != nil {
			d.Close()
			return fmt.Errorf("image: %s: %w", f.path, err)
		}
	}
	if err := d.Close(); err != nil {
		return err
	}

	if err := patchImage(dst, func(img *os.File, vol *fat32Volume) error {
		if _, err := img.WriteAt(gptmbr, 0); err != nil {
			return fmt.Errorf("image: write MBR boot code: %w", err)
		}
		return vol.fixRootDotDot()
	}); err != nil {
		return err
	}

	// syslinux writes ldlinux.sys/ldlinux.c32 with mtools, which stamps
	// them with SOURCE_DATE_EPOCH too (inherited from our environment).
	if err := run(tools.Syslinux, "--install", "--offset", strconv.Itoa(partStartLBA*sectorSize), dst); err != nil {
		return fmt.Errorf("image: syslinux (Debian package syslinux): %w", err)
	}
	if err := patchImage(dst, func(_ *os.File, vol *fat32Volume) error { return vol.copyBootToBackup() }); err != nil {
		return err
	}
	return fsckPartition(dst, tools.FsckFAT)
}

// patchImage opens the raw image and its boot FAT for fix-ups.
func patchImage(dst string, fix func(*os.File, *fat32Volume) error) error {
	img, err := os.OpenFile(dst, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	vol, err := openFAT32(img, partStartLBA*sectorSize)
	if err == nil {
		err = fix(img, vol)
	}
	if cerr := img.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeFATFile(fs filesystem.FileSystem, p string, data []byte) error {
	if dir := path.Dir(p); dir != "/" {
		if err := fs.Mkdir(dir); err != nil {
			return err
		}
	}
	f, err := fs.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fsckPartition copies the boot partition out of the image and checks it
// with fsck.fat -n (read-only): a bad FAT would boot under one firmware and
// not another, so it must fail the build.
func fsckPartition(img, fsck string) error {
	src, err := os.Open(img)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp("", "map646-fat-*.img")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = io.Copy(tmp, io.NewSectionReader(src, partStartLBA*sectorSize, partSize))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := run(fsck, "-n", tmp.Name()); err != nil {
		return fmt.Errorf("image: the boot FAT fails fsck.fat -n: %w", err)
	}
	return nil
}

// run runs a host tool and folds its output into the error.
func run(name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v\n%s", name, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// setenvTemp sets an environment variable unless the caller already did,
// and returns a function that undoes it.
func setenvTemp(key, value string) func() {
	if _, ok := os.LookupEnv(key); ok {
		return func() {}
	}
	os.Setenv(key, value)
	return func() { os.Unsetenv(key) }
}
