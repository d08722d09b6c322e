package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/connlimit"
	"github.com/map646/map646/internal/netnstest"
)

// TestControlSocketCreatedPrivate: the socket file is created with mode
// 0600 (0660 and the group's ownership with a control group) whatever the
// process umask, with no chmod after bind that would leave a window.
func TestControlSocketCreatedPrivate(t *testing.T) {
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, tc := range []struct {
		name string
		gid  int
		mode os.FileMode
	}{
		{"no group", -1, 0o600},
		{"own group", os.Getegid(), 0o660},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "ctl.sock")
			ln, err := bindPrivately(p, tc.gid)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			if got := os.FileMode(st.Mode & 0o777); got != tc.mode {
				t.Errorf("socket mode %v, want %v", got, tc.mode)
			}
			if tc.gid >= 0 && int(st.Gid) != tc.gid {
				t.Errorf("socket group %d, want %d", st.Gid, tc.gid)
			}
			if now := unix.Umask(0); now != 0 {
				t.Errorf("umask left at %o", now)
			}
		})
	}
}

func TestControlAccessAllows(t *testing.T) {
	groups := func(int32) []int { return []int{20, 4711} }
	for _, tc := range []struct {
		name     string
		access   controlAccess
		uid, gid uint32
		want     bool
	}{
		{"root", controlAccess{uid: 1000, gid: -1}, 0, 0, true},
		{"daemon's user", controlAccess{uid: 1000, gid: -1}, 1000, 1000, true},
		{"other user", controlAccess{uid: 1000, gid: -1}, 1001, 1001, false},
		{"other user, group of another", controlAccess{uid: 1000, gid: 5000}, 1001, 1001, false},
		{"primary group", controlAccess{uid: 1000, gid: 5000}, 1001, 5000, true},
		{"supplementary group", controlAccess{uid: 1000, gid: 4711}, 1001, 1001, true},
	} {
		cred := &unix.Ucred{Pid: 1, Uid: tc.uid, Gid: tc.gid}
		if got := tc.access.allows(cred, groups); got != tc.want {
			t.Errorf("%s: allows = %v, want %v", tc.name, got, tc.want)
		}
	}
	if g, err := lookupControlGroup("0"); err != nil || g != 0 {
		t.Errorf("group 0: %d %v", g, err)
	}
	if g, err := lookupControlGroup(""); err != nil || g != -1 {
		t.Errorf("no group: %d %v", g, err)
	}
	if _, err := lookupControlGroup("no-such-group-map646"); err == nil {
		t.Error("an unknown group was accepted")
	}
}

// asUser runs f on a thread whose effective uid and gid are uid and gid
// (SO_PEERCRED reports the effective ids of the connecting thread). The
// thread is never handed back to the runtime.
func asUser(t *testing.T, uid, gid int, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // and never unlocked: the thread dies with the goroutine
		// Raw syscalls change this thread only; the saved ids stay root.
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, ^uintptr(0), uintptr(gid), ^uintptr(0)); e != 0 {
			done <- e
			return
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			done <- e
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatalf("setresuid: %v", err)
	}
}

// controlRoundTrip sends one request line and returns the reply.
func controlRoundTrip(c net.Conn, line string) (reply, error) {
	var rep reply
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	// A refused peer is answered and hung up on at once: the write may
	// fail, the reply is there to read all the same.
	_, _ = fmt.Fprintln(c, line)
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return rep, err
	}
	return rep, json.Unmarshal(b, &rep)
}

// TestControlSocketChecksPeerCredentials: even with the socket file's
// mode loosened, a user other than root, the daemon's and the control
// group's members is refused at accept.
func TestControlSocketChecksPeerCredentials(t *testing.T) {
	netnstest.Require(t, "dmc") // root: switching user ids
	dir, err := os.MkdirTemp("", "map646-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	for _, tc := range []struct {
		name     string
		group    string
		uid, gid int
		allowed  bool
	}{
		{"root", "", 0, 0, true},
		{"nobody", "", 65534, 65534, false},
		{"nobody in the control group", "65534", 65534, 65534, true},
		{"nobody, other control group", "65533", 65534, 65534, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(dir, "ctl.sock")
			cs, err := listenControl(sock, tc.group, &daemon{}, nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			os.Chmod(sock, 0o666) // the kernel's file check is not the only one
			var c net.Conn
			var derr error
			asUser(t, tc.uid, tc.gid, func() { c, derr = net.Dial("unix", sock) })
			if derr != nil {
				t.Fatal(derr)
			}
			defer c.Close()
			rep, err := controlRoundTrip(c, `{"command":"nonsense"}`)
			if err != nil {
				t.Fatalf("no reply: %v", err)
			}
			refused := strings.HasPrefix(rep.Error, "permission denied")
			if refused == tc.allowed {
				t.Fatalf("reply %+v; allowed should be %v", rep, tc.allowed)
			}
			if tc.allowed && !strings.Contains(rep.Error, "unknown command") {
				t.Fatalf("allowed peer got %+v", rep)
			}
		})
	}
}

// flakyListener fails its first n accepts with the errors of a process
// out of descriptors.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, &net.OpError{Op: "accept", Net: "unix", Err: os.NewSyscallError("accept4", err)}
	}
	return l.Listener.Accept()
}

// TestControlAcceptSurvivesErrors: failed accepts (EMFILE, ENFILE,
// ECONNABORTED) do not end the accept loop.
func TestControlAcceptSurvivesErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for range 5 {
		errs = append(errs, unix.EMFILE, unix.ENFILE, unix.ECONNABORTED)
	}
	s := &controlServer{ln: &flakyListener{Listener: ln, errs: errs}, path: sock, access: controlAccess{uid: os.Geteuid(), gid: -1},
		log: slog.New(slog.DiscardHandler), quit: make(chan struct{}), conns: connlimit.NewSet(controlMaxConns), closed: &controlClosed{}, idleTimeout: controlIdleTimeout,
		minPause: time.Millisecond, maxPause: 20 * time.Millisecond, connTimeout: controlConnTimeout, listingWriteIdle: listingWriteIdle}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.acceptLoop(&daemon{}, nil) }()
	defer s.Close()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if rep, err := controlRoundTrip(c, `{"command":"nonsense"}`); err != nil || !strings.Contains(rep.Error, "unknown command") {
		t.Fatalf("after 15 failed accepts: %+v %v", rep, err)
	}
}

// TestControlSocketSurvivesDescriptorExhaustion replays issue 9: with
// every descriptor of the process in use, a client connects and the
// daemon's accept fails with EMFILE. Once descriptors are free again the
// same client gets its answer, without a restart.
func TestControlSocketSurvivesDescriptorExhaustion(t *testing.T) {
	h := start(t, fmt.Sprintf(baseConfig, mappingBlocks("198.51.100.10")))
	defer h.stop()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = min(lim.Cur, 512)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
		}
	}
	defer restore()
	var hog []int
	defer func() {
		for _, fd := range hog {
			unix.Close(fd)
		}
	}()
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EMFILE {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hog = append(hog, fd)
	}
	// One descriptor free, for the client's socket: the daemon has none
	// left for the accepted connection.
	unix.Close(hog[len(hog)-1])
	hog = hog[:len(hog)-1]
	c, err := net.Dial("unix", h.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintln(c, `{"command":"stats"}`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // several failed accepts
	for _, fd := range hog {
		unix.Close(fd)
	}
	hog = nil
	restore()
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer once descriptors were free again: %v", err)
	}
	var rep reply
	if err := json.Unmarshal(b, &rep); err != nil || !rep.OK || rep.Stats == nil || rep.Stats.Mappings != 1 {
		t.Fatalf("reply %s: %v", b, err)
	}
	if _, err := QueryStats(h.sock); err != nil {
		t.Fatalf("a later stats request: %v", err)
	}
}
