package pid1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// sysDevice is a device as /sys describes it: its name and "major:minor".
type sysDevice struct {
	Name   string
	MajMin string
}

// listDevices reads <sys>/class/<class>/*/dev, sorted by name. Entries
// whose name does not start with prefix are skipped.
func listDevices(sys, class, prefix string) ([]sysDevice, error) {
	dir := filepath.Join(sys, "class", class)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []sysDevice
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev"))
		if err != nil {
			continue // not a device node (or gone)
		}
		out = append(out, sysDevice{Name: e.Name(), MajMin: strings.TrimSpace(string(b))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ensureNode returns path, creating it as a device node of the given type
// (unix.S_IFBLK or unix.S_IFCHR) from "major:minor" when devtmpfs did not.
func ensureNode(path string, typ uint32, majmin string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	maj, min, ok := strings.Cut(majmin, ":")
	if !ok {
		return "", fmt.Errorf("device number %q is not major:minor", majmin)
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("device number %q is not major:minor", majmin)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := unix.Mknod(path, typ|0o600, int(unix.Mkdev(uint32(ma), uint32(mi)))); err != nil && !errors.Is(err, unix.EEXIST) {
		return "", fmt.Errorf("mknod %s: %w", path, err)
	}
	return path, nil
}

// Linux input events (include/uapi/linux/input.h, input-event-codes.h).
const (
	inputEventSize = 24 // struct input_event on 64-bit: timeval, type, code, value
	evKey          = 1
	keyPower       = 116
)

// powerButtons returns the names (eventN) of input devices that the ACPI
// button driver registered as the power button.
func powerButtons(sys string) ([]sysDevice, error) {
	devs, err := listDevices(sys, "input", "event")
	if err != nil {
		return nil, err
	}
	var out []sysDevice
	for _, d := range devs {
		b, err := os.ReadFile(filepath.Join(sys, "class", "input", d.Name, "device", "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == "Power Button" {
			out = append(out, d)
		}
	}
	return out, nil
}

// waitPowerKey reads input events from r until a KEY_POWER press arrives
// (nil) or reading fails.
func waitPowerKey(r io.Reader) error {
	ev := make([]byte, inputEventSize)
	for {
		if _, err := io.ReadFull(r, ev); err != nil {
			return err
		}
		typ := binary.NativeEndian.Uint16(ev[16:])
		code := binary.NativeEndian.Uint16(ev[18:])
		value := int32(binary.NativeEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			return nil
		}
	}
}
