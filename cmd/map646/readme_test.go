package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestREADMEShowsEveryCommand: the README's "Using it" section shows every
// command of the binary's tree (cobra's completion included, help and
// completion's per-shell commands aside) as "map646 <command path>", so that a new command cannot ship
// undocumented there.
func TestREADMEShowsEveryCommand(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, using, ok := strings.Cut(string(b), "\n## Using it\n")
	if !ok {
		t.Fatal("README.md has no \"## Using it\" section")
	}
	using, _, _ = strings.Cut(using, "\n## ")
	root := newRootCommand()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Name() == "help" {
				continue
			}
			n++
			if path := sub.CommandPath(); !strings.Contains(using, path+" ") && !strings.Contains(using, path+"\n") {
				t.Errorf("README.md's \"Using it\" does not show %q (%s)", path, sub.Short)
			}
			if sub.Name() != "completion" { // its shells are cobra's, not ours
				walk(sub)
			}
		}
	}
	walk(root)
	if n < 12 {
		t.Errorf("walked %d commands; the tree has at least 12", n)
	}
}
