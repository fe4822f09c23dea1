package credentials

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// FileName is the credentials file's name inside Claude's config directory.
const FileName = ".credentials.json"

// MaxFileSize bounds what we read: Claude's file is a few KiB; a huge file is
// someone else's mistake and must not take the agent's memory with it.
const MaxFileSize = 4 << 20

// ResolveConfigDir returns Claude's config directory with symlinks resolved:
// $CLAUDE_CONFIG_DIR when set, else ~/.claude. A directory that does not exist
// yet resolves as far as it can.
func ResolveConfigDir(claudeConfigDir, home string) (string, error) {
	dir := claudeConfigDir
	if dir == "" {
		if home == "" {
			return "", errors.New("neither CLAUDE_CONFIG_DIR nor HOME is set")
		}
		dir = filepath.Join(home, ".claude")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return realpath(abs), nil
}

// realpath resolves symlinks in the longest existing prefix of p.
func realpath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	parent := filepath.Dir(p)
	if parent == p {
		return p
	}
	return filepath.Join(realpath(parent), filepath.Base(p))
}

// State is what the local file says about the login.
type State int

const (
	// Missing: no credentials file (a logout, or a new home).
	Missing State = iota
	// NoLogin: the file exists but has no claudeAiOauth key.
	NoLogin
	// Clobbered: the file or its login is broken (bad JSON, empty refresh token…).
	Clobbered
	// Usable: a login with both tokens and an expiry.
	Usable
)

func (s State) String() string {
	switch s {
	case Missing:
		return "missing"
	case NoLogin:
		return "no-login"
	case Clobbered:
		return "clobbered"
	case Usable:
		return "usable"
	}
	return "unknown"
}

// Local is one read of the credentials file.
type Local struct {
	Path    string // the path as configured
	Target  string // where the bytes live (differs when Path is a symlink)
	Symlink bool
	Mode    fs.FileMode
	State   State
	Problem error  // why it is not Usable (no secret inside)
	File    *File  // nil when Missing or not JSON
	OAuth   *OAuth // nil unless the file has a claudeAiOauth object
	Raw     []byte // the bytes read (secret); kept so a broken file can be preserved
}

// Local holds the file's bytes (Raw), so it prints without them: path and state.
// (Value receivers cover a dereferenced Local; LogValue is nil-safe for slog.)
func (l Local) String() string             { return "credentials file " + l.Path + " (" + l.State.String() + ")" }
func (l Local) GoString() string           { return l.String() }
func (l Local) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(l.String())) }
func (l *Local) LogValue() slog.Value {
	if l == nil {
		return slog.StringValue("<nil>")
	}
	return slog.StringValue(l.String())
}

// Read reads and classifies the credentials file at path.
func Read(path string) (*Local, error) {
	l := &Local{Path: path, Target: path}
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		l.State = Missing
		return l, nil
	}
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		l.Symlink = true
		target, err := filepath.EvalSymlinks(path)
		if errors.Is(err, fs.ErrNotExist) {
			l.State = Missing
			if t, rerr := os.Readlink(path); rerr == nil {
				if !filepath.IsAbs(t) {
					t = filepath.Join(filepath.Dir(path), t)
				}
				l.Target = t
			}
			return l, nil
		}
		if err != nil {
			return nil, fmt.Errorf("credentials file symlink: %w", err)
		}
		l.Target = target
		if fi, err = os.Stat(target); err != nil {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("credentials file %s is not a regular file", path)
	}
	l.Mode = fi.Mode().Perm()
	if fi.Size() > MaxFileSize {
		l.State = Clobbered
		l.Problem = fmt.Errorf("file is %d bytes, larger than the %d bytes a credentials file can be", fi.Size(), MaxFileSize)
		return l, nil
	}
	f, err := os.Open(l.Target)
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	if len(data) > MaxFileSize {
		l.State = Clobbered
		l.Problem = fmt.Errorf("file is larger than the %d bytes a credentials file can be", MaxFileSize)
		return l, nil
	}
	l.Raw = data
	l.classify()
	return l, nil
}

func (l *Local) classify() {
	file, err := Parse(l.Raw)
	if err != nil {
		l.State, l.Problem = Clobbered, fmt.Errorf("not a JSON object: %w", err)
		return
	}
	l.File = file
	oauth, err := file.OAuth()
	if errors.Is(err, ErrNoLogin) {
		l.State, l.Problem = NoLogin, err
		return
	}
	if err != nil {
		l.State, l.Problem = Clobbered, err
		return
	}
	l.OAuth = oauth
	if err := oauth.Usable(); err != nil {
		l.State, l.Problem = Clobbered, fmt.Errorf("claudeAiOauth: %w", err)
		return
	}
	l.State = Usable
}

// Base is the file to merge a new login into: the parsed file, or an empty one
// when there is no parseable file.
func (l *Local) Base() *File {
	if l.File != nil {
		return l.File
	}
	return Empty()
}

// WriteAtomic writes data to path the way a crash cannot tear: a temp file in the
// same directory (O_EXCL, the given mode), fsync, rename over the target, fsync of
// the directory. If path is a symlink its target is written and the link kept;
// the returned string is that target ("" when path is not a link).
func WriteAtomic(path string, data []byte, mode fs.FileMode) (string, error) {
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
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	tmp := filepath.Join(dir, "."+filepath.Base(target)+".tmp-"+hex.EncodeToString(suffix[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
	if err != nil {
		return linked, fmt.Errorf("create temp file: %w", err)
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
		return linked, fmt.Errorf("chmod temp file: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return linked, fmt.Errorf("write temp file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return linked, fmt.Errorf("fsync temp file: %w", err)
	}
	if err := f.Close(); err != nil {
		return linked, fmt.Errorf("close temp file: %w", err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return linked, fmt.Errorf("rename into place: %w", err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return linked, fmt.Errorf("fsync directory: %w", err)
		}
	}
	return linked, nil
}

// ModeFor is the mode to write a credentials file with: the existing file's mode
// when there is one, else 0600.
func ModeFor(l *Local) fs.FileMode {
	if l != nil && l.State != Missing && l.Mode != 0 {
		return l.Mode
	}
	return 0o600
}
