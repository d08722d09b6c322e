package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/map646/map646/internal/testenv"
)

// TestExamples loads every configuration under examples/, so that they stay
// valid as the schema changes. A directory with a gen-mappings.sh has its
// mappings_file generated: the example is copied to a temporary directory
// and the script writes mappings.csv beside it.
func TestExamples(t *testing.T) {
	root := filepath.Join("..", "..", "examples")
	files, err := filepath.Glob(filepath.Join(root, "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob(filepath.Join(root, "*", "*.hcl"))
	files = append(files, more...)

	// What each example must contain, so that an example cannot quietly
	// lose its point.
	want := map[string]func(t *testing.T, c *Config){
		"small-site.hcl": func(t *testing.T, c *Config) {
			if len(c.Translator.Mappings) != 3 || c.Metrics.Listen == "" {
				t.Errorf("%d mappings, metrics %q", len(c.Translator.Mappings), c.Metrics.Listen)
			}
		},
		"large-site/map646.hcl": func(t *testing.T, c *Config) {
			if len(c.Translator.Mappings) != 100_001 || c.Translator.MappingsFile == "" {
				t.Errorf("%d mappings from %q", len(c.Translator.Mappings), c.Translator.MappingsFile)
			}
		},
		"nic-mode.hcl": func(t *testing.T, c *Config) {
			if n := c.Translator.NIC; c.Translator.Link != LinkNIC || n.IPv4 != "eth0" || n.IPv6 != "eth1" || len(c.Interfaces) != 2 {
				t.Errorf("NIC mode example: link %q, nic %+v, %d interfaces", c.Translator.Link, n, len(c.Interfaces))
			}
		},
		"appliance.hcl": func(t *testing.T, c *Config) {
			if len(c.Interfaces) != 2 || len(c.Routes) != 2 || c.BGP == nil || len(c.BGP.Neighbors) != 2 || len(c.RouterAdvertisements) != 1 {
				t.Errorf("appliance example lacks its blocks: %+v", c)
			}
		},
	}
	seen := 0
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		t.Run(rel, func(t *testing.T) {
			path := f
			gen := filepath.Join(filepath.Dir(f), "gen-mappings.sh")
			if _, err := os.Stat(gen); err == nil {
				if _, err := exec.LookPath("awk"); err != nil {
					testenv.SkipOrFail(t, "awk is needed to generate the mappings file")
				}
				dir := t.TempDir()
				src, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				path = filepath.Join(dir, filepath.Base(f))
				if err := os.WriteFile(path, src, 0o644); err != nil {
					t.Fatal(err)
				}
				cmd := exec.Command("sh", gen, "100000")
				out, err := os.Create(filepath.Join(dir, "mappings.csv"))
				if err != nil {
					t.Fatal(err)
				}
				cmd.Stdout, cmd.Stderr = out, os.Stderr
				if err := cmd.Run(); err != nil {
					t.Fatalf("%s: %v", gen, err)
				}
				out.Close()
			}
			c, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Warnings) > 0 {
				t.Errorf("warnings: %v", c.Warnings)
			}
			if _, err := c.Xlat(); err != nil {
				t.Fatal(err)
			}
			if check := want[filepath.ToSlash(rel)]; check != nil {
				seen++
				check(t, c)
			}
		})
	}
	if seen != len(want) {
		t.Errorf("found %d of the %d expected examples in %s", seen, len(want), root)
	}
}
