package bgp

import (
	"context"
	"log/slog"
)

// gobgpHandler hands GoBGP's log records to the daemon's slog handler one
// level lower: GoBGP logs every FSM step at info and its internals at
// debug, which would drown the appliance log, so its info lines become
// debug and its debug lines go below debug. Warnings and errors keep their
// level.
type gobgpHandler struct{ h slog.Handler }

func newGoBGPLogger(l *slog.Logger) *slog.Logger {
	return slog.New(gobgpHandler{l.With("component", "bgp").Handler()})
}

func gobgpLevel(l slog.Level) slog.Level {
	switch {
	case l < slog.LevelInfo:
		return slog.LevelDebug - 4
	case l < slog.LevelWarn:
		return slog.LevelDebug
	}
	return l
}

func (g gobgpHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return g.h.Enabled(ctx, gobgpLevel(l))
}

func (g gobgpHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Level = gobgpLevel(r.Level)
	return g.h.Handle(ctx, r)
}

func (g gobgpHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gobgpHandler{g.h.WithAttrs(as)}
}

func (g gobgpHandler) WithGroup(name string) slog.Handler {
	return gobgpHandler{g.h.WithGroup(name)}
}
