package failovertest

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/map646/map646/appliance/bgp"
	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/ra"
	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack"
	"github.com/map646/map646/stack/tun"
	"github.com/map646/map646/stack/xlat"
)

// helperEnv makes the test binary a translator process: the data path,
// the BGP speaker and the router advertisements assembled from one HCL
// file, as `map646 run` does. It is used when no map646 binary is given
// (MAP646_BIN), so the experiment does not depend on the daemon.
const helperEnv = "MAP646_FAILOVER_TRANSLATOR"

func TestMain(m *testing.M) {
	if conf := os.Getenv(helperEnv); conf != "" {
		os.Exit(translatorMain(conf))
	}
	os.Exit(m.Run())
}

// translatorMain runs one translator from the HCL file conf until SIGTERM.
// Its stop order is the one that loses nothing: withdraw the routes (BGP
// and RA), let the neighbours act on it, then stop translating.
func translatorMain(conf string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	fail := func(err error) int {
		log.Error("translator failed", "err", err)
		return 1
	}
	cfg, err := config.Load(conf)
	if err != nil {
		return fail(err)
	}
	xc, err := cfg.Xlat()
	if err != nil {
		return fail(err)
	}
	eng, err := xlat.NewEngine(xc)
	if err != nil {
		return fail(err)
	}
	tc := cfg.Translator.Tun
	dev, err := tun.Open(tun.Config{Name: tc.Name, Queues: tc.Queues, MTU: tc.MTU, Offload: tc.Offload})
	if err != nil {
		return fail(err)
	}
	defer dev.Close()
	v4 := mapping.Aggregate4(cfg.Snapshot().Table())
	v6 := []netip.Prefix{cfg.Translator.Prefix}
	for _, p := range append(append([]netip.Prefix{}, v4...), v6...) {
		if out, err := exec.Command("ip", "route", "replace", p.String(), "dev", dev.Name()).CombinedOutput(); err != nil {
			return fail(fmt.Errorf("route %v: %v: %s", p, err, out))
		}
	}
	exec.Command("sysctl", "-qw", "net.ipv4.conf."+dev.Name()+".rp_filter=0").Run()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dp, err := stack.ServeTun(ctx, eng, dev, log)
	if err != nil {
		return fail(err)
	}
	var spk *bgp.Speaker
	if cfg.BGP != nil {
		bc, err := bgp.FromConfig(cfg.BGP)
		if err != nil {
			return fail(err)
		}
		if spk, err = bgp.New(ctx, bc, log); err != nil {
			return fail(err)
		}
	}
	ras, err := ra.StartSet(ra.FromConfig(cfg.RouterAdvertisements), log)
	if err != nil {
		return fail(err)
	}
	announce := func(healthy bool) {
		if spk != nil {
			if err := spk.Update(ctx, v4, v6, healthy); err != nil {
				log.Error("bgp update", "err", err)
			}
		}
		if err := ras.Update(v6, healthy); err != nil {
			log.Error("ra update", "err", err)
		}
	}
	healthy := dp.Healthy()
	announce(healthy)
	fmt.Println("ready")

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-sig:
			running = false
		case <-tick.C:
			if h := dp.Healthy(); h != healthy {
				healthy = h
				announce(h)
			}
		}
	}
	closeCtx, closeCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer closeCancel()
	if spk != nil {
		if err := spk.Close(closeCtx); err != nil {
			log.Error("bgp close", "err", err)
		}
	}
	if err := ras.Close(); err != nil {
		log.Error("ra close", "err", err)
	}
	// Packets already on their way here still get translated.
	time.Sleep(200 * time.Millisecond)
	cancel()
	dp.Wait()
	return 0
}
