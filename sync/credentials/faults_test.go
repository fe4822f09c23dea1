package credentials

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
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

func TestCopyAtomicStreams(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big")
	data := bytes.Repeat([]byte("0123456789abcdef"), (MaxFileSize/16)*2) // twice what Read takes
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "state", "previous-credentials.json")
	os.MkdirAll(filepath.Dir(dst), 0o700)
	if err := CopyAtomic(src, dst, 0o600); err != nil {
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
