package tun

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// fakeKernel accepts TUNSETOFFLOAD flags within a capability mask, like a
// kernel answering EINVAL to flags it does not know.
type fakeKernel struct {
	accepts int   // flags the kernel knows
	broken  bool  // refuses even 0
	calls   []int // flags asked for, in order
}

func (k *fakeKernel) set(flags int) error {
	k.calls = append(k.calls, flags)
	if k.broken || flags&^k.accepts != 0 {
		return unix.EINVAL
	}
	return nil
}

func TestNegotiateOffloads(t *testing.T) {
	all := OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4 | OffloadUSO6
	tso := OffloadCsum | OffloadTSO4 | OffloadTSO6
	for _, tc := range []struct {
		name    string
		kernel  fakeKernel
		want    bool
		granted int
		calls   []int
		err     bool
	}{
		{"linux >= 6.2", fakeKernel{accepts: all}, true, all, []int{all}, false},
		{"no USO: retry without", fakeKernel{accepts: tso | 0x08 | 0x10}, true, tso, []int{all, tso}, false},
		{"no offloads at all", fakeKernel{accepts: 0}, true, 0, []int{all, tso, 0}, false},
		{"offloads not wanted", fakeKernel{accepts: all}, false, 0, []int{0}, false},
		{"refuses everything", fakeKernel{broken: true}, true, 0, []int{all, tso, 0}, true},
	} {
		k := tc.kernel
		got, err := negotiateOffloads(k.set, tc.want)
		if (err != nil) != tc.err || got != tc.granted {
			t.Errorf("%s: got %#x, %v; want %#x, error %v", tc.name, got, err, tc.granted, tc.err)
		}
		if len(k.calls) != len(tc.calls) {
			t.Errorf("%s: asked %#x, want %#x", tc.name, k.calls, tc.calls)
			continue
		}
		for i := range k.calls {
			if k.calls[i] != tc.calls[i] {
				t.Errorf("%s: asked %#x, want %#x", tc.name, k.calls, tc.calls)
				break
			}
		}
	}
}

func TestOffloadNames(t *testing.T) {
	for flags, want := range map[int]string{
		0:                                       "none",
		OffloadCsum | OffloadTSO4 | OffloadTSO6: "csum,tso4,tso6",
		OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadUSO4 | OffloadUSO6: "csum,tso4,tso6,uso4,uso6",
	} {
		if got := OffloadNames(flags); got != want {
			t.Errorf("OffloadNames(%#x) = %q, want %q", flags, got, want)
		}
	}
}

func TestOpenConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Queues: -1},
		{Queues: MaxQueues + 1},
		{Name: strings.Repeat("x", unix.IFNAMSIZ)},
		{MTU: 70000},
	} {
		if d, err := Open(c); err == nil {
			d.Close()
			t.Errorf("Open(%+v) succeeded", c)
		}
	}
}

// TestOpen creates a real multi-queue tun in a fresh namespace and checks
// what the kernel made of it.
func TestOpen(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-tun-")
	for _, offload := range []bool{true, false} {
		var d *Device
		err := ns.Do(func() (err error) {
			d, err = Open(Config{Name: "dp-tun0", Queues: 3, MTU: 1520, Offload: offload})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if d.Name() != "dp-tun0" || len(d.Queues()) != 3 || d.MTU() != 1520 {
			t.Errorf("device %s, %d queues, MTU %d", d.Name(), len(d.Queues()), d.MTU())
		}
		if offload && !strings.HasPrefix(d.Offloads(), "csum,tso4,tso6") {
			t.Errorf("offloads %q on Linux %s", d.Offloads(), uname())
		}
		if !offload && d.Offloads() != "none" {
			t.Errorf("offloads %q though not asked for", d.Offloads())
		}
		err = ns.Do(func() error {
			ifc, err := net.InterfaceByName("dp-tun0")
			if err != nil {
				return err
			}
			if ifc.MTU != 1520 || ifc.Flags&net.FlagUp == 0 {
				return errors.New("interface " + ifc.Name + " not up with MTU 1520: " + ifc.Flags.String())
			}
			// No link-local address: the kernel would send MLD and router
			// solicitations from it into the translator.
			addrs, err := ifc.Addrs()
			if err != nil {
				return err
			}
			if len(addrs) != 0 {
				return fmt.Errorf("interface %s has addresses %v", ifc.Name, addrs)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		for i, q := range d.Queues() {
			if flags := tunFlags(t, q); flags != unix.IFF_TUN|unix.IFF_NO_PI|unix.IFF_VNET_HDR|unix.IFF_MULTI_QUEUE {
				t.Errorf("queue %d: TUNGETIFF flags %#x", i, flags)
			}
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		if _, err := ns.Output("ip", "link", "show", "dp-tun0"); err == nil {
			t.Error("interface still there after Close")
		}
	}
}

func uname() string {
	var u unix.Utsname
	unix.Uname(&u)
	return unix.ByteSliceToString(u.Release[:])
}

// tunFlags asks the kernel how the queue's tun was set up.
func tunFlags(t *testing.T, q *Queue) uint16 {
	t.Helper()
	rc, err := q.f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags uint16
	var ioctlErr error
	err = rc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil {
			ioctlErr = err
			return
		}
		ioctlErr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr)
		flags = ifr.Uint16()
	})
	if err != nil || ioctlErr != nil {
		t.Fatalf("TUNGETIFF: %v %v", err, ioctlErr)
	}
	return flags
}
