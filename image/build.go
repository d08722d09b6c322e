package image

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/map646/map646/appliance/pid1"
)

// Paths of the configuration inside the guest: where PID 1 reads it.
const (
	GuestConfigPath = pid1.BakedConfig
	GuestConfigDir  = "/etc" // the directory of GuestConfigPath
)

// DefaultCmdline is the kernel command line. A kernel panic (including
// PID 1 exiting) reboots after 5 s instead of hanging, and an oops is a
// panic: an appliance with a half-dead kernel is worse than a reboot.
// no_timer_check skips the IO-APIC timer probe, which a busy hypervisor
// (QEMU TCG on a loaded host) can fail, panicking a healthy boot.
const DefaultCmdline = "console=ttyS0,115200 panic=5 oops=panic no_timer_check quiet"

// fatEpoch is 1980-01-01T00:00:00Z, the earliest time FAT can store; the
// default SOURCE_DATE_EPOCH.
const fatEpoch = 315532800

// Output file names inside the output directory.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd.img"
	RawFile    = "map646.img"
	QcowFile   = "map646.qcow2"
)

// Options says what to build.
type Options struct {
	// Config is the HCL file baked in as /etc/map646.hcl. It is validated
	// before anything is written.
	Config string
	// Binary is the map646 executable that becomes /init. It must be
	// statically linked (CGO_ENABLED=0): the initramfs has no libc.
	Binary string
	// Kernel is a bzImage; empty takes the one of KernelModule.
	Kernel string
	// Cmdline is the kernel command line; empty takes DefaultCmdline.
	Cmdline string
	// OutDir receives the outputs; it is created if missing.
	OutDir string
	// Tools overrides the host boot loader files and programs.
	Tools Tools
}

// Result names the files written.
type Result struct {
	Kernel, Initrd, Raw, Qcow2 string
}

// Build validates the configuration and writes vmlinuz, initrd.img,
// map646.img (raw hybrid GPT, BIOS and UEFI) and map646.qcow2 into
// opts.OutDir.
func Build(opts Options) (*Result, error) {
	if opts.Config == "" || opts.Binary == "" || opts.OutDir == "" {
		return nil, errors.New("image: a configuration, a binary and an output directory are required")
	}
	files, err := configFiles(opts.Config)
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(opts.Binary)
	if err != nil {
		return nil, fmt.Errorf("image: binary: %w", err)
	}
	if err := checkStatic(opts.Binary, bin); err != nil {
		return nil, err
	}
	files = append(files, File{Path: "/init", Mode: 0o755, Data: bin})

	kpath := opts.Kernel
	if kpath == "" {
		if kpath, err = KernelPath(); err != nil {
			return nil, err
		}
	}
	kernel, err := os.ReadFile(kpath)
	if err != nil {
		return nil, fmt.Errorf("image: kernel: %w", err)
	}
	cmdline := opts.Cmdline
	if cmdline == "" {
		cmdline = DefaultCmdline
	}
	epoch, err := sourceDateEpoch()
	if err != nil {
		return nil, err
	}

	var initrd bytes.Buffer
	if err := WriteInitramfs(&initrd, files); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, err
	}
	res := &Result{
		Kernel: filepath.Join(opts.OutDir, KernelFile),
		Initrd: filepath.Join(opts.OutDir, InitrdFile),
		Raw:    filepath.Join(opts.OutDir, RawFile),
		Qcow2:  filepath.Join(opts.OutDir, QcowFile),
	}
	if err := os.WriteFile(res.Kernel, kernel, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(res.Initrd, initrd.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if err := writeDisk(res.Raw, kernel, initrd.Bytes(), cmdline, epoch, opts.Tools); err != nil {
		return nil, err
	}
	os.Remove(res.Qcow2)
	if err := run(opts.Tools.withDefaults().QemuImg, "convert", "-f", "raw", "-O", "qcow2", res.Raw, res.Qcow2); err != nil {
		return nil, fmt.Errorf("image: qcow2 (Debian package qemu-utils): %w", err)
	}
	return res, nil
}

// checkStatic refuses a dynamically linked binary: as /init it would fail
// with a bare "No such file or directory" from the kernel, far from the
// cause.
func checkStatic(name string, b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("image: %s is not an ELF executable: %w", name, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("image: %s is built for %v; the appliance kernel is x86-64", name, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("image: %s is dynamically linked; build it with CGO_ENABLED=0", name)
		}
	}
	return nil
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH, or the FAT epoch.
func sourceDateEpoch() (int64, error) {
	s, ok := os.LookupEnv("SOURCE_DATE_EPOCH")
	if !ok || s == "" {
		return fatEpoch, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < fatEpoch {
		return 0, fmt.Errorf("image: SOURCE_DATE_EPOCH=%q: want seconds since 1970, at least %d (FAT cannot store earlier times)", s, fatEpoch)
	}
	return v, nil
}
