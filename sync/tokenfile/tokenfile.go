// Package tokenfile reads a Vault token kept in a private file: the user's
// scoped token (the agent), an admin's or reader's token (fleet, provision).
// Every reader of such a file goes through Read, so they all refuse the same
// things in the same words.
package tokenfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// MaxSize is the largest file taken for a token (Vault's are under 200 bytes).
const MaxSize = 4096

var (
	// ErrEmpty: the file holds nothing but blanks.
	ErrEmpty = errors.New("empty token file")
	// ErrUnsafe: the file is not a private regular file of the expected
	// owner (a symlink, a FIFO, a directory, readable by group or others,
	// someone else's).
	ErrUnsafe = errors.New("token file not private")
	// ErrExposed (an ErrUnsafe): the file is the caller's own regular file
	// but group or others may read it. Read returns the token beside it, for
	// the one caller that may still use it to report (never to work with).
	ErrExposed = fmt.Errorf("%w: readable by others", ErrUnsafe)
	// ErrNotToken: the file holds more than one token's worth (too large, more
	// than one line or word).
	ErrNotToken = errors.New("token file does not hold one token")
)

// Read returns the token in path, which must be a regular file owned by uid,
// with no permission for group or others, holding exactly one line (blanks
// around it are ignored) of at most MaxSize bytes. A symlink is refused, not
// followed, and a FIFO cannot block the caller (root reading a file in a
// directory a user controls must not be led elsewhere or held up). A missing
// file's error matches fs.ErrNotExist. Errors name the path and never hold
// the file's content. Any error refuses the file; only with ErrExposed is the
// token also returned (see there).
func Read(path string, uid int) (credentials.Secret, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return "", refuse(fs.ErrNotExist, "%s does not exist", path)
	case errors.Is(err, unix.ELOOP):
		return "", refuse(ErrUnsafe, "%s is a symlink; name the file itself", path)
	case err != nil:
		return "", fmt.Errorf("%s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	// The mode before the owner: a file others could read is exposed
	// whoever owns it, and that is what the reader must hear first.
	var exposed error
	perm := st.Mode & 0o777
	if perm&0o077 != 0 {
		exposed = &refusal{kind: ErrExposed, mode: fs.FileMode(perm), msg: fmt.Sprintf("%s has mode %04o, readable by others; it must be readable by its owner only: run `chmod 600 %s` (and consider the token exposed: ask for a new one)", path, perm, path)}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return "", refuse(ErrUnsafe, "%s is not a regular file", path)
	case exposed != nil && int(st.Uid) != uid:
		return "", exposed
	case int(st.Uid) != uid:
		return "", refuse(ErrUnsafe, "%s is owned by uid %d, not by you (uid %d)", path, st.Uid, uid)
	}
	buf, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, unwrapPath(err))
	}
	if len(buf) > MaxSize {
		return "", refuse(ErrNotToken, "%s is too large to be a Vault token", path)
	}
	tok := strings.TrimSpace(string(buf))
	if tok == "" {
		return "", refuse(ErrEmpty, "%s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n\v\f") {
		return "", refuse(ErrNotToken, "%s holds more than one line; it must hold only the token", path)
	}
	if exposed != nil {
		// The caller's own file with one token in it, open to others:
		// refused, with the token for a report (see ErrExposed).
		return credentials.Secret(tok), exposed
	}
	return credentials.Secret(tok), nil
}

// refusal is a refused file: its message says why in its own words, and
// errors.Is finds its kind.
type refusal struct {
	kind error
	mode fs.FileMode // the file's permission bits (ErrExposed)
	msg  string
}

// ExposedMode is the permission bits of the file an ErrExposed error refused
// (0 for any other error).
func ExposedMode(err error) fs.FileMode {
	var r *refusal
	if errors.As(err, &r) && errors.Is(r.kind, ErrExposed) {
		return r.mode
	}
	return 0
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// unwrapPath drops the *PathError around a read error (its path is said
// already).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
