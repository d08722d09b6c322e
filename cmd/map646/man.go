package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func newManCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "man -o DIR",
		Short: "Write the manual pages (section 8) of map646 and its commands",
		Long: `man writes one troff manual page per command into DIR: map646.8 and
map646-check.8, map646-run.8, ... for each subcommand, made from the same
text as --help, so the pages never disagree with the binary. 'make man'
writes them to out/man; the Debian package installs them in
/usr/share/man/man8.`,
		Example: `  map646 man -o /tmp/man && man -l /tmp/man/map646-run.8`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			// The pages must be the same on every build of one version:
			// no generation date in the footer.
			root.DisableAutoGenTag = true
			hdr := &doc.GenManHeader{Section: "8", Manual: "map646 manual", Source: "map646 " + Version()}
			if err := doc.GenManTree(root, hdr, dir); err != nil {
				return fmt.Errorf("writing the manual pages: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "output", "o", "", "directory to write the pages to (created if missing)")
	cmd.MarkFlagRequired("output")
	cmd.MarkFlagDirname("output")
	return cmd
}
