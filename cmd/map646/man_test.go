package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestManPages: one section-8 page per command, from the --help text, with
// no generation date (the pages of one version are always the same).
func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man")
	if _, errOut, err := runCmd(t, "man", "-o", dir); err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	for _, c := range newRootCommand().Commands() {
		if !c.IsAvailableCommand() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "map646-"+c.Name()+".8")); err != nil {
			t.Errorf("no page for %s: %v", c.Name(), err)
		}
	}
	run, err := os.ReadFile(filepath.Join(dir, "map646-run.8"))
	if err != nil {
		t.Fatal(err)
	}
	page := string(run)
	for _, want := range []string{`.TH "MAP646-RUN" "8"`, "map646 manual", "NOTIFY_SOCKET", `\fB--control-socket\fP`, `\fBmap646(8)\fP`} {
		if !strings.Contains(page, want) {
			t.Errorf("map646-run.8 lacks %q", want)
		}
	}
	if strings.Contains(page, "Auto generated") {
		t.Error("the page carries a generation date")
	}
	if _, _, err := runCmd(t, "man"); err == nil || !strings.Contains(err.Error(), "output") {
		t.Errorf("man without -o: %v", err)
	}
}
