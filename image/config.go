package image

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/map646/map646/appliance/config"
)

// configFiles validates the configuration with config.Load (the same
// diagnostics as `map646 check`: file, line, column) and returns the files
// to bake into the initramfs: the HCL file as /etc/map646.hcl and its
// mappings_file, placed where the guest will look for it (relative names
// resolve against /etc there, as they did against the file's directory
// here; absolute names stay as they are).
func configFiles(path string) ([]File, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	files := []File{{Path: GuestConfigPath, Mode: 0o644, Data: src}}
	if cfg.Translator.MappingsFile == "" {
		return files, nil
	}
	name, err := mappingsAttr(src, path)
	if err != nil {
		return nil, err
	}
	guest := name
	if !filepath.IsAbs(guest) {
		guest = filepath.Join(GuestConfigDir, name)
	}
	if guest == GuestConfigPath || guest == "/init" {
		return nil, fmt.Errorf("image: %s: mappings_file %q would overwrite %s in the image", path, name, guest)
	}
	data, err := os.ReadFile(cfg.Translator.MappingsFile)
	if err != nil {
		return nil, fmt.Errorf("image: mappings_file: %w", err)
	}
	return append(files, File{Path: guest, Mode: 0o644, Data: data}), nil
}

// mappingsAttr returns translator.mappings_file exactly as written (the
// config package resolves it against the host directory, which is not
// where the guest will find it).
func mappingsAttr(src []byte, path string) (string, error) {
	f, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return "", fmt.Errorf("image: %s", diags.Error())
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return "", fmt.Errorf("image: %s: unexpected HCL body", path)
	}
	for _, b := range body.Blocks {
		if b.Type != "translator" {
			continue
		}
		a, ok := b.Body.Attributes["mappings_file"]
		if !ok {
			continue
		}
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() || v.Type() != cty.String {
			return "", fmt.Errorf("image: %s: mappings_file is not a string", path)
		}
		return v.AsString(), nil
	}
	return "", fmt.Errorf("image: %s: no mappings_file attribute", path)
}
