package image

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/map646/map646/appliance/config"
)

// configFiles validates the configuration with the config package (the
// same diagnostics as `map646 check`: file, line, column) and returns the
// files to bake into the initramfs: the HCL file as /etc/map646.hcl and
// its mappings_file, placed where the guest will look for it (relative
// names resolve against /etc there, as they did against the file's
// directory here; absolute names stay as they are). What is baked is what
// was validated: the HCL bytes are the ones parsed, and a mappings file
// that changed since is refused by its digest.
func configFiles(path string) ([]File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cfg, err := config.Parse(src, path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	files := []File{{Path: GuestConfigPath, Mode: 0o644, Data: src}}
	t := cfg.Translator
	if t.MappingsFile == "" {
		return files, nil
	}
	guest := t.MappingsName
	if !filepath.IsAbs(guest) {
		guest = filepath.Join(GuestConfigDir, guest)
	}
	if guest == GuestConfigPath || guest == "/init" {
		return nil, fmt.Errorf("image: %s: mappings_file %q would overwrite %s in the image", path, t.MappingsName, guest)
	}
	data, err := os.ReadFile(t.MappingsFile)
	if err != nil {
		return nil, fmt.Errorf("image: mappings_file: %w", err)
	}
	if config.Digest(src, data) != cfg.Digest {
		return nil, fmt.Errorf("image: mappings_file %s changed while it was being read; build again", t.MappingsFile)
	}
	return append(files, File{Path: guest, Mode: 0o644, Data: data}), nil
}
