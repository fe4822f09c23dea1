package provision

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// clearSquattedMetrics removes what another user put under this user's
// metrics file name in a shared metrics dir (a FIFO, a link, a forged file):
// the user's agent refuses to write over it (and says so), but the node
// exporter would go on reading it. Only that one name is touched, through the
// directory's descriptor, never following a link. It returns what it found
// ("" when the name is free or the user's own regular file).
func clearSquattedMetrics(dir string, acct Account, apply bool) (string, error) {
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open metrics dir %s: %w", dir, err)
	}
	defer unix.Close(dfd)
	name := "claude_auth_sync_" + acct.Name + ".prom"
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("stat %s: %w", filepath.Join(dir, name), err)
	}
	kind := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if int(st.Uid) == acct.UID {
			return "", nil
		}
		kind = "file"
	case unix.S_IFIFO:
		kind = "FIFO"
	case unix.S_IFLNK:
		kind = "symlink"
	case unix.S_IFDIR:
		kind = "directory"
	default:
		kind = "special file"
	}
	found := fmt.Sprintf("%s of uid %d in place of %s's metrics file %s", kind, st.Uid, acct.Name, filepath.Join(dir, name))
	if !apply {
		return found, nil
	}
	flags := 0
	if kind == "directory" {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(dfd, name, flags); err != nil {
		return found, fmt.Errorf("remove the %s: %w", found, err)
	}
	return found, nil
}
