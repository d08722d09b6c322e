package main

import (
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/map646/map646/internal/testenv"
)

// TestControlPermissionDenied: `stats` and `reload` by a user who may not
// open the control socket say so, instead of "no running map646".
func TestControlPermissionDenied(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.SkipOrFailf(t, "needs root to run a client as another user")
	}
	// A directory everyone may enter, holding a root-only socket (as the
	// daemon creates it) and a copy of this test binary nobody can run.
	dir, err := os.MkdirTemp("", "map646-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "map646")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"stats", "reload"} {
		cmd := exec.Command(bin, sub, "--control-socket", sock)
		cmd.Env = append(os.Environ(), "MAP646_TEST_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("%s as nobody succeeded: %s", sub, out)
		}
		if s := string(out); !strings.Contains(s, "permission denied on the control socket "+sock+": run as root") || strings.Contains(s, "no running") {
			t.Errorf("%s as nobody: %s", sub, out)
		}
	}
	// Without a socket the answer stays "no running map646".
	_, _, err = runCmd(t, "stats", "--control-socket", filepath.Join(dir, "absent.sock"))
	if err == nil || !strings.Contains(err.Error(), "no running map646") {
		t.Errorf("absent socket: %v", err)
	}
}
