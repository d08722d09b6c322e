// Command map646 is the SIIT-DC border relay (RFC 7755): it translates
// between IPv4 clients and IPv6-only servers with explicit address mappings
// (RFC 7757) and an RFC 6052 prefix, keeping no per-connection state.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/map646/map646/appliance/pid1"
)

// newRootCommand builds the command tree; each subcommand's constructor
// lives beside the code it drives.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "map646",
		Short: "Stateless IPv4/IPv6 translator for IPv6-only clouds (SIIT-DC, RFC 7755)",
		Long: `map646 lets IPv4 clients on the Internet reach servers that have only IPv6
addresses. Each public IPv4 address maps one-to-one to a server's IPv6 address
(RFC 7757); IPv4 clients appear on the IPv6 side inside a /96 prefix (RFC 6052).
No connection state is kept, so several translators can run side by side.

Start with:
  map646 check -c map646.hcl     validate a configuration
  map646 run -c map646.hcl       translate (as root)
  map646 stats                   counters of the running translator`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newRunCmd(),
		newCheckCmd(),
		newReloadCmd(),
		newStatsCmd(),
		newMappingsCmd(),
		newLookupCmd(),
		newTranslateCmd(),
		newImageCmd(),
		newVersionCmd(),
		newManCmd(),
	)
	return root
}

func main() {
	if os.Getpid() == 1 {
		// Started by the kernel as /init inside the appliance image.
		pid1.Main(pid1.Options{Version: Version(), Announcers: announcers()})
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "map646:", err)
		os.Exit(1)
	}
}

// noArgsTakeC refuses positional arguments of commands whose file comes
// with -c, naming the flag: cobra's own answer, "unknown command", sends an
// operator used to "tool FILE" looking for a subcommand.
func noArgsTakeC(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if len(args) == 1 && strings.HasSuffix(args[0], ".hcl") && cmd.Flags().Lookup("config") != nil {
		return fmt.Errorf("unexpected argument %q: give the configuration file as -c %s", args[0], args[0])
	}
	return fmt.Errorf("%s takes no arguments, got %q (see %s --help)", cmd.CommandPath(), args, cmd.CommandPath())
}
