package atomicfile

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The fault suite's helpers for crash safety: a refresh answer visible before
// its fsyncs, a streamed copy of a file too large to read, and the sweep of
// temp files a killed writer left.
func TestWriteVisibleFirst(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "pending-refresh")
	for _, data := range []string{`{"a":1}`, `{"b":2}`} {
		if err := WriteVisibleFirst(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != data {
			t.Errorf("content %q; want %q", b, data)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*"+tempInfix+"*")); len(m) != 0 {
		t.Errorf("temp files left: %v", m)
	}
	if err := WriteVisibleFirst(filepath.Join(dir, "missing", "x"), []byte("x"), 0o600); err == nil || strings.Contains(err.Error(), tempInfix) {
		t.Errorf("error %v; want one that names the target, not the temp file", err)
	}
}

func TestCopyStreams(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	data := bytes.Repeat([]byte("0123456789abcdef"), (8<<20)/16) // 8 MiB: more than a buffer, streamed
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "state", "previous-credentials.json")
	os.MkdirAll(filepath.Dir(dst), 0o700)
	if err := Copy(src, dst, 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); !bytes.Equal(b, data) {
		t.Errorf("copy differs (%d bytes; want %d)", len(b), len(data))
	}
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v; want 0600", fi.Mode().Perm())
	}
}

func TestSweepTemps(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	mk := func(name string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), 0o600)
		os.Chtimes(p, mtime, mtime)
		return p
	}
	gone := []string{mk(".credentials.json.tmp-0123456789ab", old), mk(".lineage.tmp-abcdefabcdef", old)}
	kept := []string{
		mk(".credentials.json.tmp-0123456789ac", time.Now()), // young: a write in flight
		mk(".credentials.json.tmp-0123456789AB", old),        // not our name (upper case)
		mk(".credentials.json.tmp-0123", old),                // not our name (short)
		mk("credentials.json.tmp-0123456789ab", old),         // not hidden
		mk(".credentials.json", old),
	}
	os.Mkdir(filepath.Join(dir, ".x.tmp-0123456789ab"), 0o700) // a directory: never
	if n := SweepTemps(dir, time.Minute); n != len(gone) {
		t.Errorf("SweepTemps removed %d; want %d", n, len(gone))
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived", filepath.Base(p))
		}
	}
	for _, p := range append(kept, filepath.Join(dir, ".x.tmp-0123456789ab")) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s removed", filepath.Base(p))
		}
	}
}

func TestWrite(t *testing.T) {
	// A narrow umask must not narrow the mode, nor a wide one widen it.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)

	tests := []struct {
		name     string
		existing string      // existing file content; "" = none
		oldMode  fs.FileMode // of the existing file
		mode     fs.FileMode
	}{
		{name: "new file 0600", mode: 0o600},
		{name: "new file 0640 under umask 077", mode: 0o640},
		{name: "replace 0644 with 0600", existing: "old", oldMode: 0o644, mode: 0o600},
		{name: "replace 0600", existing: "old", oldMode: 0o600, mode: 0o600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := realDir(t)
			p := filepath.Join(dir, FileName)
			if tt.existing != "" {
				writeFile(t, p, tt.existing, tt.oldMode)
			}
			data := []byte(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1}}`)
			target, err := Write(p, data, tt.mode)
			if err != nil || target != "" {
				t.Fatalf("Write(%q) = %q, %v; want \"\", nil", p, target, err)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("after Write(%q) the file holds %q (%v); want %q", p, got, err, data)
			}
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.Mode().IsRegular() || fi.Mode().Perm() != tt.mode {
				t.Errorf("Write(%q, mode %v) left mode %v; want a regular file %v", p, tt.mode, fi.Mode(), tt.mode)
			}
			if names := listDir(t, dir); len(names) != 1 || names[0] != FileName {
				t.Errorf("Write left %v in the directory; want only %s", names, FileName)
			}
		})
	}
}

func TestWriteSymlink(t *testing.T) {
	tests := []struct {
		name     string
		link     string // symlink content
		existing bool   // target exists
		abs      bool
	}{
		{name: "relative link", link: "store/creds.json", existing: true},
		{name: "absolute link", link: "store/creds.json", existing: true, abs: true},
		{name: "dangling link", link: "store/creds.json", existing: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := realDir(t)
			if err := os.Mkdir(filepath.Join(dir, "store"), 0o700); err != nil {
				t.Fatal(err)
			}
			target := filepath.Join(dir, tt.link)
			if tt.existing {
				writeFile(t, target, "old", 0o600)
			}
			link := tt.link
			if tt.abs {
				link = target
			}
			p := filepath.Join(dir, FileName)
			if err := os.Symlink(link, p); err != nil {
				t.Fatal(err)
			}
			got, err := Write(p, []byte("new"), 0o600)
			if err != nil || got != target {
				t.Fatalf("Write(symlink %q) = %q, %v; want %q, nil", p, got, err, target)
			}
			fi, err := os.Lstat(p)
			if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Fatalf("after Write(%q) the path is no longer a symlink (%v, %v)", p, fi.Mode(), err)
			}
			if l, _ := os.Readlink(p); l != link {
				t.Errorf("symlink now points to %q; want %q", l, link)
			}
			if b, _ := os.ReadFile(target); string(b) != "new" {
				t.Errorf("target %q holds %q; want %q", target, b, "new")
			}
			if names := listDir(t, filepath.Join(dir, "store")); len(names) != 1 {
				t.Errorf("target dir holds %v; want only the target", names)
			}
		})
	}
}

func TestWriteFailure(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) (path, keep string) // keep: a file that must stay intact
	}{
		{name: "parent is a regular file", setup: func(t *testing.T, dir string) (string, string) {
			old := filepath.Join(dir, FileName)
			writeFile(t, old, "old content", 0o600)
			return filepath.Join(old, "child"), old
		}},
		{name: "symlink into a regular file", setup: func(t *testing.T, dir string) (string, string) {
			old := filepath.Join(dir, "regular")
			writeFile(t, old, "old content", 0o600)
			p := filepath.Join(dir, FileName)
			if err := os.Symlink("regular/creds.json", p); err != nil {
				t.Fatal(err)
			}
			return p, old
		}},
		{name: "target is a non-empty directory", setup: func(t *testing.T, dir string) (string, string) {
			p := filepath.Join(dir, FileName)
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			keep := filepath.Join(p, "inside")
			writeFile(t, keep, "old content", 0o600)
			return p, keep
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := realDir(t)
			p, keep := tt.setup(t, dir)
			before := listDir(t, dir)
			if _, err := Write(p, []byte("new content"), 0o600); err == nil {
				t.Fatalf("Write(%q) = nil error; want a failure", p)
			}
			if b, err := os.ReadFile(keep); err != nil || string(b) != "old content" {
				t.Errorf("after a failed Write(%q), %s holds %q (%v); want %q", p, keep, b, err, "old content")
			}
			if after := listDir(t, dir); strings.Join(after, ",") != strings.Join(before, ",") {
				t.Errorf("failed Write changed the directory: %v -> %v", before, after)
			}
		})
	}
}

// A write that fails midway (file size limit) leaves the old file and no temp file.
func TestWriteShortWrite(t *testing.T) {
	dir := realDir(t)
	p := filepath.Join(dir, FileName)
	writeFile(t, p, "old content", 0o600)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skip("getrlimit:", err)
	}
	small := lim
	small.Cur = 64
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Skip("setrlimit:", err)
	}
	_, err := Write(p, bytes.Repeat([]byte("x"), 4096), 0o600)
	if rerr := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatalf("Write past RLIMIT_FSIZE = nil error; want a failure")
	}
	if b, _ := os.ReadFile(p); string(b) != "old content" {
		t.Errorf("after a failed write the file holds %q; want %q", b, "old content")
	}
	if names := listDir(t, dir); len(names) != 1 {
		t.Errorf("failed write left %v; want only %s", names, FileName)
	}
}

// FileName is the name the tests write: the credentials file's.
const FileName = ".credentials.json"

func realDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func writeFile(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
