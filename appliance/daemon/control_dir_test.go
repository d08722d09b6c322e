package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// TestControlSocketMakesItsDirectory: the default socket lives in a
// directory of its own (/run/map646), which a daemon started by hand as
// root may find missing; it is made, and the socket still answers only
// its owner (mode 0600).
func TestControlSocketMakesItsDirectory(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "map646", "map646.sock")
	cs, err := listenControl(sock, "", &daemon{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want a socket with 0600", st.Mode())
	}
}
