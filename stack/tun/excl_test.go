package tun

import (
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/internal/netnstest"
)

// TestOpenNeverAttachesToAnExistingTun: a second Open of a live tun's name,
// and an Open over a persistent tun left behind, fail with an error that
// says what is in the way, and leave the first device working.
func TestOpenNeverAttachesToAnExistingTun(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	defer func(w time.Duration) { busyWait = w }(busyWait)
	busyWait = 50 * time.Millisecond
	ns := netnstest.New(t, "dp-excl-")
	err := ns.Do(func() error {
		first, err := Open(Config{Name: "dp-excl0", Queues: 2})
		if err != nil {
			return err
		}
		defer first.Close()
		if d, err := Open(Config{Name: "dp-excl0", Queues: 2}); err == nil {
			d.Close()
			t.Error("a second Open attached to the live tun")
		} else if !strings.Contains(err.Error(), "exists already") {
			t.Errorf("second Open: %v", err)
		}
		if out, err := ns.Output("ip", "link", "show", "dp-excl0", "up"); err != nil || !strings.Contains(out, "dp-excl0") {
			t.Errorf("first tun after the refused Open: %v %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	ns.MustRun(t, "ip", "tuntap", "add", "dev", "dp-stale0", "mode", "tun", "multi_queue")
	err = ns.Do(func() error {
		d, err := Open(Config{Name: "dp-stale0", Queues: 1})
		if err == nil {
			d.Close()
			t.Error("Open attached to a persistent tun")
		} else if !strings.Contains(err.Error(), "ip link del dp-stale0") {
			t.Errorf("Open over a persistent tun: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenWaitsForADyingTun: a tun whose owner is going away (here: its
// last queue closes 200 ms after the second Open starts, as a killed
// translator's io_uring lets go of its registered queue after the process
// is reaped) does not make a restart fail; the new Open gets a fresh tun.
func TestOpenWaitsForADyingTun(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-dying-")
	err := ns.Do(func() error {
		first, err := Open(Config{Name: "dp-dying0", Queues: 2})
		if err != nil {
			return err
		}
		closed := make(chan struct{})
		time.AfterFunc(200*time.Millisecond, func() { first.Close(); close(closed) })
		start := time.Now()
		d, err := Open(Config{Name: "dp-dying0", Queues: 2})
		<-closed
		if err != nil {
			t.Errorf("Open while the old tun was going away: %v", err)
			return nil
		}
		defer d.Close()
		if waited := time.Since(start); waited < 150*time.Millisecond {
			t.Errorf("Open returned after %v, before the old tun was gone", waited)
		}
		if len(d.Queues()) != 2 {
			t.Errorf("%d queues, want 2", len(d.Queues()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenOverALinkThatIsNotATun: a link of the name that is not a tun (a
// veth here; a bridge, a NIC) is not going away: Open says so at once,
// without the wait for a dying tun (busyWait) in front of the error.
func TestOpenOverALinkThatIsNotATun(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-other-")
	ns.MustRun(t, "ip", "link", "add", "dp-veth0", "type", "veth", "peer", "name", "dp-veth1")
	err := ns.Do(func() error {
		start := time.Now()
		d, err := Open(Config{Name: "dp-veth0", Queues: 1})
		if err == nil {
			d.Close()
			t.Error("Open took a veth")
			return nil
		}
		if !strings.Contains(err.Error(), "is not a tun (its driver is veth)") {
			t.Errorf("Open over a veth: %v", err)
		}
		if took := time.Since(start); took > busyWait/4 {
			t.Errorf("Open took %v to refuse a link that is not a tun (busyWait %v)", took, busyWait)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
