package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/metrics"
)

// The control socket speaks one JSON request per line and answers with one
// JSON reply per line. It is a Unix socket with mode 0600: only root (the
// daemon's user) may reload or read counters.
type request struct {
	Command string `json:"command"`           // "stats", "reload", "lookup" or "mappings"
	Address string `json:"address,omitempty"` // lookup: the address
	Format  string `json:"format,omitempty"`  // mappings: "csv" or "json"
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
	ln   net.Listener
	path string
	wg   sync.WaitGroup
	once sync.Once
	quit chan struct{} // closed by Close: pending requests give up

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// listenControl binds path. A socket file left by a daemon that died is
// replaced; one that answers belongs to a running daemon and is an error.
func listenControl(path string, d *daemon, reloads chan<- chan reloadReply, log *slog.Logger) (*controlServer, error) {
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: another map646 is running (it answers there)", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &controlServer{ln: ln, path: path, quit: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					log.Warn("control socket", "err", err)
				}
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c, d, reloads)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
		}
	}()
	return s, nil
}

func (s *controlServer) serve(c net.Conn, d *daemon, reloads chan<- chan reloadReply) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	sc := bufio.NewScanner(c)
	enc := json.NewEncoder(c)
	for sc.Scan() {
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
				if d.serveMappings(c, enc, req.Format) {
					return // the listing ends with the connection
				}
				continue
			default:
				rep.Error = fmt.Sprintf("unknown command %q (want \"stats\", \"reload\", \"lookup\" or \"mappings\")", req.Command)
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
		close(s.quit)
		s.mu.Lock()
		for c := range s.conns {
			_ = c.SetReadDeadline(time.Now()) // an idle client must not hold the shutdown
		}
		s.mu.Unlock()
		s.wg.Wait()
		_ = os.Remove(s.path)
	})
	return err
}

func call(socket string, cmd string, timeout time.Duration) (*reply, error) {
	if socket == "" {
		socket = DefaultControlSocket
	}
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
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
