package bgp

import (
	"context"
	"log/slog"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// logger hands GoBGP's log lines to the daemon's slog.Logger, so that BGP
// session changes appear in the appliance log with everything else.
type logger struct{ l *slog.Logger }

func newLogger(l *slog.Logger) gobgplog.Logger { return logger{l.With("component", "bgp")} }

func (g logger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		if k == gobgplog.FieldFacility {
			continue
		}
		args = append(args, k, v)
	}
	g.l.Log(context.Background(), level, msg, args...)
}

// Panic and Fatal are logged as errors: GoBGP calls them for conditions an
// embedding program must survive (a failed listener), and the daemon decides.
func (g logger) Panic(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g logger) Fatal(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g logger) Error(msg string, f gobgplog.Fields) { g.emit(slog.LevelError, msg, f) }
func (g logger) Warn(msg string, f gobgplog.Fields)  { g.emit(slog.LevelWarn, msg, f) }

// Info lines from GoBGP are chatty (every FSM step); they go to debug.
func (g logger) Info(msg string, f gobgplog.Fields)  { g.emit(slog.LevelDebug, msg, f) }
func (g logger) Debug(msg string, f gobgplog.Fields) { g.emit(slog.LevelDebug-4, msg, f) }
func (g logger) SetLevel(gobgplog.LogLevel)          {}
func (g logger) GetLevel() gobgplog.LogLevel {
	if g.l.Enabled(context.Background(), slog.LevelDebug-4) {
		return gobgplog.DebugLevel
	}
	return gobgplog.InfoLevel
}
