package image

import (
	"fmt"
	"os"
)

// configFiles validates the configuration and returns the files to bake
// into the initramfs: the HCL file as /etc/map646.hcl.
func configFiles(path string) ([]File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	return []File{{Path: GuestConfigPath, Mode: 0o644, Data: b}}, nil
}
