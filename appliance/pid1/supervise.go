package pid1

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/map646/map646/appliance/daemon"
)

// Restart policy of the translator under PID 1. Rebooting when the
// translator fails would loop for ever on a configuration that cannot
// work (and a reboot takes the console messages with it); instead each
// configuration gets a few attempts, then the next one (the baked
// configuration after a drive's), and when none works PID 1 stays up,
// says so on the console and waits to be powered off.
type restartPolicy struct {
	attempts           int // per configuration, in a row
	minPause, maxPause time.Duration
	// stableAfter is how long a run must have forwarded for its failure
	// to count as new trouble rather than one more failed attempt.
	stableAfter time.Duration
}

// defaultRestarts is PID 1's restart policy.
func defaultRestarts() restartPolicy {
	return restartPolicy{attempts: 3, minPause: time.Second, maxPause: 30 * time.Second, stableAfter: 10 * time.Minute}
}

// supervise runs the translator with the first of configs, restarting it
// when it stops on its own, moving to the next configuration after
// pol.attempts failures in a row, until ctx ends.
func supervise(ctx context.Context, pol restartPolicy, configs []ConfigFile, run RunFunc, log *slog.Logger, console io.Writer, reload <-chan struct{}, onReady func(daemon.ReadyInfo, string)) {
	i, failures := 0, 0
	pause := pol.minPause
	for ctx.Err() == nil {
		c := configs[i]
		var readyAt time.Time
		err := run(ctx, c, log, reload, func(r daemon.ReadyInfo) {
			readyAt = time.Now()
			onReady(r, c.Source)
		})
		if ctx.Err() != nil {
			if err != nil {
				log.Error("translator", "err", err)
			}
			return
		}
		if err == nil {
			err = fmt.Errorf("stopped")
		}
		if !readyAt.IsZero() && time.Since(readyAt) >= pol.stableAfter {
			failures, pause = 0, pol.minPause
		}
		failures++
		fmt.Fprintf(console, "map646: the translator (configuration %s) stopped: %v\n", c.Source, err)
		if failures >= pol.attempts {
			if i+1 == len(configs) {
				fmt.Fprintf(console, "map646: the translator failed %d times with every configuration; "+
					"staying up without it (fix the configuration and reboot, or power off)\n", failures)
				<-ctx.Done()
				return
			}
			i++
			failures, pause = 0, pol.minPause
			fmt.Fprintf(console, "map646: falling back to the %s configuration\n", configs[i].Source)
			continue
		}
		fmt.Fprintf(console, "map646: restarting the translator in %v (attempt %d of %d)\n", pause, failures+1, pol.attempts)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, pol.maxPause)
	}
}
