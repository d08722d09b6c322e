package main

import (
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/map646/map646/appliance/daemon"
)

// fakeNotifySocket is systemd's end of $NOTIFY_SOCKET: a datagram socket
// whose messages the test reads in order.
type fakeNotifySocket struct {
	conn *net.UnixConn
	path string
}

func newFakeNotifySocket(t *testing.T) *fakeNotifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fakeNotifySocket{conn: c, path: path}
}

// next returns the next message, failing the test after timeout.
func (f *fakeNotifySocket) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = f.conn.SetReadDeadline(time.Now().Add(timeout))
	n, err := f.conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification within %v: %v", timeout, err)
	}
	return string(buf[:n])
}

func TestNotifierSequence(t *testing.T) {
	sock := newFakeNotifySocket(t)
	t.Setenv("NOTIFY_SOCKET", sock.path)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", "")
	n, err := newNotifier()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()

	n.ready(daemon.ReadyInfo{Mappings: 3, Tun: "siit0", Digest: "0123456789abcdef0123"})
	n.health(true)
	n.health(false) // unhealthy: no ping
	n.health(false)
	n.health(true)
	n.reload(true)
	n.reload(false)
	n.stopping()

	want := []string{
		`^READY=1\nSTATUS=translating: 3 mappings on siit0, digest 0123456789abcdef$`,
		`^WATCHDOG=1$`,
		`^WATCHDOG=1$`, // the one after the unhealthy polls, none for them
		`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`,
		`^READY=1$`,
		`^STOPPING=1$`,
	}
	for i, w := range want {
		got := sock.next(t, 5*time.Second)
		if !regexp.MustCompile(w).MatchString(got) {
			t.Errorf("message %d: %q, want %s", i, got, w)
		}
	}
}

func TestNotifierWatchdog(t *testing.T) {
	for _, tc := range []struct {
		name, usec, pid string
		ping            bool
	}{
		{"no watchdog", "", "", false},
		{"watchdog for us", "10000000", "", true},
		{"watchdog for another process", "10000000", "1", false},
		{"zero", "0", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := newFakeNotifySocket(t)
			t.Setenv("NOTIFY_SOCKET", sock.path)
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			n, err := newNotifier()
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			n.health(true)
			n.stopping() // a marker: what came before it is all there is
			got := sock.next(t, 5*time.Second)
			if ping := got == "WATCHDOG=1"; ping != tc.ping {
				t.Errorf("first message %q; want a ping: %v", got, tc.ping)
			}
		})
	}
}

func TestNotifierWithoutSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n, err := newNotifier()
	if err != nil {
		t.Fatal(err)
	}
	n.ready(daemon.ReadyInfo{}) // must not panic or block
	n.health(true)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if _, err := newNotifier(); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
		t.Errorf("missing socket: %v", err)
	}
}
