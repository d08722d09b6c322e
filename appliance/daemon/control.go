package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/connlimit"
	"github.com/map646/map646/appliance/metrics"
)

// The control socket speaks one JSON request per line and answers with one
// JSON reply per line. It is a Unix socket created with mode 0600 (0660
// with a control group): only root, the daemon's own user and members of
// the control group may reload or read counters. The file mode is checked
// by the kernel at connect; the peer's credentials (SO_PEERCRED) are
// checked again at accept, so a socket whose mode was loosened, or one
// reached through a descriptor passed on, still answers only them.
type request struct {
	Command string `json:"command"`           // "stats", "reload", "lookup", "mappings" or "mapping_counts"
	Address string `json:"address,omitempty"` // lookup: the address
	Format  string `json:"format,omitempty"`  // mappings, mapping_counts: "csv" or "json"
	Top     int    `json:"top,omitempty"`     // mapping_counts: only the busiest Top entries (0: all)
	By      string `json:"by,omitempty"`      // mapping_counts: "packets" or "bytes", the order of Top
}

type reply struct {
	OK     bool                 `json:"ok"`
	Error  string               `json:"error,omitempty"`
	Stats  *metrics.Stats       `json:"stats,omitempty"`
	Reload *ReloadResult        `json:"reload,omitempty"`
	Lookup *config.LookupResult `json:"lookup,omitempty"`
	// Stream: the listing follows this line until the server closes the
	// connection (see serveMappings).
	Stream bool `json:"stream,omitempty"`
}

type reloadReply struct {
	res ReloadResult
	err error
}

type controlServer struct {
	ln     net.Listener
	path   string
	access controlAccess
	log    *slog.Logger
	wg     sync.WaitGroup
	once   sync.Once
	quit   chan struct{} // closed by Close: pending requests give up
	stopAt atomic.Int64  // Unix ns by which, once quit is closed, replies must be written
	// minPause and maxPause bound the pause after a failed accept.
	minPause, maxPause time.Duration
	// connTimeout bounds a connection from its accept, listings
	// included; listingWriteIdle is how long one write of a listing may
	// wait for the client (controlConnTimeout, listingWriteIdle).
	connTimeout, listingWriteIdle time.Duration
	// idleTimeout closes a connection that sends no request for that
	// long (controlIdleTimeout); conns holds the connections open, at
	// most controlMaxConns. A connection is busy (connlimit.Conn.Enter)
	// except while the server waits for its next request: only then may
	// a new connection take its place.
	idleTimeout time.Duration
	conns       *connlimit.Set
	closed      *controlClosed // counts what the server closed on its own
}

// controlClosed counts the control connections the server closed on its
// own (map646_control_connections_closed_total): idle for
// controlIdleTimeout, evicted (the oldest idle one, to make room at
// controlMaxConns) or refused (at the cap with every connection busy).
type controlClosed struct {
	idle, evicted, refused atomic.Uint64
}

// visit calls f with each count and its reason.
func (c *controlClosed) visit(f func(reason string, n uint64)) {
	f("idle", c.idle.Load())
	f("evicted", c.evicted.Load())
	f("refused", c.refused.Load())
}

// controlAccess says who may use the control socket besides root.
type controlAccess struct {
	uid int // the daemon's own effective uid
	gid int // the control group; -1 for none
}

// lookupControlGroup resolves a group name or number ("" for none).
func lookupControlGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("control group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// allows reports whether a peer with these credentials may use the
// socket: root, the daemon's user, or a member of the control group
// (primary group, or a supplementary group read from /proc/<pid>/status).
func (a controlAccess) allows(cred *unix.Ucred, groups func(pid int32) []int) bool {
	switch {
	case cred.Uid == 0 || int(cred.Uid) == a.uid:
		return true
	case a.gid < 0:
		return false
	case int(cred.Gid) == a.gid:
		return true
	}
	return slices.Contains(groups(cred.Pid), a.gid)
}

// procGroups is the supplementary groups of process pid.
func procGroups(pid int32) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var gs []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					gs = append(gs, g)
				}
			}
			return gs
		}
	}
	return nil
}

// peerCred is the credentials of the process at the other end of c.
func peerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("not a Unix socket: %T", c)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// bindPrivately binds a Unix socket at path with the process umask set
// so that the socket file is created with mode 0600 (0660 with a group):
// a chmod after bind would leave it open to everyone for a moment. The
// umask is process-wide; the daemon creates no other files meanwhile,
// and a file created meanwhile would only get fewer permissions.
func bindPrivately(path string, gid int) (net.Listener, error) {
	mask := 0o177
	if gid >= 0 {
		mask = 0o117
	}
	old := unix.Umask(mask)
	ln, err := net.Listen("unix", path)
	unix.Umask(old)
	if err != nil {
		return nil, err
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, err
		}
	}
	return ln, nil
}

// listenControl binds path. A socket file left by a daemon that died is
// replaced; one that answers belongs to a running daemon and is an error.
// group names the control group ("" for none).
func listenControl(path, group string, d *daemon, reloads chan<- chan reloadReply, log *slog.Logger) (*controlServer, error) {
	gid, err := lookupControlGroup(group)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another map646 is running (it answers there)", path)
		}
		_ = os.Remove(path)
	}
	// The default's directory is the instance locks' (DefaultLockDir),
	// which a service running as its own user is given (the packaged
	// unit's RuntimeDirectory=map646).
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := bindPrivately(path, gid)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{ln: ln, path: path, access: controlAccess{uid: os.Geteuid(), gid: gid}, log: log,
		minPause: acceptMinPause, maxPause: acceptMaxPause, connTimeout: controlConnTimeout, listingWriteIdle: listingWriteIdle,
		idleTimeout: controlIdleTimeout, conns: connlimit.NewSet(controlMaxConns), closed: &d.ctlClosed,
		quit: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(d, reloads)
	}()
	return s, nil
}

// The bounds of the pause after a failed accept.
const (
	acceptMinPause = 5 * time.Millisecond
	acceptMaxPause = time.Second
)

// controlConnTimeout bounds every control connection, however busy: a
// listing holds the table it lists, so a client must not keep an old
// table alive across reloads by reading slowly. listingWriteIdle cuts a
// listing sooner when one write waits that long for the client.
const (
	controlConnTimeout = 5 * time.Minute
	listingWriteIdle   = time.Minute
)

// controlIdleTimeout and controlMaxConns bound what idle clients hold:
// `map646 stats` and `reload` send their request at once, so a
// connection that sends nothing for 30 s is closed, and at most 64 are
// open. A new connection at the cap takes the place of the oldest one
// waiting for a request; when every one is busy (a reload, a listing),
// the new one is refused with an error reply. Review H4 held 1000 idle
// connections, each a descriptor and a goroutine for 5 minutes, and the
// descriptors it took made the daemon's own sysctl reads fail.
const (
	controlIdleTimeout = 30 * time.Second
	controlMaxConns    = 64
)

// acceptLoop serves connections until the listener is closed. A failed
// accept (EMFILE or ENFILE when descriptors run out, ECONNABORTED,
// ENOBUFS...) is retried after a pause that doubles up to a second, as
// net/http does: `map646 stats` and `reload` must work again as soon as
// descriptors are free, without a restart.
func (s *controlServer) acceptLoop(d *daemon, reloads chan<- chan reloadReply) {
	var pause time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if pause == 0 {
				pause = s.minPause
				s.log.Warn("control socket: accept failed; retrying", "err", err)
			} else {
				pause = min(2*pause, s.maxPause)
			}
			select {
			case <-s.quit:
				return
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		cc, ok := s.track(c)
		if !ok {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.admit(c) {
				s.serve(&stoppingConn{Conn: cc, s: s}, cc, d, reloads)
			}
			cc.Close()
			s.conns.Remove(cc)
		}()
	}
}

// track adds c to the connections open, making room at the cap by
// closing the oldest connection waiting for a request. With none
// waiting, c is refused: one error reply, closed, and ok is false.
func (s *controlServer) track(c net.Conn) (cc *connlimit.Conn, ok bool) {
	cc, victim, ok := s.conns.Add(c, true)
	if !ok {
		s.closed.refused.Add(1)
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_ = json.NewEncoder(c).Encode(reply{Error: fmt.Sprintf("too many control connections (%d), all busy; try again", s.conns.Max())})
		c.Close()
		return nil, false
	}
	if victim != nil {
		s.closed.evicted.Add(1)
		victim.Close() // its goroutine's read fails and it ends
	}
	return cc, true
}

// admit checks the peer's credentials; a refused peer gets one error
// reply.
func (s *controlServer) admit(c net.Conn) bool {
	cred, err := peerCred(c)
	if err == nil && s.access.allows(cred, procGroups) {
		return true
	}
	msg := "permission denied: only root, the daemon's user or the control group may use this socket"
	if err != nil {
		s.log.Warn("control socket: cannot read the peer's credentials", "err", err)
	} else {
		s.log.Warn("control socket: peer refused", "uid", cred.Uid, "gid", cred.Gid, "pid", cred.Pid)
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = json.NewEncoder(c).Encode(reply{Error: msg})
	return false
}

// serve answers c's requests until it closes, stays idle for
// s.idleTimeout or reaches s.connTimeout. cc is c's entry in s.conns.
func (s *controlServer) serve(c net.Conn, cc *connlimit.Conn, d *daemon, reloads chan<- chan reloadReply) {
	end := time.Now().Add(s.connTimeout)
	_ = c.SetDeadline(end)
	listing := deadlineWriter{c: c, idle: s.listingWriteIdle, end: end}
	sc := bufio.NewScanner(c)
	enc := json.NewEncoder(c)
	for {
		idleEnd := time.Now().Add(s.idleTimeout)
		if idleEnd.After(end) {
			idleEnd = end
		}
		_ = c.SetReadDeadline(idleEnd)
		cc.Leave() // waiting for a request: may make room
		more := sc.Scan()
		cc.Enter()
		if !more {
			_, stopping := s.stopping()
			if errors.Is(sc.Err(), os.ErrDeadlineExceeded) && idleEnd.Before(end) && !stopping {
				s.closed.idle.Add(1)
			}
			return
		}
		var req request
		var rep reply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep.Error = "bad request: " + err.Error()
		} else {
			switch req.Command {
			case "stats":
				st := d.Stats()
				rep.OK, rep.Stats = true, &st
			case "reload":
				ch := make(chan reloadReply, 1)
				select {
				case reloads <- ch:
					r := <-ch
					rep.Reload = &r.res
					if r.err != nil {
						rep.Error = r.err.Error()
					} else {
						rep.OK = true
					}
				case <-s.quit:
					rep.Error = "the daemon is stopping"
				case <-time.After(time.Minute):
					rep.Error = "the daemon did not take the reload request within a minute"
				}
			case "lookup":
				rep.Lookup, rep.Error = d.lookup(req.Address)
				rep.OK = rep.Error == ""
			case "mappings":
				if d.serveMappings(listing, enc, req.Format) {
					return // the listing ends with the connection
				}
				continue
			case "mapping_counts":
				if d.serveMappingCounts(listing, enc, req) {
					return
				}
				continue
			default:
				rep.Error = fmt.Sprintf("unknown command %q (want \"stats\", \"reload\", \"lookup\", \"mappings\" or \"mapping_counts\")", req.Command)
			}
		}
		if err := enc.Encode(rep); err != nil {
			return
		}
	}
}

// Close stops accepting, ends idle connections and requests that wait for
// the daemon, waits for the rest and removes the socket file.
func (s *controlServer) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close()
		stopAt := time.Now().Add(controlStopGrace)
		s.stopAt.Store(stopAt.UnixNano())
		close(s.quit)
		s.conns.Each(func(c *connlimit.Conn) {
			// An idle client must not hold the shutdown, nor one that
			// reads a listing slowly or not at all (stoppingConn).
			_ = c.SetReadDeadline(time.Now())
			_ = c.SetWriteDeadline(stopAt)
		})
		s.wg.Wait()
		_ = os.Remove(s.path)
	})
	return err
}

// stoppingConn is a served control connection whose deadlines cannot be
// put past the end of the stop's grace (controlServer.stopAt) once the
// server is closing: the listings extend the write deadline before each
// write (deadlineWriter), so a client reading a large listing slowly, or
// not at all, would otherwise hold the daemon's stop for as long as it
// liked. Close sets every connection's write deadline to stopAt after
// closing quit, and a deadline set here is checked against quit after it
// is set, so whichever comes last, none is later than stopAt.
type stoppingConn struct {
	net.Conn
	s *controlServer
}

func (c *stoppingConn) SetWriteDeadline(t time.Time) error {
	err := c.Conn.SetWriteDeadline(t)
	if stop, ok := c.s.stopping(); ok && t.After(stop) {
		return c.Conn.SetWriteDeadline(stop)
	}
	return err
}

// SetReadDeadline: once the server is closing, no request is read.
func (c *stoppingConn) SetReadDeadline(t time.Time) error {
	err := c.Conn.SetReadDeadline(t)
	if _, ok := c.s.stopping(); ok {
		return c.Conn.SetReadDeadline(time.Now())
	}
	return err
}

func (c *stoppingConn) SetDeadline(t time.Time) error {
	err := c.Conn.SetDeadline(t)
	if stop, ok := c.s.stopping(); ok && t.After(stop) {
		return c.Conn.SetDeadline(stop)
	}
	return err
}

// stopping reports, once Close has begun, by when the connections must
// be done writing.
func (s *controlServer) stopping() (time.Time, bool) {
	select {
	case <-s.quit:
		return time.Unix(0, s.stopAt.Load()), true
	default:
		return time.Time{}, false
	}
}

// controlStopGrace is how long replies in progress (a reload's "the daemon
// is stopping", a listing) may still take to be written once the control
// server closes.
const controlStopGrace = time.Second

func call(socket string, cmd string, timeout time.Duration) (*reply, error) {
	if socket == "" {
		socket = DefaultControlSocket
	}
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if errors.Is(err, fs.ErrPermission) {
		// The socket is there (a daemon is likely running) but only root
		// may connect: saying "no running map646" would mislead.
		return nil, fmt.Errorf("permission denied on the control socket %s: run as root (e.g. with sudo)", socket)
	}
	if err != nil {
		return nil, fmt.Errorf("no running map646 at %s: %w", socket, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(request{Command: cmd}); err != nil {
		return nil, err
	}
	var rep reply
	dec := json.NewDecoder(c)
	if err := dec.Decode(&rep); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", socket, err)
	}
	return &rep, nil
}

// QueryStats asks the daemon listening on socket ("" for the default) for
// its counters.
func QueryStats(socket string) (*metrics.Stats, error) {
	rep, err := call(socket, "stats", 30*time.Second)
	if err != nil {
		return nil, err
	}
	if !rep.OK || rep.Stats == nil {
		return nil, errors.New(rep.Error)
	}
	return rep.Stats, nil
}

// RequestReload asks the daemon to reload its configuration file and
// waits for the outcome. A refused file gives its diagnostics as the error.
func RequestReload(socket string) (*ReloadResult, error) {
	rep, err := call(socket, "reload", 2*time.Minute)
	if err != nil {
		return nil, err
	}
	if !rep.OK {
		return rep.Reload, errors.New(rep.Error)
	}
	return rep.Reload, nil
}
