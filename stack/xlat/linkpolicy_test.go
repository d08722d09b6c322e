package xlat

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/map646/map646/mapping"
)

// A link that follows its MTU (NIC mode) and a daemon that reloads new
// mappings update the engine at the same time: neither update may lose
// the other. Run with -race.
func TestLinkPolicyAndReloadConcurrent(t *testing.T) {
	const rounds = 200
	maps := make([]*mapping.Snapshot, rounds)
	for i := range maps {
		maps[i] = testSnapshot(t) // a new table each time, as a reload makes
	}
	e, err := NewEngine(&Config{Map: testSnapshot(t), Policy: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	var mtu6 atomic.Int64 // the link's MTU, as the NIC keeps it
	follow := func(p *Policy) {
		if p.IPv6MTU == 0 {
			p.IPv6MTU = int(mtu6.Load())
		}
	}
	mtu6.Store(1500)
	if err := e.SetLinkPolicy(follow); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { // the daemon's reloads
		for _, m := range maps {
			if err := e.Reload(&Config{Map: m, Policy: testPolicy()}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() { // the link's MTU events
		for i := range rounds {
			mtu6.Store(int64(1280 + i))
			if err := e.SetLinkPolicy(follow); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	got := e.Config()
	if got.Map != maps[rounds-1] {
		t.Error("the engine translates with an older mapping table than the last reload's")
	}
	if want := 1280 + rounds - 1; got.Policy.IPv6MTU != want || e.st.Load().mtu6 != want {
		t.Errorf("IPv6 MTU %d (compiled %d), want the link's last, %d", got.Policy.IPv6MTU, e.st.Load().mtu6, want)
	}
}

// The link's policy applies to every configuration reloaded after it, and
// fills in only what the configuration leaves to the link; a link policy
// the engine refuses leaves everything as it was.
func TestLinkPolicyReload(t *testing.T) {
	e, err := NewEngine(&Config{Map: testSnapshot(t), Policy: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	mtu4 := 1400
	follow := func(p *Policy) {
		if p.IPv4MTU == 0 {
			p.IPv4MTU = mtu4
		}
	}
	if err := e.SetLinkPolicy(follow); err != nil {
		t.Fatal(err)
	}
	if got := e.Config().Policy.IPv4MTU; got != 1400 {
		t.Fatalf("IPv4 MTU %d after the link's policy, want 1400", got)
	}
	given := &Config{Map: testSnapshot(t), Policy: testPolicy()}
	if err := e.Reload(given); err != nil {
		t.Fatal(err)
	}
	if got := e.Config(); got.Policy.IPv4MTU != 1400 || got.Map != given.Map {
		t.Errorf("after a reload: IPv4 MTU %d, want the link's 1400 (new map: %v)", got.Policy.IPv4MTU, got.Map == given.Map)
	}
	if given.Policy.IPv4MTU != 0 {
		t.Error("the link's policy changed the caller's configuration")
	}
	set := testPolicy()
	set.IPv4MTU = 1300
	if err := e.Reload(&Config{Map: given.Map, Policy: set}); err != nil {
		t.Fatal(err)
	}
	if got := e.Config().Policy.IPv4MTU; got != 1300 {
		t.Errorf("a configured IPv4 MTU became %d, want 1300", got)
	}
	if err := e.Reload(given); err != nil {
		t.Fatal(err)
	}
	before := e.Config()
	if err := e.SetLinkPolicy(func(p *Policy) { p.IPv6MTU = 1000 }); err == nil {
		t.Fatal("IPv6 MTU 1000 from the link accepted")
	}
	if e.Config() != before {
		t.Error("a refused link policy replaced the configuration")
	}
	if err := e.Reload(given); err != nil {
		t.Fatalf("the refused link policy stayed: %v", err)
	}
	if got := e.Config().Policy.IPv4MTU; got != 1400 {
		t.Errorf("IPv4 MTU %d, want the link's 1400", got)
	}
}
