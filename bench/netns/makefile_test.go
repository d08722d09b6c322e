package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/map646/map646/internal/testenv"
)

// TestMakeBenchNetnsFlags checks, with `make -n` (nothing runs), that
// `make bench-netns` hands TAYGA_FORK to the harness as an absolute
// -tayga-fork, leaves the flag out when TAYGA_FORK is empty, and appends
// BENCH_NETNS_FLAGS.
func TestMakeBenchNetnsFlags(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		testenv.SkipOrFail(t, "needs make (./deps.sh installs it)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		vars    []string
		want    []string
		mustNot string
	}{
		{"no fork", nil, []string{"./bench/netns -map646 bin/map646", "-out docs/benchmarks.md"}, "-tayga-fork"},
		{"absolute fork", []string{"TAYGA_FORK=/tmp/tayga-fork/tayga"}, []string{"-tayga-fork /tmp/tayga-fork/tayga "}, ""},
		{"relative fork made absolute", []string{"TAYGA_FORK=../tayga/tayga"}, []string{"-tayga-fork " + filepath.Join(filepath.Dir(root), "tayga/tayga") + " "}, ""},
		{"extra flags", []string{"BENCH_NETNS_FLAGS=-rounds 2 -gro on"}, []string{"-out docs/benchmarks.md -rounds 2 -gro on"}, "-tayga-fork"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"-n", "-s", "-C", root, "bench-netns"}, tc.vars...)
			cmd := exec.Command("make", args...)
			// A parent make (make test) passes its command-line variables
			// down in MAKEFLAGS, and TAYGA_FORK may be in the environment.
			for _, kv := range os.Environ() {
				switch k, _, _ := strings.Cut(kv, "="); k {
				case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TAYGA_FORK", "BENCH_NETNS_FLAGS":
				default:
					cmd.Env = append(cmd.Env, kv)
				}
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make %v: %v\n%s", args, err, out)
			}
			var line string
			for l := range strings.Lines(string(out)) {
				if strings.Contains(l, "./bench/netns") {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no harness command in:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("harness command %q lacks %q", line, w)
				}
			}
			if tc.mustNot != "" && strings.Contains(line, tc.mustNot) {
				t.Errorf("harness command %q has %q", line, tc.mustNot)
			}
		})
	}
}
