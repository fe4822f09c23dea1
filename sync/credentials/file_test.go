package credentials

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func writeFile(t *testing.T, path, data string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	usable := fileJSON(loginJSON(testAccess, testRefresh, testExpires))
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) string // returns the path to read
		want    State
		symlink bool
		target  string // relative to dir; "" = the path itself
		mode    fs.FileMode
	}{
		{name: "missing", want: Missing, setup: func(t *testing.T, dir string) string {
			return filepath.Join(dir, FileName)
		}},
		{name: "usable", want: Usable, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, usable, 0o600)
			return p
		}},
		{name: "usable keeps mode 0640", want: Usable, mode: 0o640, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, usable, 0o640)
			return p
		}},
		{name: "no login", want: NoLogin, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, `{"mcpOAuth":{"a":{"accessToken":"x"}}}`, 0o600)
			return p
		}},
		{name: "empty refresh token", want: Clobbered, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, fileJSON(loginJSON(testAccess, "", testExpires)), 0o600)
			return p
		}},
		{name: "empty file", want: Clobbered, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, "", 0o600)
			return p
		}},
		{name: "not JSON", want: Clobbered, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			writeFile(t, p, "\x00\x00\x00", 0o600)
			return p
		}},
		{name: "bigger than MaxFileSize", want: Clobbered, mode: 0o600, setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			// A valid, usable object padded past the limit: the size alone decides.
			pad := strings.Repeat(" ", MaxFileSize)
			writeFile(t, p, `{"claudeAiOauth":`+loginJSON(testAccess, testRefresh, testExpires)+pad+`}`, 0o600)
			return p
		}},
		{name: "symlink to usable file", want: Usable, symlink: true, target: "real/creds.json", mode: 0o600, setup: func(t *testing.T, dir string) string {
			os.Mkdir(filepath.Join(dir, "real"), 0o700)
			writeFile(t, filepath.Join(dir, "real", "creds.json"), usable, 0o600)
			p := filepath.Join(dir, FileName)
			if err := os.Symlink("real/creds.json", p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{name: "dangling symlink", want: Missing, symlink: true, target: "gone/creds.json", setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, FileName)
			if err := os.Symlink("gone/creds.json", p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := realDir(t)
			p := tt.setup(t, dir)
			l, err := Read(p)
			if err != nil {
				t.Fatalf("Read(%q) = %v; want no error", p, err)
			}
			if l.State != tt.want {
				t.Errorf("Read(%q).State = %v (%v); want %v", p, l.State, l.Problem, tt.want)
			}
			if (l.Problem == nil) != (tt.want == Usable || tt.want == Missing) {
				t.Errorf("Read(%q).Problem = %v; want a problem only when not usable", p, l.Problem)
			}
			if l.Symlink != tt.symlink {
				t.Errorf("Read(%q).Symlink = %v; want %v", p, l.Symlink, tt.symlink)
			}
			wantTarget := p
			if tt.target != "" {
				wantTarget = filepath.Join(dir, tt.target)
			}
			if l.Target != wantTarget || l.Path != p {
				t.Errorf("Read(%q) Path, Target = %q, %q; want %q, %q", p, l.Path, l.Target, p, wantTarget)
			}
			if l.Mode != tt.mode {
				t.Errorf("Read(%q).Mode = %v; want %v", p, l.Mode, tt.mode)
			}
			if tt.want == Usable && (l.OAuth == nil || l.OAuth.RefreshToken().Reveal() != testRefresh) {
				t.Errorf("Read(%q).OAuth does not hold the file's login", p)
			}
			if tt.want == Usable && string(l.Raw) != usable {
				t.Errorf("Read(%q).Raw = %d bytes; want the file's bytes", p, len(l.Raw))
			}
			if tt.want == Clobbered && l.Problem != nil && strings.Contains(l.Problem.Error(), "sk-ant-") {
				t.Errorf("Read(%q).Problem = %q; contains a token", p, l.Problem)
			}
		})
	}
}

func TestReadNotRegular(t *testing.T) {
	dir := realDir(t)
	p := filepath.Join(dir, FileName)
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if l, err := Read(p); err == nil {
		t.Errorf("Read(directory) = %v, nil; want an error", l.State)
	}
}

func TestBase(t *testing.T) {
	if got := (&Local{}).Base().Keys(); len(got) != 0 {
		t.Errorf("Base() of an unparsed file has keys %v; want none", got)
	}
	f, _ := Parse([]byte(`{"mcpOAuth":{}}`))
	if got := (&Local{File: f}).Base().Keys(); strings.Join(got, ",") != "mcpOAuth" {
		t.Errorf("Base() keys = %v; want [mcpOAuth]", got)
	}
}

// A loose file is set to 0600 on the open file; a tight one, a missing one
// and a link are left alone.
func TestTightenMode(t *testing.T) {
	dir := realDir(t)
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, []byte("{}"), 0o600)
	os.Chmod(loose, 0o644)
	old, err := TightenMode(&Local{Target: loose, Mode: 0o644, State: Clobbered})
	if err != nil || old != 0o644 {
		t.Fatalf("TightenMode(0644) = %v, %v; want 0644, nil", old, err)
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != FileMode {
		t.Errorf("mode after = %v; want %v", fi.Mode().Perm(), FileMode)
	}
	if old, err := TightenMode(&Local{Target: loose, Mode: 0o600, State: Usable}); old != 0 || err != nil {
		t.Errorf("TightenMode(0600) = %v, %v; want nothing to do", old, err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(loose, link)
	os.Chmod(loose, 0o644)
	if _, err := TightenMode(&Local{Target: link, Mode: 0o644, State: Usable}); err == nil {
		t.Errorf("TightenMode through a symlink succeeded; want a refusal")
	}
	if fi, _ := os.Stat(loose); fi.Mode().Perm() != 0o644 {
		t.Errorf("the link's target was changed through it")
	}
	if old, err := TightenMode(&Local{Target: filepath.Join(dir, "none"), State: Missing, Mode: 0o644}); old != 0 || err != nil {
		t.Errorf("TightenMode(missing) = %v, %v", old, err)
	}
}

// realDir is a temp dir with symlinks resolved, so paths compare exactly.
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

func TestResolveConfigDir(t *testing.T) {
	base := realDir(t)
	real := filepath.Join(base, "real-claude")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(home, ".claude")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, filepath.Join(base, "alias")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, home, want string
		wantErr               bool
	}{
		{name: "home symlink resolved", home: home, want: real},
		{name: "CLAUDE_CONFIG_DIR wins", env: filepath.Join(base, "alias", "other"), home: home, want: filepath.Join(base, "other")},
		{name: "CLAUDE_CONFIG_DIR through a symlink", env: filepath.Join(base, "alias", "real-claude"), home: home, want: real},
		{name: "not existing yet", home: filepath.Join(base, "alias", "newhome"), want: filepath.Join(base, "newhome", ".claude")},
		{name: "relative CLAUDE_CONFIG_DIR made absolute", env: "rel-dir", home: home, want: "ABS:rel-dir"},
		{name: "nothing set", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveConfigDir(tt.env, tt.home)
			if tt.wantErr {
				if err == nil {
					t.Errorf("ResolveConfigDir(%q, %q) = %q, nil; want an error", tt.env, tt.home, got)
				}
				return
			}
			want := tt.want
			if rel, ok := strings.CutPrefix(want, "ABS:"); ok {
				wd, _ := os.Getwd()
				wd, _ = filepath.EvalSymlinks(wd)
				want = filepath.Join(wd, rel)
			}
			if err != nil || got != want {
				t.Errorf("ResolveConfigDir(%q, %q) = %q, %v; want %q", tt.env, tt.home, got, err, want)
			}
		})
	}
}

func TestLocalPrintsNoToken(t *testing.T) {
	dir := realDir(t)
	p := filepath.Join(dir, FileName)
	writeFile(t, p, fileJSON(loginJSON(testAccess, testRefresh, testExpires)), 0o600)
	l, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q"} {
		for _, v := range []any{l, *l} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(got, "sk-ant-") || strings.Contains(got, "115 107 45 97 110 116") {
				t.Errorf("fmt.Sprintf(%q, %T) = %q; contains a token", verb, v, got)
			}
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("read", "local", l, "value", *l)
	if strings.Contains(buf.String(), "sk-ant-") || strings.Contains(buf.String(), "115 107 45 97 110 116") {
		t.Errorf("slog of a Local = %q; contains a token", buf.String())
	}
}

// slog must not call a method through a nil pointer (it would log a panic stack).
func TestNilValuesLogCleanly(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("nil", "oauth", (*OAuth)(nil), "file", (*File)(nil), "local", (*Local)(nil))
	if strings.Contains(buf.String(), "panic") {
		t.Errorf("slog of nil values = %q; want no panic", buf.String())
	}
	if got := fmt.Sprintf("%v %v", (*OAuth)(nil), (*Local)(nil)); strings.Contains(got, "PANIC") {
		t.Errorf("fmt of nil values = %q; want no panic", got)
	}
}

// A name that vanishes or changes type between Read's look and its open is
// read again, not reported as unreadable: a real writer races Read on a real
// file, removing it, writing it back and, in the second half, swapping a
// directory in. Read may only ever answer Usable, Missing, or (for the
// directory) "is not a regular file".
func TestReadRacingRemoval(t *testing.T) {
	dir := realDir(t)
	p := filepath.Join(dir, FileName)
	usable := []byte(fileJSON(loginJSON(testAccess, testRefresh, testExpires)))
	for _, withDir := range []bool{false, true} {
		stop := make(chan struct{})
		done := make(chan struct{})
		first := make(chan struct{})
		var writes atomic.Int64
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				os.Remove(p)
				if withDir && i%2 == 1 {
					os.Mkdir(p, 0o700)
					os.Remove(p)
				}
				// Whole files only (by rename): a half-written file is
				// rightly clobbered, and not what this test is about.
				os.WriteFile(p+".new", usable, 0o600)
				os.Rename(p+".new", p)
				if writes.Add(1) == 1 {
					close(first)
				}
			}
		}()
		// Reads race a writer that is really running: on a busy machine the
		// reader's loop could otherwise finish before the writer is scheduled.
		<-first
		seen := map[State]int{}
		dirs := 0
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; (i < 20000 || writes.Load() < 2000) && time.Now().Before(deadline); i++ {
			l, err := Read(p)
			if err != nil {
				if withDir && strings.Contains(err.Error(), "is not a regular file") {
					dirs++
					continue
				}
				t.Errorf("Read while the file is replaced: %v", err)
				break
			}
			seen[l.State]++
			if l.State != Usable && l.State != Missing {
				t.Errorf("Read while the file is replaced = %v (problem %v); want usable or missing", l.State, l.Problem)
				break
			}
		}
		close(stop)
		<-done
		if seen[Usable] == 0 {
			t.Errorf("never read the file as usable in 20000 reads (%v)", seen)
		}
		t.Logf("with directory swaps %v: %v, %d directory errors", withDir, seen, dirs)
	}
}
