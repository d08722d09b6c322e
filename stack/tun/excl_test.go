package tun

import (
	"strings"
	"testing"

	"github.com/map646/map646/internal/netnstest"
)

// TestOpenNeverAttachesToAnExistingTun: a second Open of a live tun's name,
// and an Open over a persistent tun left behind, fail with an error that
// says what is in the way, and leave the first device working.
func TestOpenNeverAttachesToAnExistingTun(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
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
