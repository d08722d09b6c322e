package daemon

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/map646/map646/appliance/config"
)

// hangingAnnouncer is an announcer whose Close never finishes on its own
// (a BGP stop waiting on a neighbour that never reads): it returns only
// when its context ends.
type hangingAnnouncer struct{ closed chan error }

func (h *hangingAnnouncer) Update(context.Context, Announcement) error { return nil }
func (h *hangingAnnouncer) Status() any                                { return nil }
func (h *hangingAnnouncer) Close(ctx context.Context) error {
	<-ctx.Done()
	h.closed <- ctx.Err()
	return ctx.Err()
}

// TestReloadBoundsAnnouncerStop: a reload that restarts an announcer whose
// stop hangs gives up on it after announcerStopTimeout, even though the
// serve context has no deadline, and starts the new one: the serve loop
// (health checks, repairs) is not stalled with it.
func TestReloadBoundsAnnouncerStop(t *testing.T) {
	defer func(d time.Duration) { announcerStopTimeout = d }(announcerStopTimeout)
	announcerStopTimeout = 50 * time.Millisecond
	k := &instanceKind{name: "bgp", settings: func(c *config.Config) any { return []string{c.File} }}
	hung := &hangingAnnouncer{closed: make(chan error, 1)}
	old, next := &config.Config{File: "old.hcl"}, &config.Config{File: "new.hcl"}
	d := &daemon{
		opts: Options{Announcers: []AnnouncerKind{k.kind()}},
		log:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		anns: []runningAnnouncer{{"bgp", hung, k.settings(old), old}},
	}
	done := make(chan error, 1)
	go func() {
		_, err := d.reloadAnnouncers(context.Background(), old, next)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("reload: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reloadAnnouncers still waiting for the hung stop after 10 s")
	}
	if err := <-hung.closed; err != context.DeadlineExceeded {
		t.Errorf("the hung stop ended with %v, want its deadline", err)
	}
	if live := k.live(); len(live) != 1 || live[0].settings != "[new.hcl]" {
		t.Errorf("announcers running: %v; want the new one", live)
	}
}
