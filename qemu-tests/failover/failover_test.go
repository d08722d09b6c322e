// Package failover runs the failover experiment of internal/failover
// with the translators as two appliance VMs under QEMU (TCG): each boots
// the map646 image with its own baked configuration and is attached to the
// router and to the server's bridge by taps created inside those
// namespaces. Stopping A is an ACPI power-button press (the guest's
// map646 withdraws its routes and powers off); a crash is QEMU killed,
// which also removes A's taps, as a dead VM's links go dark.
//
// The test needs root, /dev/net/tun, qemu-system-x86_64 and BIRD 2, and
// takes about three minutes under TCG on a busy machine; it runs only
// when MAP646_FAILOVER_VM=1, because the netns experiment already runs in
// every `go test ./...`.
package failover

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/map646/map646/image"
	"github.com/map646/map646/internal/failover"
	"github.com/map646/map646/internal/netnstest"
	"github.com/map646/map646/internal/testenv"
	"github.com/map646/map646/qemu-tests/internal/qmp"
)

var readyRE = regexp.MustCompile(`map646 ready version=\S+ digest=[0-9a-f]+ mappings=\d+ config=\S+(?: tun=\S+)? uptime=([0-9.]+)s`)

// vmTranslator is one appliance VM.
type vmTranslator struct {
	name     string
	imageDir string
	mac      byte // distinguishes the two VMs' NICs on the shared bridge
	n        *failover.Net
	dir      string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	console strings.Builder
	qmp     string
	gen     int
}

// Start creates the VM's taps (eth0 on the router, eth1 in the server's
// bridge), boots it and waits for its ready line.
func (x *vmTranslator) Start(t testing.TB) {
	t.Helper()
	up := x.n.Rtr.Tap(t, failover.RouterSide[x.name].Dev)
	dn := x.n.Srv.Tap(t, failover.ServerSide[x.name].Dev)
	x.n.AttachRouter(t, x.name)
	x.n.AttachServer(t, x.name)
	x.mu.Lock()
	x.gen++
	x.qmp = filepath.Join(x.dir, fmt.Sprintf("qmp-%d.sock", x.gen))
	x.console.Reset()
	x.mu.Unlock()
	args := []string{
		"-accel", "tcg", "-m", "256", "-smp", "1",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-qmp", "unix:" + x.qmp + ",server=on,wait=off",
		"-no-reboot", "-device", "virtio-rng-pci", "-nic", "none",
		"-kernel", filepath.Join(x.imageDir, "vmlinuz"),
		"-initrd", filepath.Join(x.imageDir, "initrd.img"),
		"-append", image.DefaultCmdline,
	}
	for i := range 2 {
		args = append(args, "-netdev", fmt.Sprintf("tap,id=n%d,fd=%d", i, 3+i),
			"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,mac=52:54:00:64:%02x:%02x", i, x.mac, i))
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.ExtraFiles = []*os.File{up, dn}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// QEMU holds the taps now; when it exits they disappear.
	up.Close()
	dn.Close()
	exited := make(chan struct{})
	readyCh := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			x.mu.Lock()
			x.console.WriteString(line + "\n")
			x.mu.Unlock()
			if readyRE.MatchString(line) {
				once.Do(func() { close(readyCh) })
			}
		}
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(exited)
	}()
	x.mu.Lock()
	x.cmd, x.exited = cmd, exited
	x.mu.Unlock()
	start := time.Now()
	select {
	case <-readyCh:
		t.Logf("VM %s ready %.1f s after QEMU started", x.name, time.Since(start).Seconds())
	case <-exited:
		t.Fatalf("VM %s exited while booting", x.name)
	case <-time.After(4 * time.Minute):
		t.Fatalf("VM %s not ready after 4 minutes", x.name)
	}
}

func (x *vmTranslator) take() (*exec.Cmd, chan struct{}, string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	cmd, exited := x.cmd, x.exited
	x.cmd = nil
	return cmd, exited, x.qmp
}

// Stop presses the ACPI power button and waits for the guest to power off.
func (x *vmTranslator) Stop(t testing.TB) {
	t.Helper()
	cmd, exited, qmpPath := x.take()
	if cmd == nil {
		return
	}
	if err := qmp.Execute(qmpPath, "system_powerdown"); err != nil {
		t.Errorf("VM %s: %v", x.name, err)
	}
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Errorf("VM %s still running 2 minutes after system_powerdown", x.name)
	}
}

// Crash kills QEMU: the guest gets no warning and its taps vanish.
func (x *vmTranslator) Crash(t testing.TB) {
	cmd, exited, _ := x.take()
	if cmd == nil {
		return
	}
	cmd.Process.Kill() // only the QEMU this test started
	<-exited
}

// Packets counts the frames on the VM's IPv4-side tap, both ways, as the
// router's namespace sees them (BIRD runs there).
func (x *vmTranslator) Packets() (int, uint64, bool) {
	x.mu.Lock()
	running, gen := x.cmd != nil, x.gen
	x.mu.Unlock()
	if !running {
		return 0, 0, false
	}
	n, ok := failover.DevPackets(x.n.BirdPID(), failover.RouterSide[x.name].Dev, false)
	return gen, n, ok
}

// Logs is the serial console, and the translator's own counters from its
// metrics endpoint when it is running (fetched from the server's side).
func (x *vmTranslator) Logs() string {
	x.mu.Lock()
	con, running := x.console.String(), x.cmd != nil
	x.mu.Unlock()
	if !running {
		return con
	}
	addr := strings.TrimSuffix(failover.ServerSide[x.name].Addr, "/64")
	out, err := x.n.Srv.Output("curl", "-sS", "-m", "5", "http://["+addr+"]:9646/metrics")
	if err != nil {
		return con + "\nmetrics: " + err.Error() + ": " + out
	}
	var m []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "map646_") {
			m = append(m, l)
		}
	}
	return con + "\n--- metrics ---\n" + strings.Join(m, "\n")
}

// buildImages compiles map646 for the guest and bakes one image per
// translator with `map646 image build`, the operators' command.
func buildImages(t *testing.T, dir string) map[string]string {
	t.Helper()
	bin := filepath.Join(dir, "map646")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/map646/map646/cmd/map646")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	images := map[string]string{}
	for _, name := range []string{"A", "B"} {
		r, s := failover.RouterSide[name], failover.ServerSide[name]
		extra := fmt.Sprintf(`
interface "eth0" {
  addresses = ["%s/30"]
}

interface "eth1" {
  addresses = ["%s"]
}

route {
  to  = "0.0.0.0/0"
  via = "%s"
}

metrics {
  listen = "[::]:9646"
}
`, r.Peer, s.Addr, failover.RouterGateway(name))
		conf := filepath.Join(dir, "xlat-"+name+".hcl")
		hcl := failover.TranslatorHCL(r.Peer, failover.RouterGateway(name), "eth1", "map646", extra)
		if err := os.WriteFile(conf, []byte(hcl), 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "image-"+name)
		start := time.Now()
		if b, err := exec.Command(bin, "image", "build", "-c", conf, "-o", out).CombinedOutput(); err != nil {
			t.Fatalf("map646 image build: %v\n%s", err, b)
		}
		t.Logf("image %s built in %.1f s", name, time.Since(start).Seconds())
		images[name] = out
	}
	return images
}

// TestFailoverVMs is the failover experiment with two appliance VMs.
// MAP646_FAILOVER_OUT=dir writes the timelines as failover-vm*.svg.
func TestFailoverVMs(t *testing.T) {
	if os.Getenv("MAP646_FAILOVER_VM") != "1" {
		t.Skip("set MAP646_FAILOVER_VM=1 to run the failover experiment with QEMU VMs (about 3 minutes)")
	}
	netnstest.Require(t, "fo-")
	for _, p := range []string{"qemu-system-x86_64", "go"} {
		if _, err := exec.LookPath(p); err != nil {
			testenv.SkipOrFailf(t, "needs %s", p)
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.SkipOrFail(t, "needs /dev/net/tun")
	}
	dir := t.TempDir()
	images := buildImages(t, dir)
	for _, v := range []failover.Variant{
		{Name: "graceful", Out: "failover-vm", Setting: "QEMU VMs", Window: 3 * time.Second, Away: 8 * time.Second,
			Settle: 6 * time.Second, Timeout: 4 * time.Minute, Spurious: 0.001},
		{Name: "crash", Out: "failover-vm-crash", Setting: "QEMU VMs", Crash: true, Window: 14 * time.Second, Away: 16 * time.Second,
			Settle: 6 * time.Second, Timeout: 4 * time.Minute, Spurious: 0.001},
	} {
		t.Run(v.Name, func(t *testing.T) {
			n := failover.NewNet(t)
			trs := map[string]failover.Translator{}
			for i, name := range []string{"A", "B"} {
				x := &vmTranslator{name: name, imageDir: images[name], mac: byte(0xa0 + i), n: n, dir: t.TempDir()}
				trs[name] = x
				t.Cleanup(func() { x.Crash(t) })
			}
			failover.Run(t, n, trs, v)
		})
	}
}
