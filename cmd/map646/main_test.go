package main

import (
	"slices"
	"testing"
)

// TestRootCommandTree: the tree is built explicitly, every subcommand is
// in it, and two trees share no flag state.
func TestRootCommandTree(t *testing.T) {
	root := newRootCommand()
	var names []string
	for _, c := range root.Commands() {
		names = append(names, c.Name())
	}
	slices.Sort(names)
	if want := []string{"check", "image", "lookup", "man", "mappings", "reload", "run", "stats", "translate", "version"}; !slices.Equal(names, want) {
		t.Fatalf("subcommands %v, want %v", names, want)
	}
	run, _, err := root.Find([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	if err := run.Flags().Set("config", "a.hcl"); err != nil {
		t.Fatal(err)
	}
	other, _, _ := newRootCommand().Find([]string{"run"})
	if v := other.Flags().Lookup("config").Value.String(); v != "" {
		t.Errorf("a second tree sees the first one's flag: %q", v)
	}
}

// TestAnnouncerKinds: the daemon is given BGP and router advertisements,
// in that order.
func TestAnnouncerKinds(t *testing.T) {
	var names []string
	for _, k := range announcers() {
		if k.New == nil {
			t.Errorf("%s has no constructor", k.Name)
		}
		names = append(names, k.Name)
	}
	if !slices.Equal(names, []string{"bgp", "ra"}) {
		t.Errorf("announcers %v", names)
	}
}
