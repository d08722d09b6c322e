package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// translator starts and stops one translator inside the router namespace.
// start returns only once translated traffic passes (an echo through it).
type translator interface {
	start(ctx context.Context, t topology) (*process, error)
	stop(ctx context.Context, t topology) error
	tunName() string
}

// setup is one column of the comparison: how the client reaches the server.
type setup struct {
	Key   string    // flag and table key
	Label string    // table heading
	Dst   string    // the address the client sends to
	Mode  *linkMode // map646 setups: the link mode
	xlat  translator
}

// taygaTranslator runs TAYGA with one EAM ("map") entry: Debian's 0.9.2,
// or the apalrd/tayga fork with workers > 0 (one thread and tun queue each).
type taygaTranslator struct {
	bin, dir string
	tun      string
	workers  int // 0: no `workers` line (0.9.2 does not know it)
	proc     *process
}

const (
	taygaTun     = "bn-tayga"
	taygaForkTun = "bn-taygaf"
)

func (x *taygaTranslator) tunName() string { return x.tun }

func (x *taygaTranslator) confPath() string { return filepath.Join(x.dir, x.tun+".conf") }

// taygaConfig is TAYGA's configuration for the address plan: its own IPv4
// address (ICMP error source), the RFC 6052 prefix and the EAM entry. The
// fork also gets its worker count and an offlink-mtu equal to the IPv6
// link's (its default, 1280, would fragment every larger DF=0 packet).
func taygaConfig(tun string, workers int) string {
	s := fmt.Sprintf("tun-device %s\nipv4-addr %s\nprefix %s\nmap %s %s\n",
		tun, taygaSelf4, prefix6, public4, server6)
	if workers > 0 {
		s += fmt.Sprintf("workers %d\nofflink-mtu %d\n", workers, mtu6)
	}
	return s
}

func (x *taygaTranslator) start(ctx context.Context, t topology) (*process, error) {
	if err := os.WriteFile(x.confPath(), []byte(taygaConfig(x.tun, x.workers)), 0o644); err != nil {
		return nil, err
	}
	// TAYGA reads the tun MTU once at start: create the device persistently,
	// set MTU and routes, then start the translator on it.
	if _, err := runIn(ctx, t.Router, x.bin, "-c", x.confPath(), "--mktun"); err != nil {
		return nil, err
	}
	if err := tunRoutes(ctx, t, x.tun); err != nil {
		return nil, err
	}
	p, err := startIn(t.Router, filepath.Join(x.dir, x.tun+".log"), x.bin, "-c", x.confPath(), "-d")
	if err != nil {
		return nil, err
	}
	x.proc = p
	if err := waitForward(ctx, t, p, 15*time.Second); err != nil {
		return p, err
	}
	return p, nil
}

// tunRoutes brings a tun up at the IPv6 side's MTU and routes the public
// IPv4 prefix and the /96 into it.
func tunRoutes(ctx context.Context, t topology, tun string) error {
	return ipBatch(ctx, t.Router, []string{
		fmt.Sprintf("link set %s mtu %d up", tun, mtu6),
		fmt.Sprintf("route replace %s dev %s", publicNet4, tun),
		fmt.Sprintf("route replace %s dev %s", prefix6, tun),
	})
}

func (x *taygaTranslator) stop(ctx context.Context, t topology) error {
	var err error
	if x.proc != nil {
		err = x.proc.stop(5 * time.Second)
		x.proc = nil
	}
	if _, rerr := runIn(ctx, t.Router, x.bin, "-c", x.confPath(), "--rmtun"); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// map646Translator runs `map646 run -c FILE` in one link mode, with either
// the one mapping of the plan or a generated table of n mappings that
// contains it.
type map646Translator struct {
	bin, dir  string
	mappings  int // 1: a mapping block; more: a mappings_file of this many lines
	name      string
	limit     time.Duration // start-up bound; 0: 90 s
	mode      linkMode
	templates map[string]string // -template overrides: mode -> file
	proc      *process
	tuns      []*os.File // fd mode: the harness's copies of the inherited tun's queues
	noFwd     bool       // forwarding was turned off and must be restored
}

const (
	map646Tun   = "bn-map646"
	map646FDTun = "bn-map646fd"
	// map646FDQTun is the multi-queue tun of map646-fd-2q.
	map646FDQTun = "bn-map646fq"
	// map646FDPTun is the tun without a virtio_net_hdr of map646-fd-plain.
	map646FDPTun = "bn-map646fp"
)

func (x *map646Translator) tunName() string {
	switch {
	case x.mode.PassTun && x.mode.TunQueues > 1:
		return map646FDQTun
	case x.mode.PassTun && x.mode.VnetHdr == 0:
		return map646FDPTun
	case x.mode.PassTun:
		return map646FDTun
	case x.mode.NoForwarding:
		return "" // no tun: the veths themselves
	}
	return map646Tun
}

// config renders the mode's HCL template for this translator.
func (x *map646Translator) config(csv string) (string, error) {
	name, src, err := templateSource(x.mode, x.templates)
	if err != nil {
		return "", err
	}
	d := newTemplateData(csv)
	d.FDQueues = max(1, x.mode.TunQueues)
	return renderTemplate(name, src, d)
}

func (x *map646Translator) start(ctx context.Context, t topology) (*process, error) {
	csv := ""
	if x.mappings > 1 {
		csv = filepath.Join(x.dir, fmt.Sprintf("mappings-%d.csv", x.mappings))
		if _, err := os.Stat(csv); err != nil {
			if err := writeMappingsCSV(csv, x.mappings); err != nil {
				return nil, err
			}
		}
	}
	src, err := x.config(csv)
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(x.dir, x.name+".hcl")
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		return nil, err
	}
	var extra []*os.File
	if x.mode.PassTun {
		fs, err := openTunQueuesIn(t.Router, x.tunName(), max(1, x.mode.TunQueues), x.mode.VnetHdr)
		if err != nil {
			return nil, err
		}
		x.tuns = fs
		if err := tunRoutes(ctx, t, x.tunName()); err != nil {
			return nil, err
		}
		extra = append(extra, fs...)
	}
	if x.mode.NoForwarding {
		x.noFwd = true
		if err := setForwarding(ctx, t, false); err != nil {
			return nil, err
		}
	}
	// A control socket of its own: the default path is shared by every
	// map646 on the machine, whatever its network namespace.
	sock := filepath.Join(x.dir, x.name+".sock")
	p, err := startInWith(t.Router, filepath.Join(x.dir, x.name+".log"), extra, x.bin, "run", "-c", conf, "--control-socket", sock)
	if err != nil {
		return nil, err
	}
	x.proc = p
	limit := x.limit
	if limit == 0 {
		limit = 90 * time.Second
	}
	if err := waitForward(ctx, t, p, limit); err != nil {
		return p, err
	}
	return p, nil
}

func (x *map646Translator) stop(ctx context.Context, t topology) error {
	var err error
	if x.proc != nil {
		err = x.proc.stop(15 * time.Second)
		x.proc = nil
	}
	// The tun is not persistent: it goes with the last descriptor.
	for _, f := range x.tuns {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	x.tuns = nil
	if x.noFwd {
		x.noFwd = false
		if ferr := setForwarding(ctx, t, true); ferr != nil && err == nil {
			err = ferr
		}
	}
	return err
}

// setForwarding turns the router namespace's IPv4 and IPv6 forwarding on or
// off.
func setForwarding(ctx context.Context, t topology, on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	_, err := runIn(ctx, t.Router, "sysctl", "-qw", "net.ipv4.ip_forward="+v, "net.ipv6.conf.all.forwarding="+v)
	return err
}

// openTunIn creates a tun (IFF_TUN|IFF_NO_PI: bare IP packets) named name
// inside namespace ns and returns its descriptor. The device lives in ns
// while any copy of the descriptor is open.
func openTunIn(ns, name string) (*os.File, error) {
	fs, err := openTunQueuesIn(ns, name, 1, 0)
	if err != nil {
		return nil, err
	}
	return fs[0], nil
}

// openTunQueuesIn is openTunIn for a tun with n queues: with n > 1 it is
// opened with IFF_MULTI_QUEUE and each queue's descriptor is returned.
// With vnet > 0 it is opened as a VM manager opens a VM's tap: with
// IFF_VNET_HDR, a virtio_net_hdr of vnet bytes (TUNSETVNETHDRSZ) and the
// offloads of a virtio-net guest that negotiated checksum, TSO and USO
// (TUNSETOFFLOAD, without USO where the kernel lacks it).
//
// The thread that joins ns returns to the harness's namespace before it is
// unlocked, so that it lives on. It must not end: the harness starts its
// children (the iperf3 server, the translators) with Pdeathsig, which
// prctl(2) ties to the thread that forked the child, not to the process; a
// Go thread that ends with its locked goroutine may be the one that started
// the iperf3 server, which the kernel then SIGKILLs, and every later TCP
// test is refused.
func openTunQueuesIn(ns, name string, n, vnet int) ([]*os.File, error) {
	type result struct {
		f   []*os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, err}
			return
		}
		defer home.Close()
		fs, err := func() ([]*os.File, error) {
			nsf, err := os.Open(filepath.Join("/var/run/netns", ns))
			if err != nil {
				return nil, err
			}
			defer nsf.Close()
			if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("setns %s: %w", ns, err)
			}
			flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
			if n > 1 {
				flags |= unix.IFF_MULTI_QUEUE
			}
			if vnet > 0 {
				flags |= unix.IFF_VNET_HDR
			}
			var fs []*os.File
			for range n {
				fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err == nil {
					var ifr *unix.Ifreq
					if ifr, err = unix.NewIfreq(name); err == nil {
						ifr.SetUint16(flags)
						if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
							err = fmt.Errorf("TUNSETIFF %s: %w", name, err)
						} else if vnet > 0 && len(fs) == 0 {
							err = vmOffloads(fd, vnet)
						}
					}
					if err != nil {
						unix.Close(fd)
					}
				} else {
					err = fmt.Errorf("open /dev/net/tun: %w", err)
				}
				if err != nil {
					for _, f := range fs {
						f.Close()
					}
					return nil, err
				}
				fs = append(fs, os.NewFile(uintptr(fd), "/dev/net/tun:"+name))
			}
			return fs, nil
		}()
		if rerr := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Still in ns: the thread stays locked and ends with this
			// goroutine rather than run other goroutines in ns. Say so,
			// since a child it started is killed with it.
			for _, f := range fs {
				f.Close()
			}
			ch <- result{nil, fmt.Errorf("return from namespace %s: %w", ns, rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{fs, err}
	}()
	r := <-ch
	return r.f, r.err
}

// vmOffloads sets the virtio_net_hdr size and offloads of a tun opened with
// IFF_VNET_HDR as QEMU does for a guest whose virtio-net driver took
// checksum offload, TSO and USO (tap_fd_set_vnet_hdr_len,
// tap_fd_set_offload): what the kernel side may hand the fd unfinished.
func vmOffloads(fd, vnet int) error {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnet); err != nil {
		return fmt.Errorf("TUNSETVNETHDRSZ %d: %w", vnet, err)
	}
	const csum, tso4, tso6, uso4, uso6 = 0x01, 0x02, 0x04, 0x20, 0x40 // TUN_F_*
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, csum|tso4|tso6|uso4|uso6); err != nil {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, csum|tso4|tso6); err != nil {
			return fmt.Errorf("TUNSETOFFLOAD: %w", err)
		}
	}
	return nil
}

// waitForward pings the public address from the client until a reply comes
// back through the translator, or the translator dies, or the time is up.
func waitForward(ctx context.Context, t topology, p *process, limit time.Duration) error {
	return waitForwardTo(ctx, t, p, public4, limit)
}

// waitForwardTo is waitForward for the destination dst.
func waitForwardTo(ctx context.Context, t topology, p *process, dst string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if p.exited() {
			return fmt.Errorf("%s exited during start-up: %v%s", p.name, p.err, p.logTail())
		}
		if _, err := runIn(ctx, t.Client, "ping", "-n", "-c", "1", "-W", "1", dst); err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no echo reply from %s through %s within %v%s", dst, p.name, limit, p.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// writeMappingsCSV writes n "ipv4,ipv6" lines. The benchmark's own pair
// (198.51.100.10 <-> 2001:db8:6::10) sits in the middle; the others map
// 10.0.0.0 upwards to 2001:db8:7::/64. They only fill the table: no
// traffic is ever sent to them, and their routes exist only inside the
// harness's router namespace.
func writeMappingsCSV(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	v4 := netip.MustParseAddr("10.0.0.0")
	v6 := netip.MustParseAddr("2001:db8:7::")
	for i := 0; i < n; i++ {
		if i == n/2 {
			fmt.Fprintf(w, "%s,%s\n", public4, server6)
			continue
		}
		w.WriteString(v4.String())
		w.WriteByte(',')
		w.WriteString(v6.String())
		w.WriteByte('\n')
		v4, v6 = v4.Next(), v6.Next()
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
