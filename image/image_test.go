package image

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/u-root/u-root/pkg/cpio"

	"github.com/map646/map646/internal/testenv"
)

func readInitramfs(t *testing.T, b []byte) []cpio.Record {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.EOFReader{RecordReader: cpio.Newc.Reader(bytes.NewReader(raw))})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestWriteInitramfs(t *testing.T) {
	files := []File{
		{Path: "/init", Mode: 0o755, Data: []byte("binary")},
		{Path: "/etc/map646.hcl", Mode: 0o644, Data: []byte("translator {}\n")},
		{Path: "/etc/extra/mappings.csv", Mode: 0o644, Data: []byte("198.51.100.10,2001:db8:6::10\n")},
	}
	var a, b bytes.Buffer
	if err := WriteInitramfs(&a, files); err != nil {
		t.Fatal(err)
	}
	// The same files in another order give the same bytes.
	rev := []File{files[2], files[0], files[1]}
	if err := WriteInitramfs(&b, rev); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("initramfs depends on the order of its inputs")
	}

	recs := readInitramfs(t, a.Bytes())
	want := []struct {
		name string
		mode uint64
		data string
	}{
		{"dev", cpio.S_IFDIR | 0o755, ""},
		{"dev/console", cpio.S_IFCHR | 0o600, ""},
		{"dev/null", cpio.S_IFCHR | 0o666, ""},
		{"etc", cpio.S_IFDIR | 0o755, ""},
		{"etc/extra", cpio.S_IFDIR | 0o755, ""},
		{"etc/extra/mappings.csv", cpio.S_IFREG | 0o644, "198.51.100.10,2001:db8:6::10\n"},
		{"etc/map646.hcl", cpio.S_IFREG | 0o644, "translator {}\n"},
		{"init", cpio.S_IFREG | 0o755, "binary"},
		{"proc", cpio.S_IFDIR | 0o755, ""},
		{"run", cpio.S_IFDIR | 0o755, ""},
		{"sys", cpio.S_IFDIR | 0o755, ""},
		{"tmp", cpio.S_IFDIR | 0o1777, ""},
	}
	if len(recs) != len(want) {
		var names []string
		for _, r := range recs {
			names = append(names, r.Name)
		}
		t.Fatalf("records %v, want %d", names, len(want))
	}
	for i, w := range want {
		r := recs[i]
		if r.Name != w.name || r.Mode != w.mode {
			t.Errorf("record %d: %s %o, want %s %o", i, r.Name, r.Mode, w.name, w.mode)
		}
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: host metadata leaked: mtime %d uid %d gid %d", r.Name, r.MTime, r.UID, r.GID)
		}
		if r.Mode&cpio.S_IFMT == cpio.S_IFREG {
			got, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil || string(got) != w.data {
				t.Errorf("%s: content %q (%v), want %q", r.Name, got, err, w.data)
			}
		}
	}
	if r := recs[1]; r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("dev/console is %d:%d, want 5:1", r.Rmajor, r.Rminor)
	}
}

func TestWriteInitramfsRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []File
		want  string
	}{
		{"duplicate", []File{{Path: "/a"}, {Path: "a"}}, "given twice"},
		{"file and dir", []File{{Path: "/etc"}}, "both a file and a directory"},
		{"file under file", []File{{Path: "/x"}, {Path: "/x/y"}}, "both a file and a directory"},
		{"empty", []File{{Path: "/"}}, "empty path"},
	} {
		err := WriteInitramfs(io.Discard, tc.files)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestGUIDFrom(t *testing.T) {
	a, b := guidFrom([]byte("x"), "disk"), guidFrom([]byte("x"), "boot")
	if a == b || a != guidFrom([]byte("x"), "disk") {
		t.Fatalf("guids %s %s", a, b)
	}
	if len(a) != 36 || a[14] != '4' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Fatalf("%s is not a version 4 GUID", a)
	}
}

// staticBinary builds a tiny static Go program: what /init must look like.
func staticBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testenv.SkipOrFail(t, "go command not found: cannot build a static test binary")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module initstub\n\ngo 1.22\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"init\") }\n"), 0o644)
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", "init")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=-mod=mod")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "init")
}

func TestCheckStatic(t *testing.T) {
	static := staticBinary(t)
	b, _ := os.ReadFile(static)
	if err := checkStatic(static, b); err != nil {
		t.Fatal(err)
	}
	dyn, err := exec.LookPath("true")
	if err != nil {
		testenv.SkipOrFail(t, "no dynamically linked program to compare with")
	}
	b, _ = os.ReadFile(dyn)
	if err := checkStatic(dyn, b); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Fatalf("dynamic %s: err %v", dyn, err)
	}
	if err := checkStatic("text", []byte("#!/bin/sh\n")); err == nil {
		t.Fatal("a script was accepted")
	}
}

// needTools skips (fails on CI) when a host boot tool is truly absent.
func needTools(t *testing.T) {
	t.Helper()
	tools := Tools{}.withDefaults()
	for _, f := range []string{tools.GPTMBR, tools.SystemdEFI} {
		if _, err := os.Stat(f); err != nil {
			testenv.SkipOrFailf(t, "boot loader file %s missing (Debian packages syslinux, systemd-boot-efi): %v", f, err)
		}
	}
	for _, p := range []string{tools.Syslinux, tools.FsckFAT, tools.QemuImg} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.SkipOrFailf(t, "%s missing (Debian packages syslinux, dosfstools, qemu-utils)", p)
		}
	}
}

func testConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "map646.hcl")
	if err := os.WriteFile(p, []byte(testHCL), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const testHCL = `translator {
  prefix = "2001:db8:64::/96"
  mapping {
    ipv4 = "198.51.100.10"
    ipv6 = "2001:db8:6::10"
  }
}
`

// fakeKernel stands in for vmlinuz where only the disk layout is checked.
func fakeKernel(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "vmlinuz")
	os.WriteFile(p, bytes.Repeat([]byte("kernel"), 100000), 0o644)
	return p
}

func TestBuildReproducible(t *testing.T) {
	needTools(t)
	bin, cfg, kernel := staticBinary(t), testConfig(t), fakeKernel(t)
	var results [2]*Result
	for i := range results {
		res, err := Build(Options{Config: cfg, Binary: bin, Kernel: kernel, OutDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		results[i] = res
		if i == 0 {
			// FAT stores times with 2 s resolution: make sure the
			// second build runs at another wall-clock time.
			time.Sleep(2100 * time.Millisecond)
		}
	}
	for _, pick := range []func(*Result) string{
		func(r *Result) string { return r.Kernel },
		func(r *Result) string { return r.Initrd },
		func(r *Result) string { return r.Raw },
		func(r *Result) string { return r.Qcow2 },
	} {
		a, err := os.ReadFile(pick(results[0]))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(pick(results[1]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same inputs", filepath.Base(pick(results[0])))
		}
	}
	checkDisk(t, results[0].Raw)
}

// checkDisk reads the raw image back: the BIOS boot code, the partition
// flags and the boot files with their fixed times.
func checkDisk(t *testing.T, raw string) {
	t.Helper()
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	mbr, _ := os.ReadFile(Tools{}.withDefaults().GPTMBR)
	if !bytes.Equal(b[:len(mbr)], mbr) {
		t.Error("the protective MBR does not carry syslinux gptmbr.bin")
	}
	if b[510] != 0x55 || b[511] != 0xaa || b[446+4] != 0xee {
		t.Error("no protective MBR partition of type 0xee")
	}
	d, err := diskfs.Open(raw, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	g, ok := tbl.(*gpt.Table)
	if !ok || len(g.Partitions) == 0 {
		t.Fatalf("partition table %T", tbl)
	}
	p := g.Partitions[0]
	if p.Type != gpt.EFISystemPartition || p.Attributes&legacyBIOSBootable == 0 || p.Start != partStartLBA {
		t.Errorf("partition 1: type %s attributes %#x start %d", p.Type, p.Attributes, p.Start)
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(fs.Label()); got != bootLabel {
		t.Errorf("FAT label %q, want %q", got, bootLabel)
	}
	for _, name := range []string{"/EFI/BOOT/BOOTX64.EFI", "/loader/loader.conf", "/loader/entries/map646.conf",
		"/syslinux.cfg", "/vmlinuz", "/initrd.img", "/ldlinux.sys", "/ldlinux.c32"} {
		fi, err := fs.Stat(strings.TrimPrefix(name, "/")) // io/fs paths
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !fi.ModTime().Equal(time.Unix(fatEpoch, 0)) {
			t.Errorf("%s: time %v, want the fixed %v", name, fi.ModTime().UTC(), time.Unix(fatEpoch, 0).UTC())
		}
	}
	entry, err := fs.ReadFile("loader/entries/map646.conf")
	if err != nil || !bytes.Contains(entry, []byte("options "+DefaultCmdline)) {
		t.Errorf("loader entry %q (%v) lacks the command line", entry, err)
	}
}

func TestBuildRejects(t *testing.T) {
	cfg := testConfig(t)
	dyn, _ := exec.LookPath("true")
	badCfg := filepath.Join(t.TempDir(), "bad.hcl")
	os.WriteFile(badCfg, []byte("translator {\n  prefix = 42\n}\n"), 0o644)
	outDir := filepath.Join(t.TempDir(), "never")
	defer func() {
		if _, err := os.Stat(outDir); err == nil {
			t.Error("an invalid configuration still wrote an output directory")
		}
	}()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"missing config", Options{Config: "/nonexistent/map646.hcl", Binary: dyn, OutDir: t.TempDir()}, "nonexistent"},
		{"dynamic binary", Options{Config: cfg, Binary: dyn, OutDir: t.TempDir()}, "CGO_ENABLED=0"},
		{"no output", Options{Config: cfg, Binary: dyn}, "required"},
		{"invalid config", Options{Config: badCfg, Binary: dyn, OutDir: outDir}, "bad.hcl:2:"},
	} {
		_, err := Build(tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestKernelPath(t *testing.T) {
	p, err := KernelPath()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			testenv.SkipOrFail(t, err.Error())
		}
		t.Fatal(err)
	}
	b := make([]byte, 0x210)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	// A bzImage carries "HdrS" at offset 0x202 (Linux boot protocol).
	if string(b[0x202:0x206]) != "HdrS" {
		t.Fatalf("%s is not a bzImage", p)
	}
}

func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "maps.csv"), []byte("198.51.100.20,2001:db8:6::20\n"), 0o644)
	cfg := filepath.Join(dir, "map646.hcl")
	os.WriteFile(cfg, []byte(strings.Replace(testHCL, "translator {", "translator {\n  mappings_file = \"maps.csv\"", 1)), 0o644)
	files, err := configFiles(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range files {
		got[f.Path] = string(f.Data)
	}
	if !strings.Contains(got[GuestConfigPath], `mappings_file = "maps.csv"`) {
		t.Errorf("config not baked as written: %q", got[GuestConfigPath])
	}
	if got["/etc/maps.csv"] != "198.51.100.20,2001:db8:6::20\n" {
		t.Errorf("mappings file not at /etc/maps.csv: %v", got)
	}

	// A name in a subdirectory keeps its place relative to /etc.
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "sub", "m.csv"), []byte("198.51.100.30,2001:db8:6::30\n"), 0o644)
	os.WriteFile(cfg, []byte(strings.Replace(testHCL, "translator {", "translator {\n  mappings_file = \"sub/m.csv\"", 1)), 0o644)
	if files, err := configFiles(cfg); err != nil || len(files) != 2 || files[1].Path != "/etc/sub/m.csv" {
		t.Errorf("sub/m.csv: %v %v", files, err)
	}

	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("translator {\n  prefix = \"2001:db8:64::/97\"\n}\n"), 0o644)
	_, err = configFiles(bad)
	if err == nil || !strings.Contains(err.Error(), "bad.hcl:2:") {
		t.Fatalf("invalid config: err %v, want a diagnostic naming bad.hcl:2:col", err)
	}
}
