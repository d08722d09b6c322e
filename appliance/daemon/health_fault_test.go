package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/map646/map646/stack"
)

// The real data path says why it is unhealthy.
var _ interface{ Check() error } = (*stack.Datapath)(nil)

// checkingDatapath is a data path that says why it is not forwarding.
type checkingDatapath struct {
	fakeDatapath
	err error
}

func (p *checkingDatapath) Check() error { return p.err }

// TestDataPathFault: the fault that withdraws the announcements is the
// data path's own reason where it gives one (the tun queue nobody reads),
// not a generic one; a data path with only Healthy gets the generic one.
func TestDataPathFault(t *testing.T) {
	healthy := &fakeDatapath{ctx: context.Background()}
	healthy.healthy.Store(true)
	sick := &fakeDatapath{ctx: context.Background()}
	queue := errors.New("tun map646 has 3 queues attached now, 2 of them served here")
	for _, c := range []struct {
		name string
		dp   datapath
		want string // "": no fault
	}{
		{"healthy", healthy, ""},
		{"unhealthy", sick, "data path workers not forwarding"},
		{"checked, fine", &checkingDatapath{}, ""},
		{"checked, a queue nobody reads", &checkingDatapath{err: queue}, "data path: tun map646 has 3 queues attached now"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := dataPathFault(c.dp)
			if c.want == "" {
				if err != nil {
					t.Fatalf("fault %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("fault %v, want one saying %q", err, c.want)
			}
		})
	}
}
