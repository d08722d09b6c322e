package stack

import (
	"context"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/internal/netnstest"
)

// TestNetnsFDQueuesAreDistinct: the descriptors of a tun served as several
// queues must be that many queues: two readers of one queue (a tun opened
// without IFF_MULTI_QUEUE, which has one; the same queue's descriptor
// handed over twice) would take its packets in turn and reorder every
// flow, so ServeFDQueues refuses them, naming the descriptors.
func TestNetnsFDQueuesAreDistinct(t *testing.T) {
	netnstest.RequireTun(t, "dp-")
	ns := netnstest.New(t, "dp-fdqd-")
	var single int
	var multi []int
	if err := ns.Do(func() (err error) {
		if single, err = openVnetTun("dp-sq0", false); err != nil {
			return err
		}
		multi, err = openTunQueues("dp-mq0", 2, maxVnetHdr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(single)
	defer func() {
		for _, fd := range multi {
			unix.Close(fd)
		}
	}()
	dup := func(fd int) int {
		d, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(d) })
		return d
	}
	for _, c := range []struct {
		name string
		fds  []int
		want string // "" : served
	}{
		{name: "one queue twice", fds: []int{single, dup(single)}, want: "IFF_MULTI_QUEUE"},
		{name: "a queue of a multi-queue tun twice", fds: []int{multi[0], dup(multi[0])}, want: "the same queue"},
		{name: "two queues", fds: multi},
		{name: "one queue", fds: []int{single}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			d, err := ServeFDQueues(ctx, testEngine(t), c.fds, 1500, maxVnetHdr, nil)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				cancel()
				if err := d.Wait(); err != nil {
					t.Error(err)
				}
				return
			}
			if err == nil {
				cancel()
				d.Wait()
				t.Fatalf("served %v", c.fds)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to say %q", err, c.want)
			}
		})
	}
}
