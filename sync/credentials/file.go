package credentials

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
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
//
// Claude and our own writers replace the file by rename, and users remove it;
// when the name vanishes between the look at it and the open, the look is
// taken again (a few times) instead of reporting the removed name as
// unreadable.
func Read(path string) (*Local, error) {
	for attempt := 0; ; attempt++ {
		l, err := readOnce(path)
		if errors.Is(err, errVanished) {
			if attempt < 4 {
				continue
			}
			return &Local{Path: path, Target: path, State: Missing}, nil
		}
		return l, err
	}
}

// errVanished: the name existed at the Lstat and not at the open.
var errVanished = errors.New("credentials file vanished while being read")

func readOnce(path string) (*Local, error) {
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
		if fi, err = os.Stat(target); errors.Is(err, fs.ErrNotExist) {
			return nil, errVanished
		} else if err != nil {
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
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errVanished
	}
	if err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	}
	defer f.Close()
	// What was opened may not be what was looked at: re-check the open file.
	if ofi, err := f.Stat(); err != nil {
		return nil, fmt.Errorf("credentials file: %w", err)
	} else if !ofi.Mode().IsRegular() {
		return nil, fmt.Errorf("credentials file %s is not a regular file", path)
	}
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

// FileMode is the mode every write of the credentials file gets, whatever mode
// the file had: it holds a rotating login (and in setup-token mode a one-year
// token), and a clobbered file may have been rewritten with a loose umask.
const FileMode fs.FileMode = 0o600

// TightenMode sets a group- or world-accessible file at l.Target to 0600, on
// the open file (never through a link, never blocking on a FIFO), if it is
// still a regular file owned by this uid. It returns the mode it had when it
// changed it (0 when nothing was to do).
func TightenMode(l *Local) (fs.FileMode, error) {
	if l == nil || l.State == Missing || l.Mode&0o077 == 0 || l.Target == "" {
		return 0, nil
	}
	fd, err := unix.Open(l.Target, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("tighten the mode of %s: %w", l.Target, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, fmt.Errorf("tighten the mode of %s: %w", l.Target, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() {
		return 0, fmt.Errorf("tighten the mode of %s: not a regular file of this user", l.Target)
	}
	old := fs.FileMode(st.Mode & 0o777)
	if old&0o077 == 0 {
		return 0, nil
	}
	if err := unix.Fchmod(fd, uint32(FileMode)); err != nil {
		return 0, fmt.Errorf("tighten the mode of %s: %w", l.Target, err)
	}
	return old, nil
}
