package image

import (
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// File is one regular file of the initramfs.
type File struct {
	Path string // absolute path inside the guest, e.g. /etc/map646.hcl
	Mode uint64 // permission bits
	Data []byte
}

// baseDirs exist in every initramfs: the mount points that PID 1 fills.
var baseDirs = []string{"dev", "etc", "proc", "run", "sys", "tmp"}

// WriteInitramfs writes a gzip-compressed newc cpio archive holding files,
// their parent directories, the mount points and /dev/console (the kernel
// opens it for /init's stdio before anything can mount devtmpfs).
//
// Entries are sorted by path and carry no times, owners or device numbers of
// the build host, so the output depends on the file contents only.
func WriteInitramfs(w io.Writer, files []File) error {
	var recs []cpio.Record
	dirs := map[string]bool{}
	for _, d := range baseDirs {
		dirs[d] = true
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if name == "" || name == "." {
			return fmt.Errorf("image: initramfs file with empty path")
		}
		if seen[name] {
			return fmt.Errorf("image: initramfs file %s given twice", f.Path)
		}
		seen[name] = true
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
		recs = append(recs, cpio.StaticRecord(f.Data, cpio.Info{
			Name: name,
			Mode: cpio.S_IFREG | (f.Mode & 0o7777),
		}))
	}
	for d := range dirs {
		if seen[d] {
			return fmt.Errorf("image: initramfs path /%s is both a file and a directory", d)
		}
		mode := uint64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		recs = append(recs, cpio.Directory(d, mode))
	}
	recs = append(recs, cpio.CharDev("dev/console", 0o600, 5, 1))
	recs = append(recs, cpio.CharDev("dev/null", 0o666, 1, 3))
	// Parents sort before children because "a" < "a/...".
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	for i := range recs {
		recs[i] = cpio.MakeReproducible(recs[i])
		// Inode numbers only matter for hard links, which we have none of;
		// number them by position so they do not depend on the host.
		recs[i].Ino = uint64(i + 1)
		recs[i].NLink = 1
		if recs[i].Mode&cpio.S_IFMT == cpio.S_IFDIR {
			recs[i].NLink = 2
		}
	}

	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return err
	}
	rw := cpio.Newc.Writer(zw)
	if err := cpio.WriteRecords(rw, recs); err != nil {
		return fmt.Errorf("image: initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("image: initramfs: %w", err)
	}
	return zw.Close()
}
