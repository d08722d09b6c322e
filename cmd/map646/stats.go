package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
	"github.com/map646/map646/appliance/metrics"
	"github.com/map646/map646/stack"
)

func newStatsCmd() *cobra.Command {
	var (
		socket   string
		asJSON   bool
		explain  bool
		mappings bool
		top      int
		by       string
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show the running translator's counters",
		Long: `stats asks the running translator (through its control socket) for its
counters and prints them: packets translated per direction (4to6, 6to4) and
protocol, bytes, packets dropped per direction and reason (only reasons that
occurred), packets the translator made itself (ICMP errors, fragments),
link-level counters of the tun, the number of mappings and routes, reloads
(with the last error, if the last reload was refused), the data path's health
and the state of the announcers (BGP sessions, router advertisements).

--explain follows the drops, the engine's own counters and the link
counters with what each counter shown means and what to do about it
(docs/configuration.md has the same tables).

--json prints the same snapshot as one JSON object, for scripts. For
monitoring, scrape the Prometheus endpoint (metrics.listen) instead.

--mappings prints the per-mapping counters instead (they are on with
mapping_counters = true in the translator block): for every RFC 7757 entry
in configuration order, packets and bytes translated towards the server
(4to6) and from it (6to4), as CSV with a header line, or with --json as one
object {"count", "top", "by", "mappings": [{"ipv4", "ipv6", "packets_4to6",
"bytes_4to6", "packets_6to4", "bytes_6to4"}, ...]}. --top N lists only the N
busiest entries that had traffic, by packets (or --by bytes), busiest first.
The listing is streamed from the translator as it reads the counters: a
million entries need no copy of the table here or there.

--explain --json prints every explanation this binary has, as one JSON
object: {"counts", "drop_reasons", "link_counters", "engine_counters"},
each counter with "name", "meaning", "action" (Markdown) and, when a
daemon answers, "count" (drop reasons also "by_direction"). Without a
daemon it prints the explanations alone ("counts": false) and says why on
stderr.`,
		Example: `  map646 stats
  map646 stats --explain
  map646 stats --json | jq '.drops'
  map646 stats --mappings --top 10
  map646 stats --mappings --json | jq '.mappings[] | select(.packets_4to6 == 0)'
  map646 stats --explain --json | jq '.drop_reasons[] | select(.count > 0)'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !mappings && (top != 0 || cmd.Flags().Changed("by")) {
				return fmt.Errorf("--top and --by go with --mappings")
			}
			if mappings {
				if top < 0 || top > daemon.MaxTop {
					return fmt.Errorf("--top %d: want 1 to %d, or 0 for every entry", top, daemon.MaxTop)
				}
				if by != daemon.ByPackets && by != daemon.ByBytes {
					return fmt.Errorf("--by %q: want packets or bytes", by)
				}
				if explain {
					return fmt.Errorf("--explain does not go with --mappings")
				}
				format := config.FormatCSV
				if asJSON {
					format = config.FormatJSON
				}
				return daemon.StreamMappingCounts(socket, format, top, by, cmd.OutOrStdout())
			}
			st, err := daemon.QueryStats(socket)
			if explain && asJSON {
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "map646 stats: explanations without counts: %v\n", err)
					st = nil
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(newExplainReport(st))
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return printStats(cmd.OutOrStdout(), st, time.Now(), explain)
		},
	}
	cmd.Flags().StringVar(&socket, "control-socket", daemon.DefaultControlSocket, "the running daemon's control socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&explain, "explain", false, "say what each drop reason and counter shown means and what to do about it (with --json: all of them, as JSON)")
	cmd.Flags().BoolVar(&mappings, "mappings", false, "print the per-mapping counters (translator.mapping_counters) instead")
	cmd.Flags().IntVar(&top, "top", 0, "with --mappings: only the N busiest entries (0: every entry)")
	cmd.Flags().StringVar(&by, "by", daemon.ByPackets, "with --top: rank by packets or bytes")
	return cmd
}

// printStats writes the human-readable form of st, with explain the
// explanations of its drop reasons and link counters.
func printStats(w io.Writer, st *metrics.Stats, now time.Time, explain bool) error {
	health := "healthy"
	if !st.Healthy {
		health = "UNHEALTHY"
	}
	fmt.Fprintf(w, "map646 %s, up %s, data path %s\n", st.Version, now.Sub(st.Started).Round(time.Second), health)
	fmt.Fprintf(w, "config   %s (digest %.16s)\n", st.Config, st.Digest)
	if st.PendingDigest != "" {
		fmt.Fprintf(w, "pending  digest %.16s: reloaded, runs in full from the next start\n", st.PendingDigest)
	}
	fmt.Fprintf(w, "mappings %d, routes %d, tun %s (offloads %s)\n", st.Mappings, st.Routes, st.Tun, st.Offloads)
	if st.MetricsListen != "" {
		fmt.Fprintf(w, "metrics  http://%s/metrics\n", st.MetricsListen)
	}
	fmt.Fprintf(w, "reloads  %d ok, %d failed", st.Reloads.OK, st.Reloads.Failed)
	if !st.Reloads.Last.IsZero() {
		fmt.Fprintf(w, ", last ok at %s", st.Reloads.Last.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if st.Reloads.LastError != "" {
		fmt.Fprintf(w, "         last reload refused:\n")
		for _, l := range strings.Split(st.Reloads.LastError, "\n") {
			fmt.Fprintf(w, "           %s\n", l)
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "packets\t4to6\t6to4\t")
	var kinds []string
	val := map[[2]string]uint64{}
	for _, c := range st.Packets {
		if !slices.Contains(kinds, c.Kind) {
			kinds = append(kinds, c.Kind)
		}
		val[[2]string{c.Dir, c.Kind}] = c.Value
	}
	for _, k := range kinds {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k, val[[2]string{"4to6", k}], val[[2]string{"6to4", k}])
	}
	bytes := map[string]uint64{}
	for _, c := range st.Bytes {
		bytes[c.Dir] = c.Value
	}
	fmt.Fprintf(tw, "bytes\t%d\t%d\t\n", bytes["4to6"], bytes["6to4"])
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "emitted %d (ICMP errors, fragments), hairpinned %d, ICMP errors rate-limited %d\n", st.Emitted, st.Hairpinned, st.RateLimited)
	if explain {
		writeExplanations(w, []string{"emitted", "hairpinned", "rate_limited"}, stack.EngineCounters())
	}

	var drops []metrics.Count
	var total uint64
	for _, c := range st.Drops {
		if c.Value > 0 {
			drops = append(drops, c)
			total += c.Value
		}
	}
	fmt.Fprintf(w, "\ndropped %d\n", total)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range drops {
		fmt.Fprintf(tw, "  %s\t%s\t%d\n", c.Dir, c.Kind, c.Value)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if explain {
		var names []string
		for _, c := range drops {
			names = append(names, c.Kind)
		}
		writeExplanations(w, names, stack.DropReasons())
	}

	fmt.Fprintln(w, "\nlink")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range st.Link {
		fmt.Fprintf(tw, "  %s\t%d\n", c.Kind, c.Value)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if explain {
		var names []string
		for _, c := range st.Link {
			names = append(names, c.Kind)
		}
		writeExplanations(w, names, stack.LinkCounters())
	}
	for _, a := range st.Announcer {
		b, err := json.Marshal(a.Status)
		if err != nil {
			b = []byte(fmt.Sprint(a.Status))
		}
		fmt.Fprintf(w, "\nannouncer %s: %s\n", a.Name, b)
	}
	return nil
}

// writeJSON is the --json output of the query commands: v as one
// indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
