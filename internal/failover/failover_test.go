package failover

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

const tunName = "xlat-tun"

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// map646Binary is the map646 command the translators run: MAP646_BIN if
// set (make failover passes the one it built), else the binary built from
// this checkout once per test run, so that the experiment tests the
// daemon operators run (its route set-up, health checks, withdraw drain).
func map646Binary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("MAP646_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "fo-bin-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildDir, "map646")
		out, err := exec.Command("go", "build", "-o", builtBin, "github.com/map646/map646/cmd/map646").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build map646: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// nsTranslator is a translator process in its own namespace, linked to the
// router and the server's bridge by veth pairs.
type nsTranslator struct {
	name, conf, logPath string
	ns                  *netnstest.NS
	bin                 string

	mu  sync.Mutex
	cmd *exec.Cmd
	gen int
}

func newNSTranslator(t *testing.T, n *Net, name string) *nsTranslator {
	routerID, gateway := RouterSide[name].Peer, RouterGateway(name)
	ns := netnstest.New(t, "fo-x"+name+"-")
	r, s := RouterSide[name], ServerSide[name]
	netnstest.Veth(t, n.Rtr, r.Dev, ns, "up0")
	netnstest.Veth(t, ns, "dn0", n.Srv, s.Dev)
	n.AttachRouter(t, name)
	n.AttachServer(t, name)
	ns.Sysctl("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.dn0.keep_addr_on_down=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	ns.Run("ip", "addr", "add", routerID+"/30", "dev", "up0")
	ns.Run("ip", "addr", "add", s.Addr, "dev", "dn0", "nodad")
	x := &nsTranslator{name: name, ns: ns, bin: map646Binary(t),
		conf: filepath.Join(n.Dir, "xlat-"+name+".hcl"), logPath: filepath.Join(n.Dir, "xlat-"+name+".log")}
	if err := os.WriteFile(x.conf, []byte(TranslatorHCL(routerID, gateway, "dn0", tunName, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if x.cmd != nil {
			x.cmd.Process.Kill() // only the process this test started
			x.cmd.Wait()
		}
	})
	return x
}

func (x *nsTranslator) Start(t testing.TB) {
	t.Helper()
	// After a crash the links are down and the kernel dropped the routes
	// through them.
	x.ns.Run("ip", "link", "set", "up0", "up")
	x.ns.Run("ip", "link", "set", "dn0", "up")
	x.ns.Run("ip", "route", "replace", "default", "via", RouterGateway(x.name))
	cmd := x.ns.Command(x.bin, "run", "-c", x.conf, "--control-socket", x.Socket())
	f, err := os.OpenFile(x.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	x.mu.Lock()
	x.cmd = cmd
	x.gen++
	x.mu.Unlock()
}

// Socket is the control socket of `map646 run`.
func (x *nsTranslator) Socket() string { return x.conf + ".sock" }

func (x *nsTranslator) take() *exec.Cmd {
	x.mu.Lock()
	defer x.mu.Unlock()
	cmd := x.cmd
	x.cmd = nil
	return cmd
}

// Stop sends SIGTERM, as an init system or an operator would.
func (x *nsTranslator) Stop(t testing.TB) {
	t.Helper()
	cmd := x.take()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("translator %s exited: %v", x.name, err)
		}
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Errorf("translator %s did not stop within 15 s of SIGTERM", x.name)
	}
}

// Crash kills the process and takes the links down: a VM that dies.
func (x *nsTranslator) Crash(t testing.TB) {
	t.Helper()
	if cmd := x.take(); cmd != nil {
		cmd.Process.Kill()
		cmd.Wait()
	}
	x.ns.Run("ip", "link", "set", "up0", "down")
	x.ns.Run("ip", "link", "set", "dn0", "down")
}

// Packets counts what the kernel handed to the translator's tun (both
// directions of translation), from the process's view of /proc/net/dev.
func (x *nsTranslator) Packets() (int, uint64, bool) {
	x.mu.Lock()
	cmd, gen := x.cmd, x.gen
	x.mu.Unlock()
	if cmd == nil {
		return 0, 0, false
	}
	n, ok := DevPackets(cmd.Process.Pid, tunName, true)
	return gen, n, ok
}

func (x *nsTranslator) Logs() string {
	b, _ := os.ReadFile(x.logPath)
	return string(b)
}

// TestFailover is the failover experiment of the map646 paper, with
// routing doing the work: two stateless translators, an upstream router
// with equal-cost routes to both (BGP), an IPv6-only server that learns the
// way back from their router advertisements. A ping and six UDP streams
// run from the IPv4 client while translator A goes away and comes back.
// Traffic must go on through B, come back to A, and lose nothing outside
// the moments of change.
//
// The translators are `map646 run -c file` processes: MAP646_BIN=path, or
// the command built from this checkout. MAP646_FAILOVER_OUT=dir writes
// each timeline there as SVG and its numbers as Markdown.
func TestFailover(t *testing.T) {
	netnstest.RequireTun(t, "fo-")
	for _, v := range []Variant{
		// A is shut down: it withdraws its BGP routes, sends a final RA
		// and only then stops translating.
		{Name: "graceful", Out: "failover", Setting: "netns", Window: 2 * time.Second, Away: 5 * time.Second},
		// A dies: the process is killed and its links go down. The router
		// notices at once (the BGP session is on the dead link); the
		// server keeps A's RA route until neighbour unreachability
		// detection fails it or its lifetime (12 s) runs out.
		{Name: "crash", Out: "failover-crash", Setting: "netns", Crash: true, Window: 14 * time.Second, Away: 16 * time.Second},
	} {
		t.Run(v.Name, func(t *testing.T) {
			n := NewNet(t)
			trs := map[string]Translator{
				"A": newNSTranslator(t, n, "A"),
				"B": newNSTranslator(t, n, "B"),
			}
			Run(t, n, trs, v)
		})
	}
}
