package harness

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Building a fresh data directory (initdb, mariadb-install-db) costs about
// half a second; copying a finished one costs a tenth of that. Finished
// directories are kept under the system temp dir, named by a key that
// holds the server binary's size and time, so an upgraded server gets a
// new one. They are built aside and renamed into place, so a directory
// that exists is complete; a manifest of file sizes catches one that a
// temp-dir cleaner thinned out, and it is then built again.

var templateMu sync.Mutex

// dataTemplate returns the cached directory for key, building it with
// build (which fills the directory it is given) when missing.
func dataTemplate(binary string, key []string, build func(dir string) error) (string, error) {
	fi, err := os.Stat(binary)
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%d", binary, fi.Size(), fi.ModTime().UnixNano(), os.Geteuid())
	for _, k := range key {
		fmt.Fprintf(h, "\x00%s", k)
	}
	root := filepath.Join(os.TempDir(), fmt.Sprintf("tollgate-harness-templates-%d", os.Geteuid()))
	dir := filepath.Join(root, filepath.Base(binary)+"-"+hex.EncodeToString(h.Sum(nil))[:16])

	templateMu.Lock()
	defer templateMu.Unlock()
	if templateIntact(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o711); err != nil {
		return "", fmt.Errorf("harness: template dir: %w", err)
	}
	// Other test binaries (go test runs packages in parallel) may be
	// checking or building the same template: decide and build under a
	// lock, so none removes a template another has just finished.
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("harness: template lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("harness: template lock: %w", err)
	}
	if templateIntact(dir) {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("harness: remove damaged template: %w", err)
	}
	work, err := os.MkdirTemp(root, "build-")
	if err != nil {
		return "", fmt.Errorf("harness: template dir: %w", err)
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o711); err != nil {
		return "", fmt.Errorf("harness: template dir: %w", err)
	}
	data := filepath.Join(work, "data")
	if err := build(data); err != nil {
		return "", err
	}
	if err := writeManifest(data); err != nil {
		return "", err
	}
	if err := os.Rename(data, dir); err != nil {
		return "", fmt.Errorf("harness: template dir: %w", err)
	}
	return dir, nil
}

// copyTree copies the regular files and directories under src to dst
// (which must not exist) with their modes, owned by u (nil: the caller).
func copyTree(src, dst string, u *SystemUser) error {
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if rel == manifestName {
			return nil
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, info.Mode().Perm()); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := copyFile(p, target, info.Mode().Perm()); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected %s in template", strings.TrimPrefix(info.Mode().Type().String(), "-"))
		}
		if u != nil {
			return os.Lchown(target, int(u.UID), int(u.GID))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("harness: copy %s: %w", src, err)
	}
	return nil
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

const manifestName = ".harness-manifest"

// writeManifest lists every file under dir with its size.
func writeManifest(dir string) error {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%d\t%s\n", info.Size(), rel)
		return nil
	})
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, manifestName), []byte(b.String()), 0o644)
	}
	if err != nil {
		return fmt.Errorf("harness: template manifest: %w", err)
	}
	return nil
}

// templateIntact reports whether dir holds every file of its manifest at
// its recorded size.
func templateIntact(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(data)) {
		size, rel, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		if !ok {
			return false
		}
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil || !fi.Mode().IsRegular() || strconv.FormatInt(fi.Size(), 10) != size {
			return false
		}
	}
	return true
}
