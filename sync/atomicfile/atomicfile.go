// Package atomicfile writes files the way a crash cannot tear (a temp file
// beside the target, fsync, rename, fsync of the directory), and sweeps the
// temp files a killed writer leaves behind. Every file this program writes
// (the credentials file, the pending backup and refresh, the state records,
// the setup-token env file, each user's metrics) goes through it, but one:
// the root-side publisher's merged metrics file (sync/promfile), which root
// writes into the node exporter's directory, where it must never follow a
// link as Write does.
package atomicfile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Write writes data to path the way a crash cannot tear: a temp file in the
// same directory (O_EXCL, the given mode), fsync, rename over the target, fsync of
// the directory. If path is a symlink its target is written and the link kept;
// the returned string is that target ("" when path is not a link).
func Write(path string, data []byte, mode fs.FileMode) (string, error) {
	return write(path, bytes.NewReader(data), mode, true)
}

// WriteUnsynced is Write without the fsyncs: the new content replaces the old
// at once for every process (rename), and survives a kill, but not a power
// loss until something syncs it. For a record that must be visible before a
// step that is timed (the lineage before a backup) and is made durable after.
func WriteUnsynced(path string, data []byte, mode fs.FileMode) error {
	_, err := write(path, bytes.NewReader(data), mode, false)
	return err
}

// WriteVisibleFirst writes data to path like Write but renames the temp
// file into place before the fsyncs: the file is complete and visible the
// moment the data is written, so a process killed after that leaves it
// behind (it survives kill -9 even before the fsync), and the fsyncs then
// make it durable across a power loss. For a record that is the only copy of
// a secret in flight (a refresh answer): every microsecond before it is
// visible is a window in which a crash loses it. A symlink at path is
// replaced, not followed.
func WriteVisibleFirst(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	f, tmp, err := createTemp(path, mode)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Chmod(mode.Perm())
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, pathCause(werr))
	}
	serr := f.Sync()
	if cerr := f.Close(); serr == nil {
		serr = cerr
	}
	if d, err := os.Open(dir); err == nil {
		if err := d.Sync(); serr == nil {
			serr = err
		}
		d.Close()
	}
	if serr != nil {
		return fmt.Errorf("fsync %s: %w", path, pathCause(serr))
	}
	return nil
}

// Copy copies the file src to dst the way Write writes, streaming:
// for a file too large to hold in memory (an oversized credentials file that
// is about to be replaced, and must not be lost).
func Copy(src, dst string, mode fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = write(dst, f, mode, true)
	return err
}

func write(path string, src io.Reader, mode fs.FileMode, sync bool) (string, error) {
	target := path
	linked := ""
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		t, err := filepath.EvalSymlinks(path)
		if err != nil {
			// A dangling link: write where it points.
			rl, rerr := os.Readlink(path)
			if rerr != nil {
				return "", fmt.Errorf("read symlink %s: %w", path, rerr)
			}
			if !filepath.IsAbs(rl) {
				rl = filepath.Join(filepath.Dir(path), rl)
			}
			t = rl
		}
		target, linked = t, t
	}
	dir := filepath.Dir(target)
	// Errors name the target, not the temp file: its random name would make
	// every retry's message new (and a "log once" log every one).
	f, tmp, err := createTemp(target, mode)
	if err != nil {
		return linked, err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// The umask may have narrowed the mode at create; set it exactly.
	if err := f.Chmod(mode.Perm()); err != nil {
		return linked, fmt.Errorf("chmod the temp file for %s: %w", target, pathCause(err))
	}
	if _, err := io.Copy(f, src); err != nil {
		return linked, fmt.Errorf("write the temp file for %s: %w", target, pathCause(err))
	}
	if sync {
		if err := f.Sync(); err != nil {
			return linked, fmt.Errorf("fsync the temp file for %s: %w", target, pathCause(err))
		}
	}
	if err := f.Close(); err != nil {
		return linked, fmt.Errorf("close the temp file for %s: %w", target, pathCause(err))
	}
	if err := os.Rename(tmp, target); err != nil {
		return linked, fmt.Errorf("rename into place %s: %w", target, pathCause(err))
	}
	ok = true
	if !sync {
		return linked, nil
	}
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return linked, fmt.Errorf("fsync directory %s: %w", dir, pathCause(err))
		}
	}
	return linked, nil
}

// createTemp creates, exclusively, the temp file a write of path goes
// through: "."+name+tempInfix+12 hex digits, beside path.
func createTemp(path string, mode fs.FileMode) (*os.File, string, error) {
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+tempInfix+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return nil, "", fmt.Errorf("create a temp file beside %s: %w", path, pathCause(err))
	}
	return f, tmp, nil
}

// tempInfix names Write's temp files: "."+name+".tmp-"+12 hex digits.
const tempInfix = ".tmp-"

// pathCause is the cause inside a *PathError or *LinkError (the temp file's
// name stays out of the message).
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// SweepTemps removes Write temp files in dir older than age: a writer
// killed between create and rename (kill -9, OOM) leaves one behind, holding
// a copy of a secret no process will ever clean up. Younger ones may belong to
// a write in flight and are left alone. It returns how many it removed.
func SweepTemps(dir string, age time.Duration) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		i := strings.LastIndex(name, tempInfix)
		if !strings.HasPrefix(name, ".") || i < 2 || !isHex12(name[i+len(tempInfix):]) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < age {
			continue
		}
		if os.Remove(filepath.Join(dir, name)) == nil {
			n++
		}
	}
	return n
}

func isHex12(s string) bool {
	if len(s) != 12 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
