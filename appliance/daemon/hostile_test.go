package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// reloadWithin asks for a reload and fails the test if no answer comes
// within 10 s.
func reloadWithin(t *testing.T, sock string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := RequestReload(sock)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("reload hangs")
		return nil
	}
}

// TestHostileReloadKeepsRunning replays the configuration attacks of
// issue 9 as reloads: each is refused quickly with a diagnostic, the
// running configuration, its routes and the control socket stay.
func TestHostileReloadKeepsRunning(t *testing.T) {
	good := fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10"))
	h := start(t, good)
	defer h.stop()
	dir := filepath.Dir(h.cfg)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	before := h.k.routeSet()
	stBefore, err := QueryStats(h.sock)
	if err != nil {
		t.Fatal(err)
	}
	deep := "translator " + strings.Repeat("{", 100_000) + strings.Repeat("}", 100_000)
	for _, tc := range []struct {
		name  string
		setup func() // writes the hostile file
		want  string
	}{
		{"deep nesting", func() { writeConfig(t, h.cfg, deep) }, h.cfg + ":1:76: Nesting too deep"},
		{"mappings_file /dev/zero", func() {
			writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, `  mappings_file = "/dev/zero"`))
		}, "not a regular file (a character device)"},
		{"mappings_file FIFO", func() {
			writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, `  mappings_file = "fifo"`))
		}, "not a regular file (a FIFO)"},
		{"mappings_file truncated to 0 bytes", func() { // `>` during a rewrite
			writeConfig(t, filepath.Join(dir, "m.csv"), "")
			writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, `  mappings_file = "m.csv"`))
		}, h.cfg + ":4:19: Empty mappings_file"},
		{"configuration FIFO", func() {
			os.Remove(h.cfg)
			if err := syscall.Mkfifo(h.cfg, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file (a FIFO)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			defer func() {
				os.Remove(h.cfg)
				writeConfig(t, h.cfg, good)
			}()
			err := reloadWithin(t, h.sock)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("reload: %v, want %q", err, tc.want)
			}
			if got := h.k.routeSet(); !slices.Equal(got, before) {
				t.Errorf("routes changed by a refused reload: %v", got)
			}
			st, err := QueryStats(h.sock)
			if err != nil || st.Digest != stBefore.Digest || st.Mappings != 1 {
				t.Fatalf("after the refused reload: %v %+v", err, st)
			}
		})
	}
	// And a good file is taken afterwards.
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10", "198.51.100.11")))
	if err := reloadWithin(t, h.sock); err != nil {
		t.Fatalf("good reload after the attacks: %v", err)
	}
}

// TestStopWinsOverReload: a stop that arrives while a reload is still
// reading its files ends the reload (abandoned, the running configuration
// untouched) and the daemon stops at once, not when the load is done.
func TestStopWinsOverReload(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	dir := filepath.Dir(h.cfg)
	// A million-line mappings file takes seconds to load.
	f, err := os.Create(filepath.Join(dir, "large.csv"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range 1 << 20 {
		fmt.Fprintf(w, "10.%d.%d.%d,2001:db8:6::%x:%x\n", i>>16, i>>8&0xff, i&0xff, i>>16, i&0xffff)
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, h.cfg, fmt.Sprintf(baseConfig, `  mappings_file = "large.csv"`))
	reloaded := make(chan error, 1)
	go func() {
		_, err := RequestReload(h.sock)
		reloaded <- err
	}()
	time.Sleep(100 * time.Millisecond) // the reload is reading
	begin := time.Now()
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	err = <-reloaded
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("the reload was not abandoned: %v", err)
	}
	if took > 2*time.Second {
		t.Errorf("stopping during a reload took %v", took)
	}
	if got := h.k.routeSet(); len(got) != 0 {
		t.Errorf("routes left: %v", got)
	}
}
