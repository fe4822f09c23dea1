package provision

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Root writing into a user's home is the classic symlink attack: the user
// points ~/.config (or the token file) at /etc/shadow and waits for a chown. So
// everything here works on file descriptors: each component is opened with
// O_NOFOLLOW relative to its parent's descriptor, its owner is checked on the
// open descriptor, new files are created with O_EXCL under a temporary name and
// renamed into place, and owner and mode are only ever set with fchown/fchmod.
// No path is ever chowned or chmodded.

// ErrUnsafe marks a user tree provision refuses to write into.
var ErrUnsafe = errors.New("refusing to write into the user's home")

// Account is the OS user provision writes for (from the user database).
type Account struct {
	Name string
	UID  int
	GID  int
	Home string
}

// userTree is the path from the user's home to the token file.
type userTree struct {
	acct Account
	dirs []string // components below the home, e.g. [".config", "claude-auth-sync"]
	file string   // the token file's name in the last dir
}

// newUserTree splits tokenFile into components below home; the token file must
// live inside the home (that is the only tree we are sure the user owns).
func newUserTree(acct Account, tokenFile string) (*userTree, error) {
	home := filepath.Clean(acct.Home)
	if !filepath.IsAbs(home) || home == "/" {
		return nil, fmt.Errorf("%w: home directory %q is not a usable absolute path", ErrUnsafe, acct.Home)
	}
	rel, err := filepath.Rel(home, filepath.Clean(tokenFile))
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return nil, fmt.Errorf("%w: the token file %s is not inside the home %s", ErrUnsafe, tokenFile, home)
	}
	parts := strings.Split(rel, string(filepath.Separator))
	if len(parts) < 2 {
		// Its dir is made 0700 and the user's: never the home itself.
		return nil, fmt.Errorf("%w: the token file %s must be in a directory below the home, not in it", ErrUnsafe, tokenFile)
	}
	return &userTree{acct: acct, dirs: parts[:len(parts)-1], file: parts[len(parts)-1]}, nil
}

func (t *userTree) path(n int) string {
	return filepath.Join(append([]string{t.acct.Home}, t.dirs[:n]...)...)
}

func (t *userTree) tokenPath() string {
	return filepath.Join(t.path(len(t.dirs)), t.file)
}

// openHome opens the home directory. Its own path comes from the user database
// (the admin's), so it may be reached through symlinks; the directory itself
// must belong to the user.
func (t *userTree) openHome() (int, error) {
	fd, err := unix.Open(t.acct.Home, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open home %s: %w", t.acct.Home, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat home %s: %w", t.acct.Home, err)
	}
	if int(st.Uid) != t.acct.UID {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: home %s is owned by uid %d, not by %s (uid %d)", ErrUnsafe, t.acct.Home, st.Uid, t.acct.Name, t.acct.UID)
	}
	return fd, nil
}

// describe says what the name at dirfd is, for a refusal.
func describe(dirfd int, name string) string {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return "not usable (" + err.Error() + ")"
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFREG:
		return "a regular file"
	}
	return "not a regular file or directory"
}

// treeStatus is what a read-only walk found.
type treeStatus struct {
	missing      []string // dirs that do not exist yet (full paths)
	dirMode      uint32   // permission bits of the token's dir, if it exists
	tokenExists  bool
	token        credentials.Secret
	tokenMode    uint32
	tokenFixMode bool // exists, ours to fix, but not 0600
}

// exposed: the token file as found was open to users other than its owner
// (any group or other bit), the agent's rule (store.ReadTokenFile). The dirs
// above it do not make it private: they may have been open before, and a
// group may hold others. Only a new token mends it.
func (st *treeStatus) exposed() bool {
	return st.tokenExists && st.tokenMode&0o077 != 0
}

// walk opens each dir below the home without following symlinks and checks it
// belongs to the user. With create, missing dirs are made 0700 and given to the
// user (on the descriptor). It returns the last dir's descriptor, or -1 when a
// dir is missing and create is false.
func (t *userTree) walk(create bool, st *treeStatus) (int, error) {
	fd, err := t.openHome()
	if err != nil {
		return -1, err
	}
	for i, name := range t.dirs {
		next, err := t.openDir(fd, name, i == len(t.dirs)-1, create, st, t.path(i+1))
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		if next < 0 {
			// Missing and not creating: everything below is missing too.
			for j := i + 1; j < len(t.dirs); j++ {
				st.missing = append(st.missing, t.path(j+1))
			}
			return -1, nil
		}
		fd = next
	}
	return fd, nil
}

// openDir opens (or creates) one directory component below parent.
func (t *userTree) openDir(parent int, name string, last, create bool, st *treeStatus, full string) (int, error) {
	const flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	created := false
	fd, err := unix.Openat(parent, name, flags, 0)
	if errors.Is(err, unix.ENOENT) {
		if !create {
			st.missing = append(st.missing, full)
			return -1, nil
		}
		if err := unix.Mkdirat(parent, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, fmt.Errorf("create %s: %w", full, err)
		} else if err == nil {
			created = true
		}
		fd, err = unix.Openat(parent, name, flags, 0)
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return -1, fmt.Errorf("%w: %s is %s, not a directory", ErrUnsafe, full, describe(parent, name))
		}
		return -1, fmt.Errorf("open %s: %w", full, err)
	}
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("stat %s: %w", full, err)
	}
	switch {
	case int(s.Uid) == t.acct.UID:
	case created && s.Uid == 0 && s.Nlink == 2:
		// The empty dir we just made: give it to the user.
		if err := unix.Fchown(fd, t.acct.UID, t.acct.GID); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("chown %s: %w", full, err)
		}
		if err := unix.Fchmod(fd, 0o700); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("chmod %s: %w", full, err)
		}
		s.Mode = s.Mode&^0o7777 | 0o700
	default:
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is owned by uid %d, not by %s (uid %d)", ErrUnsafe, full, s.Uid, t.acct.Name, t.acct.UID)
	}
	if last {
		st.dirMode = s.Mode & 0o7777
		if create && st.dirMode != 0o700 {
			// Our own dir: only its owner and root have any business in it.
			if err := unix.Fchmod(fd, 0o700); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("chmod %s: %w", full, err)
			}
		}
	}
	return fd, nil
}

// readToken reads the token file in dirfd, refusing anything that is not a
// plain file of the user's with one link (a hard link could be /etc/shadow).
func (t *userTree) readToken(dirfd int, st *treeStatus) error {
	fd, err := unix.Openat(dirfd, t.file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("%w: %s is a symlink", ErrUnsafe, t.tokenPath())
		}
		return fmt.Errorf("open %s: %w", t.tokenPath(), err)
	}
	defer unix.Close(fd)
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return fmt.Errorf("stat %s: %w", t.tokenPath(), err)
	}
	switch {
	case s.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%w: %s is not a regular file", ErrUnsafe, t.tokenPath())
	case int(s.Uid) != t.acct.UID:
		return fmt.Errorf("%w: %s is owned by uid %d, not by %s (uid %d); remove it and run provision again", ErrUnsafe, t.tokenPath(), s.Uid, t.acct.Name, t.acct.UID)
	case s.Nlink != 1:
		return fmt.Errorf("%w: %s has %d hard links; remove it and run provision again", ErrUnsafe, t.tokenPath(), s.Nlink)
	}
	st.tokenExists = true
	st.tokenMode = s.Mode & 0o7777
	st.tokenFixMode = st.tokenMode != 0o600
	buf := make([]byte, 4097)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return fmt.Errorf("read %s: %w", t.tokenPath(), err)
	}
	if n > 4096 {
		return nil // not a token: treated as unusable, replaced
	}
	tok := strings.TrimSpace(string(buf[:n]))
	if !strings.ContainsAny(tok, " \t\r\n") {
		st.token = credentials.Secret(tok)
	}
	return nil
}

// fixTokenMode sets 0600 on the existing token file, on its descriptor, after
// checking again that it is the user's single-link regular file.
func (t *userTree) fixTokenMode(dirfd int) error {
	fd, err := unix.Openat(dirfd, t.file, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", t.tokenPath(), err)
	}
	defer unix.Close(fd)
	var s unix.Stat_t
	if err := unix.Fstat(fd, &s); err != nil {
		return err
	}
	if s.Mode&unix.S_IFMT != unix.S_IFREG || int(s.Uid) != t.acct.UID || s.Nlink != 1 {
		return fmt.Errorf("%w: %s changed while provision looked at it", ErrUnsafe, t.tokenPath())
	}
	return unix.Fchmod(fd, 0o600)
}

// writeToken puts tok into the token file: a new file made with O_EXCL under a
// temporary name in the same dir, given to the user and made 0600 on its
// descriptor, synced, then renamed over the old name. Whatever the old name
// was (a link planted a moment ago included) is replaced, never written through.
func (t *userTree) writeToken(dirfd int, tok credentials.Secret) error {
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := "." + t.file + ".provision-" + hex.EncodeToString(rnd[:])
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create a temporary file next to %s: %w", t.tokenPath(), err)
	}
	ok := false
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if !ok {
			_ = unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	if err := unix.Fchown(fd, t.acct.UID, t.acct.GID); err != nil {
		return fmt.Errorf("chown the new token file: %w", err)
	}
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return fmt.Errorf("chmod the new token file: %w", err)
	}
	data := []byte(tok.Reveal() + "\n")
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return fmt.Errorf("write the new token file: %w", err)
		}
		data = data[n:]
	}
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("sync the new token file: %w", err)
	}
	unix.Close(fd)
	fd = -1
	if err := unix.Renameat(dirfd, tmp, dirfd, t.file); err != nil {
		return fmt.Errorf("rename the new token file into place: %w", err)
	}
	ok = true
	_ = unix.Fsync(dirfd)
	return nil
}
