package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/daemon"
)

func newReloadCmd() *cobra.Command {
	var socket string
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "Make the running translator read its configuration file again",
		Long: `reload asks the running translator (through its control socket) to read its
configuration file again and waits for the outcome. The file is checked as
'map646 check' does; if it has errors, they are printed (file:line:column)
and the exit status is 1, and the translator goes on with the configuration
it had. Otherwise the new address table is swapped in atomically and only the
routes that changed are added or removed; the summary says how many. If the
kernel refuses part of it (a route) or an announcer cannot start with its new
block, the new file is in use all the same, the error says what has not
taken effect and the exit status is 1: the translator retries the kernel by
itself (unhealthy meanwhile), and the announcer at the next reload, which may
be of the same file.

Sending SIGHUP to 'map646 run' does the same, with the outcome in its log.`,
		Example: `  map646 check /etc/map646/map646.hcl && map646 reload`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := daemon.RequestReload(socket)
			if err != nil {
				if res == nil { // no daemon, or no answer
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				if res.InUse {
					return fmt.Errorf("reloaded (digest %.16s), but part of the configuration has not taken effect", res.Digest)
				}
				return fmt.Errorf("reload refused; the running configuration stays in use")
			}
			out := cmd.OutOrStdout()
			if res.Unchanged {
				fmt.Fprintf(out, "unchanged: %d mappings, digest %.16s\n", res.Mappings, res.Digest)
				printPending(out, res)
				return nil
			}
			fmt.Fprintf(out, "reloaded: %d mappings, digest %.16s, routes +%d -%d, %d ms\n",
				res.Mappings, res.Digest, res.RoutesAdded, res.RoutesRemoved, res.DurationMillis)
			printPending(out, res)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "control-socket", daemon.DefaultControlSocket, "the running daemon's control socket")
	return cmd
}

// printPending names the settings that still differ from the running ones
// and the digest of the file that runs in full from the next start.
func printPending(out io.Writer, res *daemon.ReloadResult) {
	for _, s := range res.NeedsRestart {
		fmt.Fprintf(out, "note: the change to %s takes effect at the next start\n", s)
	}
	if res.PendingDigest != "" {
		fmt.Fprintf(out, "note: digest %.16s runs in full from the next start\n", res.PendingDigest)
	}
}
