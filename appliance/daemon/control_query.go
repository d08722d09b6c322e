package daemon

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/map646/map646/appliance/config"
)

// runningConfig is the configuration the translator uses now. A Config is
// immutable, so the caller may read it without the lock.
func (d *daemon) runningConfig() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// lookup answers the "lookup" request: how the running map treats addr,
// and which of the running engine's address rules drop packets to it (in
// host mode the host's addresses are among its own, withHostAddrs).
func (d *daemon) lookup(addr string) (*config.LookupResult, string) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, fmt.Sprintf("lookup: %q is not an IPv4 or IPv6 address", addr)
	}
	cfg := d.runningConfig()
	if cfg == nil {
		return nil, "no configuration is running"
	}
	r, err := cfg.Lookup(a, d.eng)
	if err != nil {
		return nil, err.Error()
	}
	return r, ""
}

// serveMappings answers the "mappings" request: a reply line, then (if it
// says stream) the listing, written straight from the running table as it
// is encoded, so the daemon holds no second copy of a large table. It
// reports whether the connection must close to end the listing; a refused
// request has had its error reply sent and leaves the connection open.
func (d *daemon) serveMappings(w deadlineWriter, enc *json.Encoder, format string) bool {
	cfg := d.runningConfig()
	var rep reply
	switch {
	case format != config.FormatCSV && format != config.FormatJSON:
		rep.Error = fmt.Sprintf("mappings: unknown format %q (want %q or %q)", format, config.FormatCSV, config.FormatJSON)
	case cfg == nil:
		rep.Error = "no configuration is running"
	default:
		rep.OK, rep.Stream = true, true
	}
	if err := enc.Encode(rep); err != nil || !rep.Stream {
		return err != nil
	}
	_ = cfg.WriteMappings(w, format)
	return true
}

// deadlineWriter writes a listing to c, each write by idle from its
// start, so that a listing that keeps moving is not cut off after idle
// and one that stalls is, but never past end, the connection's overall
// bound (controlConnTimeout): a client reading a little every so often
// would otherwise hold the listed table, which a reload has replaced,
// for as long as it liked.
type deadlineWriter struct {
	c    net.Conn
	idle time.Duration
	end  time.Time
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	_ = w.c.SetWriteDeadline(earliest(time.Now().Add(w.idle), w.end))
	return w.c.Write(p)
}

// earliest is the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// QueryLookup asks the daemon listening on socket ("" for the default) how
// it translates addr.
func QueryLookup(socket string, addr netip.Addr) (*config.LookupResult, error) {
	rep, err := roundTrip(socket, request{Command: "lookup", Address: addr.String()}, 30*time.Second)
	if err != nil {
		return nil, err
	}
	if !rep.OK || rep.Lookup == nil {
		return nil, errors.New(rep.Error)
	}
	return rep.Lookup, nil
}

// StreamMappings asks the daemon for its address map in format ("csv" or
// "json") and copies the listing to w as it arrives.
func StreamMappings(socket, format string, w io.Writer) error {
	return streamListing(socket, request{Command: "mappings", Format: format}, w)
}

// streamListing sends req, whose answer is a reply line and then a
// listing until the daemon closes the connection, and copies the listing
// to w as it arrives.
func streamListing(socket string, req request, w io.Writer) error {
	c, err := dialControl(socket)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	var rep reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if !rep.OK || !rep.Stream {
		return errors.New(rep.Error)
	}
	_ = c.SetReadDeadline(time.Time{})
	if _, err := io.Copy(w, idleReader{c, br}); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

// idleReader fails a read that waits more than a minute: a daemon that
// stops sending in the middle of a listing.
type idleReader struct {
	c net.Conn
	r io.Reader
}

func (r idleReader) Read(p []byte) (int, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(time.Minute))
	return r.r.Read(p)
}

func dialControl(socket string) (net.Conn, error) {
	if socket == "" {
		socket = DefaultControlSocket
	}
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("no running map646 at %s: %w", socket, err)
	}
	return c, nil
}

// roundTrip sends one request and reads one reply.
func roundTrip(socket string, req request, timeout time.Duration) (*reply, error) {
	c, err := dialControl(socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var rep reply
	if err := json.NewDecoder(c).Decode(&rep); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &rep, nil
}
