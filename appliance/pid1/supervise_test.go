package pid1

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/map646/map646/appliance/daemon"
)

// fakeRuns is a RunFunc that fails or forwards as told, per configuration.
type fakeRuns struct {
	mu    sync.Mutex
	calls []ConfigFile
	works map[string]bool // by Source: becomes ready and runs until ctx ends
}

func (f *fakeRuns) run(ctx context.Context, c ConfigFile, _ *slog.Logger, _ <-chan struct{}, onReady func(daemon.ReadyInfo)) error {
	f.mu.Lock()
	f.calls = append(f.calls, c)
	works := f.works[c.Source]
	f.mu.Unlock()
	if !works {
		return errors.New("interface eth0: link not found")
	}
	onReady(daemon.ReadyInfo{Digest: c.Source})
	<-ctx.Done()
	return nil
}

func (f *fakeRuns) sources() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s []string
	for _, c := range f.calls {
		s = append(s, c.Source)
	}
	return s
}

// syncBuffer is a console written from the supervisor's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// fastRestarts is the default policy with millisecond pauses.
func fastRestarts() restartPolicy {
	p := defaultRestarts()
	p.minPause, p.maxPause = time.Millisecond, 4*time.Millisecond
	return p
}

var (
	drive = ConfigFile{Path: "/run/config-drive/map646.hcl", Root: "/run/config-drive", Source: "drive:MAP646"}
	baked = ConfigFile{Path: BakedConfig, Source: "baked"}
)

// TestSuperviseFallsBackToBaked: a drive's configuration that loads but
// cannot run gets three attempts, then the baked configuration runs.
func TestSuperviseFallsBackToBaked(t *testing.T) {
	f := &fakeRuns{works: map[string]bool{"baked": true}}
	var console syncBuffer
	ready := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		supervise(ctx, fastRestarts(), []ConfigFile{drive, baked}, f.run, slog.New(slog.DiscardHandler), &console, nil,
			func(r daemon.ReadyInfo, source string) { ready <- source })
	}()
	select {
	case src := <-ready:
		if src != "baked" {
			t.Fatalf("ready with %s", src)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("never ready; console:\n%s", console.String())
	}
	cancel()
	<-done
	if got := strings.Join(f.sources(), " "); got != "drive:MAP646 drive:MAP646 drive:MAP646 baked" {
		t.Errorf("runs %q", got)
	}
	if f.calls[0].Root != "/run/config-drive" || f.calls[3].Root != "" {
		t.Errorf("roots %q %q: the drive's runs must be confined, the baked one not", f.calls[0].Root, f.calls[3].Root)
	}
	if !strings.Contains(console.String(), "map646: falling back to the baked configuration") {
		t.Errorf("console:\n%s", console.String())
	}
}

// TestSuperviseStaysUpWhenNothingRuns: with every configuration failing,
// the attempts are bounded, nothing reboots, PID 1 says so and waits for
// the power-off.
func TestSuperviseStaysUpWhenNothingRuns(t *testing.T) {
	f := &fakeRuns{}
	var console syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		supervise(ctx, fastRestarts(), []ConfigFile{drive, baked}, f.run, slog.New(slog.DiscardHandler), &console, nil, func(daemon.ReadyInfo, string) {})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(console.String(), "staying up without it") {
		if time.Now().After(deadline) {
			t.Fatalf("console:\n%s", console.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // no more attempts meanwhile
	select {
	case <-done:
		t.Fatal("supervise returned before the power-off")
	default:
	}
	if n := len(f.sources()); n != 2*defaultRestarts().attempts {
		t.Errorf("%d runs, want %d", n, 2*defaultRestarts().attempts)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("supervise did not end with the power-off")
	}
}

// TestSuperviseStopsDuringBackoff: a power-off while waiting to restart
// ends the wait.
func TestSuperviseStopsDuringBackoff(t *testing.T) {
	pol := defaultRestarts()
	pol.minPause = time.Hour
	f := &fakeRuns{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		supervise(ctx, pol, []ConfigFile{baked}, f.run, slog.New(slog.DiscardHandler), &syncBuffer{}, nil, func(daemon.ReadyInfo, string) {})
	}()
	for len(f.sources()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("supervise waited out its backoff after the power-off")
	}
}

// TestDriveConfigConfined: a drive's configuration naming a file outside
// the drive is invalid (and so the baked one runs).
func TestDriveConfigConfined(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "map646.hcl")
	src := "translator {\n  prefix = \"2001:db8:64::/96\"\n  mappings_file = \"../../../../../../etc/hostname\"\n}\n"
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	err := checkConfig(context.Background(), ConfigFile{Path: p, Root: dir})
	if err == nil || !strings.Contains(err.Error(), p+":3:19: Cannot read mappings_file") {
		t.Fatalf("err = %v", err)
	}
}

// TestSuperviseForgetsOldFailures: a run that forwarded for stableAfter
// before failing starts the count again, so a translator that fails once
// a day is restarted with its configuration rather than dropped for the
// baked one.
func TestSuperviseForgetsOldFailures(t *testing.T) {
	for _, tc := range []struct {
		stable time.Duration
		want   string // the source of the 5th run
	}{
		{0, "drive:MAP646"},
		{time.Hour, "baked"},
	} {
		pol := fastRestarts()
		pol.stableAfter = tc.stable
		var mu sync.Mutex
		var runs []string
		ctx, cancel := context.WithCancel(context.Background())
		run := func(_ context.Context, c ConfigFile, _ *slog.Logger, _ <-chan struct{}, onReady func(daemon.ReadyInfo)) error {
			mu.Lock()
			runs = append(runs, c.Source)
			if len(runs) == 5 {
				cancel()
			}
			mu.Unlock()
			onReady(daemon.ReadyInfo{})
			return errors.New("data path: queue 0 failed")
		}
		supervise(ctx, pol, []ConfigFile{drive, baked}, run, slog.New(slog.DiscardHandler), &syncBuffer{}, nil, func(daemon.ReadyInfo, string) {})
		if len(runs) != 5 || runs[4] != tc.want {
			t.Errorf("stableAfter %v: runs %v, want the 5th with %s", tc.stable, runs, tc.want)
		}
	}
}
