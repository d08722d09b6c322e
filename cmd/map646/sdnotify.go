package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/daemon"
)

// notifier tells systemd about the service's state through the datagram
// socket named by $NOTIFY_SOCKET (sd_notify(3)): READY=1, RELOADING=1,
// STOPPING=1 and the watchdog's WATCHDOG=1. Without $NOTIFY_SOCKET (not
// started by systemd, or Type=simple) every method does nothing.
type notifier struct {
	conn     *net.UnixConn // nil: not under systemd's notify protocol
	watchdog bool          // $WATCHDOG_USEC is set for this process
}

// newNotifier connects to $NOTIFY_SOCKET. An address starting with "@" is
// in the abstract namespace (sd_notify(3)).
func newNotifier() (*notifier, error) {
	n := &notifier{}
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return n, nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	n.conn = c
	// WATCHDOG_PID, if set, names the process the watchdog is for
	// (sd_watchdog_enabled(3)); a child we started must not feed it.
	if usec, err := strconv.ParseUint(os.Getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		pid := os.Getenv("WATCHDOG_PID")
		n.watchdog = pid == "" || pid == strconv.Itoa(os.Getpid())
	}
	return n, nil
}

func (n *notifier) send(state string) {
	if n == nil || n.conn == nil {
		return
	}
	// A lost notification must not stop the translator; systemd notices
	// a missing READY=1 or WATCHDOG=1 by itself.
	_, _ = n.conn.Write([]byte(state))
}

// Close closes the socket.
func (n *notifier) Close() error {
	if n == nil || n.conn == nil {
		return nil
	}
	return n.conn.Close()
}

// ready reports that the translator is set up and forwarding.
func (n *notifier) ready(info daemon.ReadyInfo) {
	n.send(fmt.Sprintf("READY=1\nSTATUS=translating: %d mappings on %s, digest %.16s", info.Mappings, info.Tun, info.Digest))
}

// reload reports a reload's start (RELOADING=1, with MONOTONIC_USEC as
// systemd >= 253 requires to match it to the reload it asked for) and its
// end (READY=1, whether the file was applied or refused: the translator
// runs on either way).
func (n *notifier) reload(starting bool) {
	if starting {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
			n.send("RELOADING=1")
			return
		}
		n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", time.Duration(ts.Nano()).Microseconds()))
		return
	}
	n.send("READY=1")
}

// health feeds the watchdog only while the data path is healthy, so that
// systemd restarts a translator that has stopped forwarding
// (WatchdogSec= in the unit) instead of letting it black-hole traffic.
func (n *notifier) health(healthy bool) {
	if healthy && n.watchdog {
		n.send("WATCHDOG=1")
	}
}

// stopping reports that the translator is shutting down.
func (n *notifier) stopping() { n.send("STOPPING=1") }
