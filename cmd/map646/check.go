package main

import (
	"errors"
	"fmt"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/config"
)

func newCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check -c FILE | check FILE",
		Short: "Validate a configuration without touching the system",
		Long: `check reads the HCL configuration and its mappings_file, applies every rule
that 'map646 run' applies (syntax, value ranges, RFC 6052 prefix, RFC 7757
mapping rules such as duplicates and overlaps), and builds the address table
once, but changes nothing on the system: no tun, no routes, no sockets.

Problems are printed to stderr as "file:line:column: message" with the source
line marked, and the exit status is 1. On success it prints one line: the
number of mappings, the prefix, and the configuration digest (the same digest
that 'map646 stats' and the metrics show for the running configuration).

Both files must be regular files (not a FIFO or a device), the HCL file at
most 256 KiB and nested at most 64 levels deep, the mappings_file at most
256 MiB.`,
		Example: `  map646 check -c /etc/map646/map646.hcl
  map646 check map646.hcl`,
		// The file may come as -c FILE, like run and translate take it,
		// or as the one argument, as operators of other tools type it.
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) > 1:
				return fmt.Errorf("check takes one configuration file, not %d arguments (check -c FILE)", len(args))
			case len(args) == 1 && path != "":
				return fmt.Errorf("give the configuration file once: either -c %s or %s", path, args[0])
			case len(args) == 0 && path == "":
				return fmt.Errorf("which configuration? give it as check -c FILE (or check FILE)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				path = args[0]
			}
			c, err := config.Load(path)
			if err != nil {
				var ce *config.Error
				if !errors.As(err, &ce) {
					return err
				}
				if werr := config.WriteDiagnostics(cmd.ErrOrStderr(), ce.Diagnostics, ce.Files); werr != nil {
					return werr
				}
				n := 0
				for _, d := range ce.Diagnostics {
					if d.Severity == hcl.DiagError {
						n++
					}
				}
				return fmt.Errorf("%s: %d error(s)", path, n)
			}
			if len(c.Warnings) > 0 {
				// Warnings point into the HCL file; read it again for the snippets.
				files := map[string]*hcl.File{}
				if src, err := config.ReadFile(path); err == nil {
					files[path] = &hcl.File{Bytes: src}
				}
				if err := config.WriteDiagnostics(cmd.ErrOrStderr(), c.Warnings, files); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: OK: %s\n", path, c.Summary())
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "the HCL configuration file")
	cmd.MarkFlagFilename("config", "hcl")
	return cmd
}
