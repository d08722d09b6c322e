package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"

	// The kernel is a Go module so that go.mod pins it and go.sum verifies
	// it like any other dependency. Its package is empty; importing it makes
	// the toolchain record the exact version in this binary's build info,
	// which is how KernelPath finds the file in the module cache. Embedding
	// is not possible (go:embed cannot reach into another module) and
	// copying the 16 MiB vmlinuz into this repository would duplicate what
	// the module already ships.
	_ "github.com/gokrazy/kernel.amd64"
	"golang.org/x/mod/module"
)

// KernelModule is the Go module that ships the appliance kernel (Linux with
// virtio, tun, IPv6 and the EFI stub built in) as the file vmlinuz.
const KernelModule = "github.com/gokrazy/kernel.amd64"

// KernelPath returns the path of vmlinuz from the version of KernelModule
// that this binary was built with: the module cache if it holds it, else
// `go mod download` (which verifies it against the checksum database).
func KernelPath() (string, error) {
	version := kernelVersion()
	if version == "" {
		return "", fmt.Errorf("image: %s is not in this binary's build info; pass the kernel explicitly", KernelModule)
	}
	if dir, err := moduleCacheDir(); err == nil {
		esc, err := module.EscapePath(KernelModule)
		if err == nil {
			p := filepath.Join(dir, esc+"@"+version, "vmlinuz")
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("image: kernel %s@%s is not in the module cache and no go command is available to download it: %w", KernelModule, version, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(goBin, "mod", "download", "-json", KernelModule+"@"+version)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("image: go mod download %s@%s: %v: %s", KernelModule, version, err, stderr.Bytes())
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return "", fmt.Errorf("image: go mod download: %w", err)
	}
	if info.Error != "" {
		return "", errors.New("image: go mod download: " + info.Error)
	}
	return filepath.Join(info.Dir, "vmlinuz"), nil
}

// kernelVersion is the version of KernelModule recorded in the build info,
// or, where there is none (test binaries carry no dependency list), the one
// that the enclosing module's go.mod requires.
func kernelVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == KernelModule {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", KernelModule).Output()
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(out))
}

// moduleCacheDir follows the go command's rule: $GOMODCACHE, else the first
// $GOPATH entry's pkg/mod, else $HOME/go/pkg/mod.
func moduleCacheDir() (string, error) {
	if d := os.Getenv("GOMODCACHE"); d != "" {
		return d, nil
	}
	if gp := filepath.SplitList(os.Getenv("GOPATH")); len(gp) > 0 && gp[0] != "" {
		return filepath.Join(gp[0], "pkg", "mod"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, "go", "pkg", "mod"), nil
}
