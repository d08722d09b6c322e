package daemon

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/mapping"
	"github.com/map646/map646/stack"
)

// mappingCounting is a data path that can count per EAM entry
// (*stack.Datapath).
type mappingCounting interface {
	CountMappings(t *mapping.Table) *stack.MappingCounters
	MappingCounters() *stack.MappingCounters
}

// setMappingCounters applies translator.mapping_counters to the data path
// after the engine took table t: on, the counters follow t (entries that
// stay keep their counts); off, they are dropped.
func setMappingCounters(dp datapath, tr config.Translator, t *mapping.Table) {
	mc, ok := dp.(mappingCounting)
	if !ok {
		return
	}
	if !tr.MappingCounters {
		t = nil
	}
	mc.CountMappings(t)
}

// mappingCounters returns the data path's per-entry counters, nil when
// they are off.
func (d *daemon) mappingCounters() *stack.MappingCounters {
	if mc, ok := d.dp.(mappingCounting); ok {
		return mc.MappingCounters()
	}
	return nil
}

// metricsTopMappings is what /metrics exports of the per-mapping
// counters: the metrics.mapping_top busiest entries by packets of the
// running configuration.
func (d *daemon) metricsTopMappings() []metrics.MappingCount {
	n := d.runningConfig().Metrics.MappingTop
	m := d.mappingCounters()
	if n <= 0 || m == nil {
		return nil
	}
	var out []metrics.MappingCount
	for _, st := range m.Top(n, false) {
		out = append(out, mappingCount(st.Entry, &st.MappingCount))
	}
	return out
}

func mappingCount(e mapping.Entry, c *stack.MappingCount) metrics.MappingCount {
	return metrics.MappingCount{IPv4: e.IPv4.String(), IPv6: e.IPv6.String(),
		Packets4to6: c.Packets[0], Bytes4to6: c.Bytes[0], Packets6to4: c.Packets[1], Bytes6to4: c.Bytes[1]}
}

// Orders of the mapping counters listing (request.By).
const (
	ByPackets = "packets"
	ByBytes   = "bytes"
)

// MaxTop bounds request.Top: the daemon keeps that many entries while it
// ranks them (a listing of every entry, Top 0, keeps none).
const MaxTop = 100000

// mappingCountsHeader is the CSV listing's header line.
const mappingCountsHeader = "ipv4,ipv6,packets_4to6,bytes_4to6,packets_6to4,bytes_6to4\n"

// serveMappingCounts answers the "mapping_counts" request: a reply line,
// then (if it says stream) the entries with their counters, every entry
// in table order, or with Top the Top busiest by req.By, most first. The
// listing is written as the counters are read; the daemon holds at most
// Top entries besides the table. It reports whether the connection must
// close to end the listing.
func (d *daemon) serveMappingCounts(w deadlineWriter, enc *json.Encoder, req request) bool {
	m := d.mappingCounters()
	var rep reply
	switch {
	case req.Format != config.FormatCSV && req.Format != config.FormatJSON:
		rep.Error = fmt.Sprintf("mapping_counts: unknown format %q (want %q or %q)", req.Format, config.FormatCSV, config.FormatJSON)
	case req.By != "" && req.By != ByPackets && req.By != ByBytes:
		rep.Error = fmt.Sprintf("mapping_counts: unknown order %q (want %q or %q)", req.By, ByPackets, ByBytes)
	case req.Top < 0 || req.Top > MaxTop:
		rep.Error = fmt.Sprintf("mapping_counts: top %d: want 1 to %d, or 0 for every entry", req.Top, MaxTop)
	case m == nil:
		rep.Error = "per-mapping counters are off: set mapping_counters = true in the translator block and reload"
	default:
		rep.OK, rep.Stream = true, true
	}
	if err := enc.Encode(rep); err != nil || !rep.Stream {
		return err != nil
	}
	_ = writeMappingCounts(w, m, req)
	return true
}

// writeMappingCounts writes the listing of serveMappingCounts: CSV with a
// header line, or one JSON object {"count", "top", "by", "mappings": [...]}
// (metrics.MappingCount records).
func writeMappingCounts(w io.Writer, m *stack.MappingCounters, req request) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	buf := make([]byte, 0, 256)
	n := 0
	write := func(e mapping.Entry, c *stack.MappingCount) bool {
		buf = buf[:0]
		if req.Format == config.FormatCSV {
			buf = e.IPv4.AppendTo(buf)
			buf = append(buf, ',')
			buf = e.IPv6.AppendTo(buf)
			for _, v := range [4]uint64{c.Packets[0], c.Bytes[0], c.Packets[1], c.Bytes[1]} {
				buf = append(buf, ',')
				buf = strconv.AppendUint(buf, v, 10)
			}
			buf = append(buf, '\n')
		} else {
			if n > 0 {
				buf = append(buf, ',')
			}
			rec, _ := json.Marshal(mappingCount(e, c)) // strings and numbers only: cannot fail
			buf = append(append(buf, '\n'), rec...)
		}
		n++
		_, err := bw.Write(buf)
		return err == nil
	}
	if req.Format == config.FormatCSV {
		bw.WriteString(mappingCountsHeader)
	} else {
		by := req.By
		if by == "" {
			by = ByPackets
		}
		fmt.Fprintf(bw, "{\"count\":%d,\"top\":%d,\"by\":%q,\"mappings\":[", m.Table().Len(), req.Top, by)
	}
	if req.Top > 0 {
		for _, st := range m.Top(req.Top, req.By == ByBytes) {
			if !write(st.Entry, &st.MappingCount) {
				break
			}
		}
	} else {
		m.Each(func(_ int, e mapping.Entry, c stack.MappingCount) bool { return write(e, &c) })
	}
	if req.Format == config.FormatJSON {
		bw.WriteString("\n]}\n")
	}
	return bw.Flush()
}

// StreamMappingCounts asks the daemon for its per-mapping counters in
// format ("csv" or "json"): every entry, or with top > 0 the top busiest
// by ("packets" or "bytes"). It copies the listing to w as it arrives.
func StreamMappingCounts(socket, format string, top int, by string, w io.Writer) error {
	return streamListing(socket, request{Command: "mapping_counts", Format: format, Top: top, By: by}, w)
}
