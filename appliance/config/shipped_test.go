package config

import (
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
)

// TestShippedConfigs checks every other HCL file the repository ships as
// `map646 check` does, and wants it clean: no error and no warning. Among
// them are the demo image's configuration (image/demo.hcl, which README
// shows), the embedded demo (demo/demo.hcl) and the Debian package's
// conffile (packaging/map646.hcl), which the first `map646 check` an
// operator runs must not greet with a warning. examples/ is TestExamples'
// (it generates the large site's mappings file); bench/netns/templates
// are text/templates, not HCL until rendered.
func TestShippedConfigs(t *testing.T) {
	root := filepath.Join("..", "..")
	skip := map[string]bool{".git": true, "out": true, "bin": true, "testdata": true, "third_party": true,
		"examples": true, filepath.Join("bench", "netns", "templates"): true}
	var files []string
	err := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if e.IsDir() && skip[rel] {
			return filepath.SkipDir
		}
		if !e.IsDir() && filepath.Ext(p) == ".hcl" {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"image/demo.hcl", "demo/demo.hcl", "packaging/map646.hcl"} {
		if !slices.Contains(files, filepath.FromSlash(want)) {
			t.Errorf("%s is not among the shipped configurations found: %v", want, files)
		}
	}
	for _, rel := range files {
		t.Run(filepath.ToSlash(rel), func(t *testing.T) {
			c, err := Load(filepath.Join(root, rel))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.Warnings {
				t.Errorf("warning: %s", w.Error())
			}
			if _, err := c.Xlat(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
