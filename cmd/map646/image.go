package main

import (
	"fmt"
	"os"

	"github.com/map646/map646/image"
	"github.com/spf13/cobra"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build the bootable appliance image",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newImageBuildCmd())
	return cmd
}

func newImageBuildCmd() *cobra.Command {
	var opts image.Options
	cmd := &cobra.Command{
		Use:   "build -c map646.hcl -o DIR",
		Short: "Build vmlinuz, initrd.img, map646.img (BIOS+UEFI) and map646.qcow2 with the configuration baked in",
		Long: `Build the appliance: the map646 binary becomes /init of an initramfs with the
configuration at /etc/map646.hcl, beside the kernel of the Go module
` + image.KernelModule + `. DIR receives:

  vmlinuz, initrd.img   for direct kernel boot (qemu -kernel/-initrd)
  map646.img            raw hybrid GPT disk, boots under BIOS and UEFI
  map646.qcow2          the same disk as qcow2

The configuration is validated first. The binary defaults to this executable,
which must be statically linked (CGO_ENABLED=0). Outputs are reproducible: the
same inputs give byte-identical files (times come from SOURCE_DATE_EPOCH,
default 1980-01-01).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("cannot find this executable, pass --binary: %w", err)
				}
				opts.Binary = exe
			}
			res, err := image.Build(opts)
			if err != nil {
				return err
			}
			for _, p := range []string{res.Kernel, res.Initrd, res.Raw, res.Qcow2} {
				fi, err := os.Stat(p)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-40s %10d bytes\n", p, fi.Size())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Config, "config", "c", "", "HCL configuration to bake in (required)")
	f.StringVarP(&opts.OutDir, "output", "o", "", "output directory (required)")
	f.StringVar(&opts.Binary, "binary", "", "static map646 executable for /init (default: this executable)")
	f.StringVar(&opts.Kernel, "kernel", "", "bzImage to use instead of the kernel module's vmlinuz")
	f.StringVar(&opts.Cmdline, "cmdline", "", "kernel command line (default \""+image.DefaultCmdline+"\")")
	cmd.MarkFlagRequired("config")
	cmd.MarkFlagRequired("output")
	return cmd
}
