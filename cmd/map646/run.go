package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/demo"
)

func newRunCmd() *cobra.Command {
	var (
		path, socket, group, logLevel, logFormat string
		runUser, runGroup                        string
		demoConfig                               bool
	)
	cmd := &cobra.Command{
		Use:   "run -c FILE",
		Short: "Run the translator in the foreground (as root)",
		Long: `run starts the translator with the HCL configuration FILE and keeps it running
in the foreground, logging to stderr, until it receives SIGTERM or SIGINT.

On start it checks the configuration exactly as 'map646 check' does, creates the
tun device of the translator block (multi-queue, with offloads), routes the
mapped IPv4 prefixes (adjacent mappings aggregated) and the RFC 6052 prefix
into it, turns IPv4 and IPv6 forwarding on, configures the interface and route
blocks if there are any, and starts the metrics endpoint (metrics.listen:
Prometheus /metrics and /healthz) and the control socket that 'map646 stats'
and 'map646 reload' use. On stop it removes everything it installed.

Reload without a restart: edit the file, then 'map646 reload' (which prints the
outcome) or 'kill -HUP <pid>'. The new file is checked first; if it has errors
they are reported and the running configuration stays in use. Only the
routes that changed are touched; the tun, metrics and log settings take
effect at the next start.

Privileges: once set up, the translator keeps only the capabilities it still
needs (CAP_NET_ADMIN for reloads, route restores and the stop; also
CAP_NET_BIND_SERVICE when the BGP speaker listens on a port below 1024 and
CAP_NET_RAW for router advertisements) and, with a run_as block or --user,
runs as that user and group with no supplementary groups. The configuration
file (and its mappings_file) must then be readable by that user for reloads.
This needs a binary built with CGO_ENABLED=0, as 'make' builds it.

The log block of the configuration sets level and format unless --log-level
or --log-format is given (then the other one defaults to info / text).
Dropped packets are summarised in one warning line per 10 s, never one line
per packet; 'map646 stats' and the metrics have the counts by reason.

As a systemd service (the package installs map646.service): Type=notify.
Under $NOTIFY_SOCKET it sends READY=1 once packets flow, RELOADING=1 and
READY=1 around every reload, STOPPING=1 on SIGTERM, and, when WatchdogSec= is
set, WATCHDOG=1 at every health poll while the data path is healthy, so that
systemd restarts a translator that stopped forwarding. A translator that was
killed leaves nothing that stops the next start. Several translators on one
host (in different network namespaces) each need their own --control-socket.

The control socket is created with mode 0600: only root and the daemon's user
may use it, checked again from the peer's credentials at every connection.
--control-group lets the members of one more group in (mode 0660).`,
		Example: `  map646 run -c /etc/map646/map646.hcl
  map646 run -c map646.hcl --log-format json
  map646 run --demo-config        # the built-in demo: 198.51.100.10 <-> 2001:db8:6::10`,
		Args: noArgsTakeC,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if demoConfig == (path != "") {
				return fmt.Errorf("give either -c FILE or --demo-config")
			}
			if demoConfig {
				dir, err := os.MkdirTemp("", "map646-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				path = filepath.Join(dir, "demo.hcl")
				if err := os.WriteFile(path, demo.Config, 0o644); err != nil {
					return err
				}
			}
			var log *slog.Logger
			if logLevel != "" || logFormat != "" {
				var err error
				if log, err = daemon.NewLogger(cmd.ErrOrStderr(), logLevel, logFormat); err != nil {
					return err
				}
			}
			sd, err := newNotifier()
			if err != nil {
				return err
			}
			defer sd.Close()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			go func() {
				<-ctx.Done()
				sd.stopping()
			}()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			reload := make(chan struct{}, 1)
			go func() {
				for range hup {
					select {
					case reload <- struct{}{}:
					default: // one is already pending
					}
				}
			}()
			return daemon.Run(ctx, daemon.Options{
				ConfigPath:    path,
				Logger:        log,
				Reload:        reload,
				ControlSocket: socket,
				ControlGroup:  group,
				OnReady:       sd.ready,
				OnReload:      sd.reload,
				OnHealth:      sd.health,
				User:          runUser,
				Group:         runGroup,
				Version:       Version(),
				Announcers:    announcers(),
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&path, "config", "c", "", "the HCL configuration file")
	f.BoolVar(&demoConfig, "demo-config", false, "run the built-in demo configuration instead of a file")
	f.StringVar(&socket, "control-socket", daemon.DefaultControlSocket, "Unix socket for 'map646 stats' and 'map646 reload'")
	f.StringVar(&group, "control-group", "", "a group (name or number) whose members may also use the control socket (mode 0660)")
	f.StringVar(&runUser, "user", "", "once set up, run as this user (name or uid; overrides run_as.user)")
	f.StringVar(&runGroup, "group", "", "with --user or run_as: run as this group instead of the user's own (overrides run_as.group)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides the log block)")
	f.StringVar(&logFormat, "log-format", "", "text or json (overrides the log block)")
	cmd.MarkFlagFilename("config", "hcl")
	cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}
