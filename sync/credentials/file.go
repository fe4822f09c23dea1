package credentials

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
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

// WriteAtomic writes data to path the way a crash cannot tear: a temp file in the
// same directory (O_EXCL, the given mode), fsync, rename over the target, fsync of
// the directory. If path is a symlink its target is written and the link kept;
// the returned string is that target ("" when path is not a link).
func WriteAtomic(path string, data []byte, mode fs.FileMode) (string, error) {
	return writeAtomic(path, bytes.NewReader(data), mode)
}

// WriteVisibleFirst writes data to path like WriteAtomic but renames the temp
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

// CopyAtomic copies the file src to dst the way WriteAtomic writes, streaming:
// for a file too large to hold in memory (an oversized credentials file that
// is about to be replaced, and must not be lost).
func CopyAtomic(src, dst string, mode fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = writeAtomic(dst, f, mode)
	return err
}

func writeAtomic(path string, src io.Reader, mode fs.FileMode) (string, error) {
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
	if err := f.Sync(); err != nil {
		return linked, fmt.Errorf("fsync the temp file for %s: %w", target, pathCause(err))
	}
	if err := f.Close(); err != nil {
		return linked, fmt.Errorf("close the temp file for %s: %w", target, pathCause(err))
	}
	if err := os.Rename(tmp, target); err != nil {
		return linked, fmt.Errorf("rename into place %s: %w", target, pathCause(err))
	}
	ok = true
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

// tempInfix names WriteAtomic's temp files: "."+name+".tmp-"+12 hex digits.
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

// SweepTemps removes WriteAtomic temp files in dir older than age: a writer
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
