package main

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"

	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/config"
	"github.com/map646/map646/appliance/daemon"
)

// loadForQuery loads FILE for the offline form of mappings and lookup; a
// refused file's diagnostics become the error.
func loadForQuery(path string) (*config.Config, error) {
	c, err := config.Load(path)
	var ce *config.Error
	if errors.As(err, &ce) {
		return nil, fmt.Errorf("%s is not valid (run 'map646 check -c %s'):\n%w", path, path, err)
	}
	return c, err
}

func newMappingsCmd() *cobra.Command {
	var path, socket, format string
	cmd := &cobra.Command{
		Use:   "mappings [-c FILE] [--format csv|json]",
		Short: "List the address map: the prefix and every mapping, with where it came from",
		Long: `mappings lists the RFC 6052 prefix and every RFC 7757 mapping in
configuration order, each with the file and line it was written on: the
mapping blocks of the HCL file, then the lines of the mappings_file.

Without -c it asks the running translator (through its control socket) for
the table it uses now, which after a reload is the new one. With -c FILE it
lists what FILE would load, without a running translator.

--format csv (the default) prints a valid mappings file: a comment with the
prefix, then "ipv4,ipv6 # file:line" per entry. --format json prints one
object {"prefix", "digest", "count", "mappings": [{"ipv4", "ipv6", "file",
"line"}, ...]}. Both are streamed from the table as they are written, so a
million entries need no extra memory in the translator.`,
		Example: `  map646 mappings > running.csv
  map646 mappings --format json | jq '.mappings[] | select(.file | endswith(".hcl"))'
  map646 mappings -c /etc/map646.hcl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != config.FormatCSV && format != config.FormatJSON {
				return fmt.Errorf("--format %q: want csv or json", format)
			}
			if path == "" {
				return daemon.StreamMappings(socket, format, cmd.OutOrStdout())
			}
			c, err := loadForQuery(path)
			if err != nil {
				return err
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			if err := c.WriteMappings(w, format); err != nil {
				return err
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "list what this HCL file would load instead of asking the running translator")
	cmd.Flags().StringVar(&socket, "control-socket", daemon.DefaultControlSocket, "the running daemon's control socket")
	cmd.Flags().StringVar(&format, "format", config.FormatCSV, "csv or json")
	cmd.MarkFlagFilename("config", "hcl")
	return cmd
}

func newLookupCmd() *cobra.Command {
	var path, socket string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "lookup ADDRESS [-c FILE]",
		Short: "Say which mapping or prefix translates an address, and to what",
		Long: `lookup takes an IPv4 or IPv6 address and says how the translator treats it:
the EAM entry that applies (the longest match, RFC 7757 section 3) with the
file and line it was written on, or the RFC 6052 prefix, and the address it
translates to; or why it is not translated (no entry and outside the prefix,
or non-global IPv4 with the well-known prefix, RFC 6052 section 3.1). It
says too when the translator drops packets to the address, or to its
translation, for what the address is, and under which drop reason: a
deny_ipv4 entry covers it (denied), it is one of the translator's own
addresses (own_address: ipv4_address, the first icmp_source_pool address,
an interface address, and in host mode every IPv4 address of the host but
those a mapping maps; Echo Requests to it are answered), or the directed
broadcast address of an own or mapped subnet (broadcast).

Without -c it asks the running translator, whose engine answers for the
host's addresses too; with -c FILE it answers for what FILE would load,
which knows only the file's own addresses. --json prints the answer as a
JSON object ("drop" holds the drop reason).`,
		Example: `  map646 lookup 198.51.100.10
  map646 lookup 2001:db8:6::10 -c /etc/map646.hcl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := netip.ParseAddr(args[0])
			if err != nil {
				return fmt.Errorf("%q is not an IPv4 or IPv6 address", args[0])
			}
			var r *config.LookupResult
			if path == "" {
				r, err = daemon.QueryLookup(socket, a)
			} else {
				var c *config.Config
				if c, err = loadForQuery(path); err == nil {
					r, err = c.Lookup(a, nil)
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), r)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), r.String())
			return err
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "answer for this HCL file instead of asking the running translator")
	cmd.Flags().StringVar(&socket, "control-socket", daemon.DefaultControlSocket, "the running daemon's control socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagFilename("config", "hcl")
	return cmd
}
