package pid1

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
)

// BakedConfig is where the image builder puts the configuration.
const BakedConfig = "/etc/map646.hcl"

// driveMount is where a config drive is mounted (read-only); it stays
// mounted so that a mappings_file beside the configuration can be read.
const driveMount = "/run/config-drive"

// ConfigFile is a configuration to run and where it came from.
type ConfigFile struct {
	Path   string
	Root   string // "" or the directory the configuration's files must stay in (a config drive)
	Source string // "baked" or "drive:<kind>", for the console
}

// RunFunc runs the translator with the configuration cfg until ctx ends,
// calling onReady once it forwards. A value on reload asks it to re-read
// the configuration.
type RunFunc func(ctx context.Context, cfg ConfigFile, log *slog.Logger, reload <-chan struct{}, onReady func(daemon.ReadyInfo)) error

// Options are the parts of the appliance that PID 1 starts.
type Options struct {
	// Version is the translator's version, reported on the console.
	Version string
	// Announcers are the kinds of announcer the translator starts (BGP,
	// router advertisements) when their configuration block is present.
	Announcers []daemon.AnnouncerKind
}

// Main is the whole life of the appliance as PID 1. It never returns: it
// ends by powering off or rebooting the machine, including after a panic
// in this goroutine (a panic elsewhere kills PID 1, and the kernel's
// panic= parameter reboots).
func Main(opts Options) {
	console := io.Writer(os.Stdout)
	defer guard(console, halt)
	cmd := boot(opts, console)
	halt(cmd)
	select {} // the kernel refused to halt; PID 1 must not exit
}

// guard turns a panic into a message on the console and a reboot.
func guard(console io.Writer, halt func(int) error) {
	r := recover()
	if r == nil {
		return
	}
	fmt.Fprintf(console, "map646: panic: %v\n%s\nmap646: rebooting\n", r, debug.Stack())
	halt(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

// boot brings the appliance up, runs it, and returns how to halt.
func boot(opts Options, console io.Writer) (haltCmd int) {
	if err := mountKernelFS(); err != nil {
		fmt.Fprintf(console, "map646: %v\n", err)
	}
	go reapChildren(nil) // for the life of the machine
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of an immediate reboot.
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	unix.Sethostname([]byte("map646"))

	log := slog.New(slog.NewTextHandler(console, &slog.HandlerOptions{Level: slog.LevelInfo}))
	params := parseCmdline(readFile("/proc/cmdline"))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop := make(chan int, 4)
	go watchPowerButton(ctx, "/sys", "/dev", stop, log)
	reload := make(chan struct{}, 1)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGPWR, unix.SIGHUP)
	go func() {
		for s := range sigs {
			switch s {
			case unix.SIGHUP: // re-read the configuration file in use
				select {
				case reload <- struct{}{}:
				default:
				}
			case unix.SIGINT:
				stop <- unix.LINUX_REBOOT_CMD_RESTART
			default:
				stop <- unix.LINUX_REBOOT_CMD_POWER_OFF
			}
		}
	}()

	if err := loopbackUp(); err != nil {
		log.Error("loopback", "err", err)
	}
	configs := chooseConfig(ctx, params, console)
	done := make(chan struct{})
	go func() {
		defer close(done)
		supervise(ctx, defaultRestarts(), configs, daemonRunner(opts), log, console, reload, func(r daemon.ReadyInfo, source string) {
			fmt.Fprintln(console, readyLine(r, source, uptime()))
		})
	}()
	haltCmd = <-stop
	what := "powering off"
	if haltCmd == unix.LINUX_REBOOT_CMD_RESTART {
		what = "rebooting"
	}
	fmt.Fprintf(console, "map646: shutting down (%s)\n", what)
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		fmt.Fprintln(console, "map646: the translator did not stop within 15 s")
	}
	unix.Unmount(driveMount, unix.MNT_DETACH)
	fmt.Fprintf(console, "map646: stopped cleanly, %s\n", what)
	return haltCmd
}

// chooseConfig returns the configurations to try, in order: a config
// drive's whose configuration loads (confined to the drive), then the
// baked one. A drive whose configuration is invalid is reported with its
// diagnostics and left out.
func chooseConfig(ctx context.Context, params map[string]string, console io.Writer) []ConfigFile {
	baked := []ConfigFile{{Path: BakedConfig, Source: "baked"}}
	// The kernel finishes its asynchronous probes (libata, SCSI scans)
	// before it starts /init, so the disks present at boot are there;
	// the wait covers slower buses (e.g. USB mass storage) only.
	wait := 500 * time.Millisecond
	if v, ok := params["map646.drive_wait"]; ok {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			wait = d
		} else {
			fmt.Fprintf(console, "map646: map646.drive_wait=%q is not a duration; using %v\n", v, wait)
		}
	}
	d, err := findDrive(ctx, "/sys", "/dev", wait, console)
	if err != nil {
		fmt.Fprintf(console, "map646: looking for a config drive: %v\n", err)
	}
	if d == nil {
		return baked
	}
	if err := mountDrive(d, driveMount); err != nil {
		fmt.Fprintf(console, "map646: config drive %s: %v; running the baked configuration\n", d, err)
		return baked
	}
	c := ConfigFile{Path: filepath.Join(driveMount, d.Kind.ConfigFile()), Root: driveMount, Source: "drive:" + d.Kind.String()}
	if err := checkConfig(ctx, c); err != nil {
		fmt.Fprintf(console, "map646: config drive %s is invalid; running the baked configuration:\n%v\n", d, err)
		return baked
	}
	fmt.Fprintf(console, "map646: using the configuration of config drive %s\n", d)
	return append([]ConfigFile{c}, baked...)
}

// checkConfig loads c once, within a bound: a drive that hangs must not
// hang the boot.
func checkConfig(ctx context.Context, c ConfigFile) error {
	ctx, cancel := context.WithTimeout(ctx, daemon.ConfigLoadTimeout)
	defer cancel()
	_, err := config.LoadContext(ctx, c.Path, c.Root)
	return err
}

// parseCmdline returns the key=value words of the kernel command line.
func parseCmdline(s string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(s) {
		k, v, _ := strings.Cut(w, "=")
		m[k] = v
	}
	return m
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// watchPowerButton sends LINUX_REBOOT_CMD_POWER_OFF on stop when the ACPI
// power button is pressed (QEMU's system_powerdown, a hypervisor's ACPI
// shutdown). The button's input device may register a moment after boot.
func watchPowerButton(ctx context.Context, sys, dev string, stop chan<- int, log *slog.Logger) {
	var btns []sysDevice
	for i := 0; i < 50 && len(btns) == 0; i++ {
		btns, _ = powerButtons(sys)
		if len(btns) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if len(btns) == 0 {
		log.Warn("no ACPI power button found; power off with SIGTERM to PID 1 only")
		return
	}
	for _, b := range btns {
		node, err := ensureNode(filepath.Join(dev, "input", b.Name), unix.S_IFCHR, b.MajMin)
		if err != nil {
			log.Warn("power button", "err", err)
			continue
		}
		f, err := os.Open(node)
		if err != nil {
			log.Warn("power button", "err", err)
			continue
		}
		go func() {
			defer f.Close()
			if err := waitPowerKey(f); err != nil {
				log.Warn("power button", "dev", node, "err", err)
				return
			}
			stop <- unix.LINUX_REBOOT_CMD_POWER_OFF
		}()
	}
}

// daemonRunner runs appliance/daemon: the translator with its tun, routes,
// the appliance's interfaces and forwarding.
func daemonRunner(opts Options) RunFunc {
	return func(ctx context.Context, cfg ConfigFile, log *slog.Logger, reload <-chan struct{}, onReady func(daemon.ReadyInfo)) error {
		return daemon.Run(ctx, daemon.Options{
			ConfigPath: cfg.Path,
			ConfigRoot: cfg.Root,
			Logger:     log,
			Reload:     reload,
			Version:    opts.Version,
			Announcers: opts.Announcers,
			OnReady:    onReady,
			// PID 1 is this process: it must keep what it needs to
			// power off, unmount the drive and restart the translator.
			KeepPrivileges: true,
		})
	}
}

// readyLine is the console line that says the appliance forwards: tests
// and operators wait for it.
func readyLine(r daemon.ReadyInfo, source string, up time.Duration) string {
	s := fmt.Sprintf("map646 ready version=%s digest=%s mappings=%d config=%s", r.Version, r.Digest, r.Mappings, source)
	if r.Tun != "" {
		s += " tun=" + r.Tun
	}
	return s + fmt.Sprintf(" uptime=%.2fs", up.Seconds())
}
