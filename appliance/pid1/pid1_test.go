package pid1

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/internal/testenv"
)

// fatImage makes a FAT file system with mkfs.fat (dosfstools).
func fatImage(t *testing.T, label string, fat32 bool) string {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.fat")
	if err != nil {
		testenv.SkipOrFail(t, "mkfs.fat missing (Debian package dosfstools)")
	}
	p := filepath.Join(t.TempDir(), "fat.img")
	size := "2048" // KiB
	args := []string{"-C"}
	if fat32 {
		args = append(args, "-F", "32")
		size = "40960"
	}
	if label != "" {
		args = append(args, "-n", label)
	}
	args = append(args, p, size)
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.fat: %v\n%s", err, out)
	}
	return p
}

// isoImage makes an ISO9660 image with xorriso holding files.
func isoImage(t *testing.T, label string, files map[string]string) string {
	t.Helper()
	x, err := exec.LookPath("xorriso")
	if err != nil {
		testenv.SkipOrFail(t, "xorriso missing (Debian package xorriso)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for name, data := range files {
		p := filepath.Join(src, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(data), 0o644)
	}
	os.MkdirAll(src, 0o755)
	p := filepath.Join(dir, "drive.iso")
	out, err := exec.Command(x, "-as", "mkisofs", "-quiet", "-V", label, "-J", "-r", "-o", p, src).CombinedOutput()
	if err != nil {
		t.Fatalf("xorriso: %v\n%s", err, out)
	}
	return p
}

func probeFile(t *testing.T, p string) (string, FSType, bool) {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return ProbeLabel(f)
}

func TestProbeLabel(t *testing.T) {
	for _, tc := range []struct {
		name      string
		img       func(*testing.T) string
		wantLabel string
		wantFS    FSType
		wantOK    bool
	}{
		{"fat16 MAP646", func(t *testing.T) string { return fatImage(t, "MAP646", false) }, "MAP646", VFAT, true},
		{"fat32 cidata", func(t *testing.T) string { return fatImage(t, "cidata", true) }, "cidata", VFAT, true},
		{"fat unlabelled", func(t *testing.T) string { return fatImage(t, "", false) }, "", VFAT, true},
		{"iso config-2", func(t *testing.T) string { return isoImage(t, "config-2", nil) }, "config-2", ISO9660, true},
		{"iso MAP646", func(t *testing.T) string { return isoImage(t, "MAP646", nil) }, "MAP646", ISO9660, true},
		{"zeros", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "z")
			os.WriteFile(p, make([]byte, 64<<10), 0o644)
			return p
		}, "", "", false},
		{"short", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "s")
			os.WriteFile(p, []byte("x"), 0o644)
			return p
		}, "", "", false},
		{"mbr only", func(t *testing.T) string {
			b := make([]byte, 4096)
			b[510], b[511] = 0x55, 0xaa
			p := filepath.Join(t.TempDir(), "m")
			os.WriteFile(p, b, 0o644)
			return p
		}, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			label, fs, ok := probeFile(t, tc.img(t))
			if label != tc.wantLabel || fs != tc.wantFS || ok != tc.wantOK {
				t.Fatalf("got %q %q %v, want %q %q %v", label, fs, ok, tc.wantLabel, tc.wantFS, tc.wantOK)
			}
		})
	}
}

func TestClassifyLabel(t *testing.T) {
	for _, tc := range []struct {
		label string
		kind  DriveKind
		file  string
	}{
		{"MAP646", Map646Drive, "map646.hcl"},
		{"map646", Map646Drive, "map646.hcl"},
		{"cidata", NoCloudDrive, "user-data"},
		{"CIDATA", NoCloudDrive, "user-data"},
		{"config-2", ConfigDrive2, "openstack/latest/user_data"},
		{"CONFIG-2", ConfigDrive2, "openstack/latest/user_data"},
		{"M646BOOT", NotADrive, ""},
		{"", NotADrive, ""},
	} {
		k := ClassifyLabel(tc.label)
		if k != tc.kind || k.ConfigFile() != tc.file {
			t.Errorf("%q: %v %q, want %v %q", tc.label, k, k.ConfigFile(), tc.kind, tc.file)
		}
	}
}

// fakeSys lays out <root>/sys/class/<class>/<name>/dev (+ device/name).
func fakeSys(t *testing.T, root, class, name, majmin, devName string) {
	t.Helper()
	d := filepath.Join(root, "sys", "class", class, name)
	if err := os.MkdirAll(filepath.Join(d, "device"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "dev"), []byte(majmin+"\n"), 0o644)
	if devName != "" {
		os.WriteFile(filepath.Join(d, "device", "name"), []byte(devName+"\n"), 0o644)
	}
}

func TestFindDrive(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "dev")
	os.MkdirAll(dev, 0o755)
	// Device "nodes" are image files here: findDrive only reads them.
	link := func(name, img string) {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dev, name), b, 0o644)
	}
	fakeSys(t, root, "block", "vda", "253:0", "")
	link("vda", fatImage(t, "M646BOOT", false)) // the boot disk: not a drive
	fakeSys(t, root, "block", "vdb", "253:16", "")
	link("vdb", isoImage(t, "cidata", map[string]string{"user-data": "translator {}\n"}))

	d, err := findDrive(context.Background(), filepath.Join(root, "sys"), dev, 0, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d == nil || d.Kind != NoCloudDrive || d.FS != ISO9660 || d.Dev != filepath.Join(dev, "vdb") {
		t.Fatalf("found %+v, want the cidata ISO on vdb", d)
	}

	// No drive: the bounded wait ends with nil, not an error.
	os.Remove(filepath.Join(dev, "vdb"))
	os.RemoveAll(filepath.Join(root, "sys", "class", "block", "vdb"))
	start := time.Now()
	d, err = findDrive(context.Background(), filepath.Join(root, "sys"), dev, 300*time.Millisecond, io.Discard)
	if err != nil || d != nil {
		t.Fatalf("found %+v, %v; want none", d, err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatal("gave up before the wait")
	}

	// A drive that appears during the wait is found: it is added once
	// findDrive has opened vda, i.e. after a scan that found nothing.
	scanned := openedOnce(t, filepath.Join(dev, "vda"))
	late := fatImage(t, "MAP646", false)
	go func() {
		<-scanned
		link("vdc", late)
		fakeSys(t, root, "block", "vdc", "253:32", "")
	}()
	d, err = findDrive(context.Background(), filepath.Join(root, "sys"), dev, 5*time.Second, io.Discard)
	if err != nil || d == nil || d.Kind != Map646Drive {
		t.Fatalf("late drive: %+v, %v", d, err)
	}
}

// openedOnce returns a channel closed when path is next opened (inotify
// IN_OPEN), or when t ends.
func openedOnce(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, path, unix.IN_OPEN); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	t.Cleanup(func() { f.Close() })
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		var buf [unix.SizeofInotifyEvent + unix.PathMax + 1]byte
		f.Read(buf[:]) // one event, or an error once f is closed
	}()
	return ch
}

func TestEnsureNodeMakesMissingNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFail(t, "mknod needs root")
	}
	p := filepath.Join(t.TempDir(), "input", "event7")
	got, err := ensureNode(p, unix.S_IFCHR, "1:3") // /dev/null's number
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(got, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Fatalf("node mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if _, err := ensureNode(p+"x", unix.S_IFCHR, "garbage"); err == nil {
		t.Fatal("a bad device number was accepted")
	}
}

func TestPowerButtons(t *testing.T) {
	root := t.TempDir()
	fakeSys(t, root, "input", "event0", "13:64", "AT Translated Set 2 keyboard")
	fakeSys(t, root, "input", "event1", "13:65", "Power Button")
	fakeSys(t, root, "input", "mouse0", "13:32", "Power Button") // not an event device
	got, err := powerButtons(filepath.Join(root, "sys"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "event1" || got[0].MajMin != "13:65" {
		t.Fatalf("power buttons %+v", got)
	}
}

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputEventSize)
	binary.NativeEndian.PutUint16(b[16:], typ)
	binary.NativeEndian.PutUint16(b[18:], code)
	binary.NativeEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestWaitPowerKey(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(inputEvent(0, 0, 0))            // EV_SYN
	stream.Write(inputEvent(evKey, 30, 1))       // KEY_A
	stream.Write(inputEvent(evKey, keyPower, 0)) // release only
	stream.Write(inputEvent(evKey, keyPower, 1)) // press
	stream.Write(inputEvent(evKey, keyPower, 0))
	if err := waitPowerKey(&stream); err != nil {
		t.Fatal(err)
	}
	if stream.Len() != inputEventSize {
		t.Fatalf("read past the press: %d bytes left", stream.Len())
	}
	// No press: the end of the stream is an error, not a power-off.
	var none bytes.Buffer
	none.Write(inputEvent(evKey, keyPower, 0))
	if err := waitPowerKey(&none); !errors.Is(err, io.EOF) {
		t.Fatalf("err %v, want EOF", err)
	}
}

func TestParseCmdline(t *testing.T) {
	m := parseCmdline("console=ttyS0,115200 panic=5 quiet map646.drive_wait=500ms\n")
	if m["console"] != "ttyS0,115200" || m["panic"] != "5" || m["map646.drive_wait"] != "500ms" {
		t.Fatalf("%v", m)
	}
	if _, ok := m["quiet"]; !ok {
		t.Fatal("flag without value lost")
	}
}

func TestGuardRebootsOnPanic(t *testing.T) {
	var console bytes.Buffer
	halted := make(chan int, 1)
	fakeHalt := func(cmd int) error {
		halted <- cmd
		runtime.Goexit() // reboot(2) does not return either
		return nil
	}
	go func() {
		defer guard(&console, fakeHalt)
		panic("boom")
	}()
	select {
	case cmd := <-halted:
		if cmd != unix.LINUX_REBOOT_CMD_RESTART {
			t.Fatalf("halt %#x, want restart", cmd)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a panic did not reboot")
	}
	if !strings.Contains(console.String(), "map646: panic: boom") {
		t.Fatalf("console %q", console.String())
	}
}

func TestReadyLine(t *testing.T) {
	got := readyLine(daemon.ReadyInfo{Version: "v1", Digest: "ab12", Mappings: 3, Tun: "map646"}, "drive:MAP646", 8250*time.Millisecond)
	want := "map646 ready version=v1 digest=ab12 mappings=3 config=drive:MAP646 tun=map646 uptime=8.25s"
	if got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
	got = readyLine(daemon.ReadyInfo{Version: "v2", Digest: "ab12"}, "baked", 0)
	if want := "map646 ready version=v2 digest=ab12 mappings=0 config=baked uptime=0.00s"; got != want {
		t.Fatalf("%q\nwant %q", got, want)
	}
}

func TestReapChildren(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { reapChildren(stop); close(done) }()
	defer func() { close(stop); <-done }()
	// A child nobody waits for: without the reaper it stays a zombie.
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, &syscall.ProcAttr{})
	if err != nil {
		testenv.SkipOrFailf(t, "cannot start /bin/true: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return // reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d not reaped: %s", pid, readFile(fmt.Sprintf("/proc/%d/stat", pid)))
		}
		// The child may have exited before the reaper's signal.Notify
		// was in place; a later SIGCHLD, like the next child's, makes
		// it collect every zombie.
		syscall.Kill(os.Getpid(), syscall.SIGCHLD)
		time.Sleep(20 * time.Millisecond)
	}
}
