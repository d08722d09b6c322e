package qemutests

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/map646/map646/image"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/qemu-tests/internal/qmp"
)

// Generous: a boot under TCG takes 5-20 s and the machine is shared.
const (
	bootTimeout     = 3 * time.Minute
	shutdownTimeout = time.Minute
)

// readyRE matches the guest's ready line (appliance/pid1). The link after
// tun= may hold a space: NIC mode names it "nic eth0,eth1".
var readyRE = regexp.MustCompile(`map646 ready version=(\S+) digest=([0-9a-f]+) mappings=(\d+) config=(\S+)(?: tun=(.+?))? uptime=([0-9.]+)s`)

// ready is a parsed ready line.
type ready struct {
	Digest   string
	Mappings int
	Config   string
	Tun      string
	Uptime   float64 // seconds since the guest kernel started
}

type vmConfig struct {
	// Direct kernel boot of imageDir's vmlinuz and initrd.img, unless
	// disk is set.
	imageDir string
	disk     string // a disk image to boot from (snapshot: never written)
	format   string // "raw" or "qcow2"
	uefi     bool   // OVMF instead of SeaBIOS
	drives   []string
	nics     []*os.File // tap fds, in order: eth0, eth1, ...
	append   string     // extra kernel command line (direct boot only)
}

// vm is one QEMU process and its serial console.
type vm struct {
	t       *testing.T
	cmd     *exec.Cmd
	qmpPath string
	start   time.Time

	mu      sync.Mutex
	console strings.Builder
	changed chan struct{} // closed and replaced on every console line
	exited  chan struct{}
	exitErr error
}

func startVM(t *testing.T, c vmConfig) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{t: t, qmpPath: filepath.Join(dir, "qmp.sock"), changed: make(chan struct{}), exited: make(chan struct{})}
	args := []string{
		"-accel", "tcg", "-m", "256", "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-qmp", "unix:" + v.qmpPath + ",server=on,wait=off",
		"-no-reboot", // a panic or reboot ends QEMU: the test sees it at once
		"-device", "virtio-rng-pci",
		"-nic", "none",
	}
	switch {
	case c.disk != "":
		args = append(args, "-drive", "file="+c.disk+",format="+c.format+",if=virtio,snapshot=on")
	default:
		cmdline := image.DefaultCmdline // what the disk's boot loaders pass
		if c.append != "" {
			cmdline += " " + c.append
		}
		args = append(args, "-kernel", filepath.Join(c.imageDir, "vmlinuz"),
			"-initrd", filepath.Join(c.imageDir, "initrd.img"), "-append", cmdline)
	}
	if c.uefi {
		vars := filepath.Join(dir, "OVMF_VARS.fd")
		b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS.fd")
		if err != nil {
			testenv.SkipOrFailf(t, "OVMF not installed (Debian package ovmf): %v", err)
		}
		os.WriteFile(vars, b, 0o644)
		args = append(args,
			"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE.fd",
			"-drive", "if=pflash,format=raw,file="+vars)
	}
	for _, d := range c.drives {
		args = append(args, "-drive", "file="+d+",format=raw,if=virtio,readonly=on")
	}
	for i := range c.nics {
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=n%d,fd=%d", i, 3+i),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,mac=52:54:00:64:60:%02x", i, i))
	}
	v.cmd = exec.Command("qemu-system-x86_64", args...)
	v.cmd.ExtraFiles = c.nics
	stdout, err := v.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.cmd.Stderr = v.cmd.Stdout
	v.start = time.Now()
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go v.readConsole(stdout)
	t.Cleanup(func() {
		select {
		case <-v.exited:
		default:
			v.cmd.Process.Kill() // only the QEMU this test started
			<-v.exited
		}
		if t.Failed() {
			t.Logf("serial console:\n%s", v.Console())
		}
	})
	return v
}

func (v *vm) readConsole(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		v.mu.Lock()
		v.console.WriteString(line)
		v.console.WriteByte('\n')
		close(v.changed)
		v.changed = make(chan struct{})
		v.mu.Unlock()
	}
	v.exitErr = v.cmd.Wait()
	close(v.exited)
}

// Console is everything the guest printed so far.
func (v *vm) Console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.console.String()
}

// waitFor waits until the console matches re and returns the submatches.
func (v *vm) waitFor(re *regexp.Regexp, timeout time.Duration) ([]string, error) {
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		m := re.FindStringSubmatch(v.console.String())
		changed := v.changed
		v.mu.Unlock()
		if m != nil {
			return m, nil
		}
		select {
		case <-changed:
		case <-v.exited:
			if m := re.FindStringSubmatch(v.Console()); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("QEMU exited (%v) before the console showed %q", v.exitErr, re)
		case <-deadline:
			return nil, fmt.Errorf("no %q on the console within %v", re, timeout)
		}
	}
}

// waitReady waits for the ready line and logs the boot time.
func (v *vm) waitReady(what string) ready {
	v.t.Helper()
	m, err := v.waitFor(readyRE, bootTimeout)
	if err != nil {
		v.t.Fatal(err)
	}
	r := ready{Digest: m[2], Config: m[4], Tun: m[5]}
	r.Mappings, _ = strconv.Atoi(m[3])
	r.Uptime, _ = strconv.ParseFloat(m[6], 64)
	v.t.Logf("%s: ready %.2f s after the kernel started, %.1f s after QEMU started", what, r.Uptime, time.Since(v.start).Seconds())
	return r
}

// qmp sends one QMP command and waits for its reply.
func (v *vm) qmp(command string) error {
	return qmp.Execute(v.qmpPath, command)
}

// powerdown presses the ACPI power button and expects the guest to stop
// its translator, say so, and power the machine off (QEMU exits 0).
func (v *vm) powerdown() {
	v.t.Helper()
	if err := v.qmp("system_powerdown"); err != nil {
		v.t.Fatal(err)
	}
	select {
	case <-v.exited:
	case <-time.After(shutdownTimeout):
		v.t.Fatalf("QEMU still running %v after system_powerdown", shutdownTimeout)
	}
	if v.exitErr != nil {
		v.t.Fatalf("QEMU exited with %v after system_powerdown", v.exitErr)
	}
	con := v.Console()
	for _, want := range []string{"map646: shutting down (powering off)", "map646: stopped cleanly, powering off", "reboot: Power down"} {
		if !strings.Contains(con, want) {
			v.t.Errorf("console lacks %q after system_powerdown", want)
		}
	}
}
