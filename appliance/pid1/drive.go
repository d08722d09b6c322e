package pid1

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Drive is a config drive found at boot.
type Drive struct {
	Dev   string // device node, e.g. /dev/vdb
	Label string
	FS    FSType
	Kind  DriveKind
}

func (d Drive) String() string { return fmt.Sprintf("%s (%s %q)", d.Dev, d.FS, d.Label) }

// findDrive polls the block devices under <sys>/class/block until one
// carries a config drive label or wait has passed: without udev, a disk
// behind an asynchronously probed controller (an emulated CD-ROM) may
// appear a moment after /init starts. Device nodes are looked up in dev
// and made from /sys when devtmpfs lacks them.
func findDrive(ctx context.Context, sys, dev string, wait time.Duration, log io.Writer) (*Drive, error) {
	deadline := time.Now().Add(wait)
	for {
		devs, err := listDevices(sys, "block", "")
		if err != nil {
			return nil, err
		}
		for _, d := range devs {
			node, err := ensureNode(filepath.Join(dev, d.Name), unix.S_IFBLK, d.MajMin)
			if err != nil {
				fmt.Fprintf(log, "map646: %s: %v\n", d.Name, err)
				continue
			}
			f, err := os.Open(node)
			if err != nil {
				continue // e.g. an empty CD-ROM drive: ENOMEDIUM
			}
			label, fs, ok := ProbeLabel(f)
			f.Close()
			if !ok {
				continue
			}
			if k := ClassifyLabel(label); k != NotADrive {
				return &Drive{Dev: node, Label: label, FS: fs, Kind: k}, nil
			}
		}
		if !time.Now().Before(deadline) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mountDrive mounts the drive read-only at dir.
func mountDrive(d *Drive, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(d.Dev, dir, string(d.FS), unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", d, dir, err)
	}
	return nil
}
