package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/metrics"
)

// Announcement is what the translator asks the network to route to it:
// the mapped IPv4 prefixes (aggregated) towards the IPv4 side and the
// RFC 6052 prefix towards the servers. Healthy is false while the data
// path is not forwarding; announcers withdraw then, so that traffic moves
// to the other translators.
type Announcement struct {
	IPv4, IPv6 []netip.Prefix
	Healthy    bool
}

// Equal reports whether two announcements say the same.
func (a Announcement) Equal(b Announcement) bool {
	return a.Healthy == b.Healthy && slices.Equal(a.IPv4, b.IPv4) && slices.Equal(a.IPv6, b.IPv6)
}

// Announcer tells routers about the translator: a BGP speaker, router
// advertisements. The daemon calls Update at start, after every reload
// and whenever the data path's health changes, and Close at shutdown,
// before it removes its routes.
type Announcer interface {
	Update(ctx context.Context, a Announcement) error
	Status() any
	Close(ctx context.Context) error
}

// AnnouncerFactory builds an announcer from the configuration. It returns
// nil, nil when its configuration block is absent.
type AnnouncerFactory func(cfg *config.Config, log *slog.Logger) (Announcer, error)

// AnnouncerKind is one kind of announcer the daemon may start.
type AnnouncerKind struct {
	Name string
	New  AnnouncerFactory
	// Settings returns the part of the configuration New builds this
	// kind's announcer from (its block; required). A reload restarts the
	// announcer only when they changed (reflect.DeepEqual), so that a
	// change to one announcer leaves the others and their sessions alone.
	Settings func(cfg *config.Config) any
}

// runningAnnouncer is an announcer the daemon started, with its name, the
// settings it was built with and the configuration it was built from
// (without the mapping table), to build it again.
type runningAnnouncer struct {
	name     string
	a        Announcer
	settings any
	built    *config.Config
}

// announcerConfig is cfg without its mapping table and entries: what an
// announcer is built from, kept for as long as it runs (which may be
// many reloads) without keeping an old table alive. Every exported field
// of config.Config is copied (TestAnnouncerConfigCopiesEveryField).
func announcerConfig(cfg *config.Config) *config.Config {
	c := &config.Config{File: cfg.File, Digest: cfg.Digest, Translator: cfg.Translator, Interfaces: cfg.Interfaces,
		Routes: cfg.Routes, Metrics: cfg.Metrics, Log: cfg.Log, RunAs: cfg.RunAs, BGP: cfg.BGP,
		RouterAdvertisements: cfg.RouterAdvertisements, Warnings: cfg.Warnings}
	c.Translator.Mappings = nil
	return c
}

// startAnnouncers builds every announcer of kinds whose configuration is
// present. On error the ones already built are closed.
func startAnnouncers(ctx context.Context, kinds []AnnouncerKind, cfg *config.Config, log *slog.Logger) ([]runningAnnouncer, error) {
	var out []runningAnnouncer
	for _, k := range kinds {
		if k.Settings == nil {
			closeAnnouncers(ctx, out, log)
			return nil, fmt.Errorf("announcer %s: no Settings", k.Name)
		}
		a, err := k.New(cfg, log.With("announcer", k.Name))
		if err != nil {
			closeAnnouncers(ctx, out, log)
			return nil, fmt.Errorf("announcer %s: %w", k.Name, err)
		}
		if a != nil {
			out = append(out, runningAnnouncer{k.Name, a, k.Settings(cfg), announcerConfig(cfg)})
		}
	}
	return out, nil
}

func closeAnnouncers(ctx context.Context, as []runningAnnouncer, log *slog.Logger) {
	for i := len(as) - 1; i >= 0; i-- {
		if err := as[i].a.Close(ctx); err != nil {
			log.Warn("closing announcer", "announcer", as[i].name, "err", err)
		}
	}
}

// announcerStopTimeout bounds how long a reload waits for a changed
// announcer to stop: the serve loop runs the reload, and a BGP stop that
// hangs (a neighbour that never reads) must not stall health checks and
// repairs with it. A variable so that tests need not wait that long.
var announcerStopTimeout = 5 * time.Second

// reloadAnnouncers brings the announcers to cfg (just loaded; old is the
// configuration loaded before it), kind by kind, and reports whether any
// was restarted. One whose settings are those it runs with keeps running,
// its sessions untouched. One whose settings changed, or whose last
// start failed, is closed first (a BGP speaker holds its listening port
// and its neighbours' sessions, which a second speaker could not take
// over) and built again from cfg; if that fails, the previous one is
// built again from the configuration it was built from, so that a block
// the process cannot serve (a router advertisement after the raw socket
// capability was dropped, a port in use) costs no announcement that
// worked. The failure is kept in annFaults (the announcer's status and
// map646_announcer_failed; not /healthz, which says whether the
// translator forwards) until a
// reload builds this kind with the file's settings: the next reload
// retries, even of the same file.
func (d *daemon) reloadAnnouncers(ctx context.Context, old, cfg *config.Config) (restarted bool, err error) {
	d.mu.Lock()
	running := slices.Clone(d.anns)
	faults := d.annFaults
	d.mu.Unlock()
	var next []runningAnnouncer
	var errs []error
	newFaults := map[string]string{}
	for _, k := range d.opts.Announcers {
		want := k.Settings(cfg)
		i := slices.IndexFunc(running, func(r runningAnnouncer) bool { return r.name == k.Name })
		_, failed := faults[k.Name]
		switch {
		case i >= 0 && reflect.DeepEqual(running[i].settings, want):
			next = append(next, running[i])
			continue
		case i < 0 && !failed && reflect.DeepEqual(k.Settings(old), want):
			continue // absent before and now
		}
		restarted = true
		log := d.log.With("announcer", k.Name)
		var prev *runningAnnouncer
		if i >= 0 {
			prev = &running[i]
			d.mu.Lock() // no announcement reaches it once closed (a Stats that took the list just before may still read its Status, which stays safe)
			d.anns = slices.DeleteFunc(slices.Clone(d.anns), func(r runningAnnouncer) bool { return r.name == k.Name })
			d.mu.Unlock()
			cctx, cancel := context.WithTimeout(ctx, announcerStopTimeout)
			if err := prev.a.Close(cctx); err != nil {
				log.Warn("closing announcer", "err", err)
			}
			cancel()
		}
		a, err := k.New(cfg, log)
		if err == nil {
			if a != nil {
				next = append(next, runningAnnouncer{k.Name, a, want, announcerConfig(cfg)})
				log.Info("announcer restarted with the new settings")
			}
			continue
		}
		err = fmt.Errorf("announcer %s: %w", k.Name, err)
		if prev == nil {
			err = fmt.Errorf("%w; not running", err)
		} else if again, perr := k.New(prev.built, log); perr != nil || again == nil {
			err = fmt.Errorf("%w; not running: starting it again with its previous settings failed too: %v", err, perr)
		} else {
			next = append(next, runningAnnouncer{k.Name, again, prev.settings, prev.built})
			err = fmt.Errorf("%w; running again with its previous settings", err)
		}
		log.Error("announcer not started with the new settings; retried at the next reload", "err", err)
		newFaults[k.Name] = err.Error()
		errs = append(errs, err)
	}
	d.mu.Lock()
	d.anns = next
	d.annFaults = newFaults
	d.mu.Unlock()
	return restarted, errors.Join(errs...)
}

// announcerFault is the status (Stats, metrics) of an announcer whose
// last start failed: why, and the status of the one running instead (the
// previous settings), if any.
type announcerFault struct {
	name    string
	Error   string `json:"error"`
	Running any    `json:"running,omitempty"`
}

// Collect emits map646_announcer_failed, and the series of the announcer
// running instead.
func (f announcerFault) Collect(emit metrics.Emit) {
	emit("map646_announcer_failed", "1 while an announcer could not be started with the configuration's settings (see the reload's answer).",
		metrics.Gauge, 1, "announcer", f.name)
	if src, ok := f.Running.(metrics.Source); ok {
		src.Collect(emit)
	}
}

// announcerStatuses are the statuses of anns (the announcers running)
// for Stats, in the order of kinds, a failed one's (faults) wrapped in
// an announcerFault. Called without d.mu: an announcer's Status may wait.
func announcerStatuses(kinds []AnnouncerKind, anns []runningAnnouncer, faults map[string]string) []metrics.Status {
	var out []metrics.Status
	for _, k := range kinds {
		var st any
		i := slices.IndexFunc(anns, func(r runningAnnouncer) bool { return r.name == k.Name })
		if i >= 0 {
			st = anns[i].a.Status()
		}
		if f, ok := faults[k.Name]; ok {
			st = announcerFault{name: k.Name, Error: f, Running: st}
		} else if i < 0 {
			continue
		}
		out = append(out, metrics.Status{Name: k.Name, Status: st})
	}
	return out
}
