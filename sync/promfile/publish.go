package promfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

// FileName is an agent's file in its own directory, and the published file
// in the node exporter's textfile directory.
const FileName = "claude_auth_sync.prom"

// UserDir is the directory of user's agent under the metrics dir: the user's
// own (provision makes it, owned by the user, 0700), under a parent only root
// may write into, so nobody can write or replace another user's file.
func UserDir(metricsDir, userName string) string { return filepath.Join(metricsDir, userName) }

// UserFile is where user's agent writes its metrics.
func UserFile(metricsDir, userName string) string {
	return filepath.Join(UserDir(metricsDir, userName), FileName)
}

// Publisher merges the users' files under Source into Target/FileName.
type Publisher struct {
	Source string    // the metrics dir: one directory per user
	Target string    // the node exporter's textfile directory
	Log    io.Writer // WARN lines, "user=<u> WARN …"; nil = none

	// LookupUID resolves a user name to its uid (default: NSS through
	// getent, so directory accounts count, then /etc/passwd); answers are
	// kept for a minute.
	LookupUID func(name string) (int, error)

	mu       sync.Mutex
	reported map[string]string // what was last said for each user (or "" for the dir)
	uids     map[string]cachedUID
}

type cachedUID struct {
	uid int
	err error
	at  time.Time
}

// uidOf is name's uid, from the cache when it is under a minute old.
func (p *Publisher) uidOf(name string) (int, error) {
	p.mu.Lock()
	c, ok := p.uids[name]
	p.mu.Unlock()
	if ok && time.Since(c.at) < time.Minute {
		return c.uid, c.err
	}
	lookup := p.LookupUID
	if lookup == nil {
		lookup = lookupUID
	}
	uid, err := lookup(name)
	p.mu.Lock()
	if p.uids == nil {
		p.uids = map[string]cachedUID{}
	}
	p.uids[name] = cachedUID{uid, err, time.Now()}
	p.mu.Unlock()
	return uid, err
}

// lookupUID asks NSS (a static binary's os/user reads only /etc/passwd,
// which lacks LDAP and SSSD accounts), and os/user where getent cannot run.
func lookupUID(name string) (int, error) {
	a, err := config.LookupNSS(name)
	if err == nil {
		return a.UID, nil
	}
	var ee *exec.Error
	if !errors.As(err, &ee) {
		return 0, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(u.Uid)
}

// UserResult is what one user's directory gave.
type UserResult struct {
	User   string
	Values map[string]float64 // by Family.Key; nil when refused or absent
	MTime  time.Time          // of the file; zero when none was read
	Err    error              // why the file was refused
}

// ErrSharedSource: the metrics dir can be written by users, so what sits in
// it proves nothing about who wrote it.
var ErrSharedSource = errors.New("metrics dir is not root's alone")

// Publish reads every user's file and writes the published file: atomically
// (a temp file not ending in .prom, then a rename), so the node exporter never
// reads half of one. A user's refused file is left out of it, shows as
// claude_auth_sync_metrics_publish_error{user=…} 1 and is said once in a WARN
// line; it never stops the others' series.
func (p *Publisher) Publish() ([]UserResult, error) {
	users, err := p.read()
	if err != nil {
		p.report("", err)
		return nil, err
	}
	p.report("", nil)
	for _, u := range users {
		p.report(u.User, u.Err)
	}
	if err := writeAtomic(p.Target, Render(users)); err != nil {
		p.report("", err)
		return users, err
	}
	return users, nil
}

// report writes a WARN line when what there is to say for key changed.
func (p *Publisher) report(key string, err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	p.mu.Lock()
	if p.reported == nil {
		p.reported = map[string]string{}
	}
	same := p.reported[key] == msg
	p.reported[key] = msg
	p.mu.Unlock()
	if same || p.Log == nil {
		return
	}
	prefix := ""
	if os.Getenv("JOURNAL_STREAM") != "" {
		prefix = "<4>" // journald's warning priority
	}
	switch {
	case key == "" && msg != "":
		fmt.Fprintf(p.Log, "%sWARN metrics not published: %s\n", prefix, msg)
	case key == "":
		fmt.Fprintf(p.Log, "metrics published again from %s\n", p.Source)
	case msg != "":
		fmt.Fprintf(p.Log, "%suser=%s WARN metrics not published: %s\n", prefix, key, msg)
	default:
		fmt.Fprintf(p.Log, "user=%s OK metrics published again\n", key)
	}
}

// read walks Source through descriptors, never following a link.
func (p *Publisher) read() ([]UserResult, error) {
	base, err := unix.Open(p.Source, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p.Source, err)
	}
	defer unix.Close(base)
	var st unix.Stat_t
	if err := unix.Fstat(base, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", p.Source, err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return nil, fmt.Errorf("%w: %s is uid %d's, mode %04o; want root's, 0755 (install -d -m 0755 %s)",
			ErrSharedSource, p.Source, st.Uid, st.Mode&0o7777, p.Source)
	}
	f := os.NewFile(uintptr(base), p.Source)
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p.Source, err)
	}
	slices.Sort(names)
	var users []UserResult
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		var ds unix.Stat_t
		if err := unix.Fstatat(base, name, &ds, unix.AT_SYMLINK_NOFOLLOW); err != nil || ds.Mode&unix.S_IFMT != unix.S_IFDIR {
			continue // not a user's directory (provision makes only those)
		}
		users = append(users, p.readUser(base, name, ds.Uid))
	}
	return users, nil
}

// readUser reads name's file, if name's directory is name's own: its owner
// is the user of that name, so the file's series are that user's.
func (p *Publisher) readUser(base int, name string, dirUID uint32) UserResult {
	r := UserResult{User: name}
	source := p.Source
	if uid, err := p.uidOf(name); err != nil || uid != int(dirUID) {
		r.Err = fmt.Errorf("%s belongs to uid %d, not to a user %s", filepath.Join(source, name), dirUID, name)
		return r
	}
	path := filepath.Join(source, name, FileName)
	dfd, err := unix.Openat(base, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		r.Err = fmt.Errorf("open %s: %w", filepath.Dir(path), err)
		return r
	}
	defer unix.Close(dfd)
	// O_NONBLOCK: a FIFO in the name opens at once (and is refused below)
	// rather than hanging the publisher.
	fd, err := unix.Openat(dfd, FileName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return r // no metrics yet
	case errors.Is(err, unix.ELOOP):
		r.Err = fmt.Errorf("%s is a symlink", path)
		return r
	case err != nil:
		r.Err = fmt.Errorf("open %s: %w", path, err)
		return r
	}
	file := os.NewFile(uintptr(fd), path)
	defer file.Close()
	var fs unix.Stat_t
	if err := unix.Fstat(fd, &fs); err != nil {
		r.Err = fmt.Errorf("stat %s: %w", path, err)
		return r
	}
	switch {
	case fs.Mode&unix.S_IFMT != unix.S_IFREG:
		r.Err = fmt.Errorf("%s is not a regular file", path)
		return r
	case fs.Uid != dirUID:
		r.Err = fmt.Errorf("%s belongs to uid %d, not to %s (uid %d)", path, fs.Uid, name, dirUID)
		return r
	case fs.Size > MaxFileSize:
		r.Err = fmt.Errorf("%s: %d bytes, more than %d", path, fs.Size, MaxFileSize)
		return r
	}
	data, err := io.ReadAll(io.LimitReader(file, MaxFileSize+1))
	if err != nil {
		r.Err = fmt.Errorf("read %s: %w", path, err)
		return r
	}
	values, err := Parse(data)
	if err != nil {
		r.Err = fmt.Errorf("%s: %w", path, err)
		return r
	}
	r.Values, r.MTime = values, time.Unix(fs.Mtim.Sec, fs.Mtim.Nsec)
	return r
}

// Render is the published file: every family once, its samples together
// (the collector refuses a family split in two), each labelled user="<the
// owner>" (and, in a family with a label, that label's value as parsed).
func Render(users []UserResult) []byte {
	var b strings.Builder
	family := func(f Family, sample func(u UserResult, key string) (float64, bool)) {
		header := false
		values := f.LabelValues
		if f.Label == "" {
			values = []string{""}
		}
		for _, u := range users {
			for _, lv := range values {
				v, ok := sample(u, f.Key(lv))
				if !ok {
					continue
				}
				if !header {
					fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f.Name, f.Help, f.Name, f.Type)
					header = true
				}
				extra := ""
				if f.Label != "" {
					extra = fmt.Sprintf(`,%s="%s"`, f.Label, escapeLabel(lv))
				}
				fmt.Fprintf(&b, "%s{user=\"%s\"%s} %s\n", f.Name, escapeLabel(u.User), extra, strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
	}
	for _, f := range AgentFamilies {
		family(f, func(u UserResult, key string) (float64, bool) { v, ok := u.Values[key]; return v, ok })
	}
	family(publisherFamilies[0], func(u UserResult, _ string) (float64, bool) {
		return float64(u.MTime.UnixMilli()) / 1000, !u.MTime.IsZero()
	})
	family(publisherFamilies[1], func(u UserResult, _ string) (float64, bool) {
		if u.Err != nil {
			return 1, true
		}
		return 0, true
	})
	return []byte(b.String())
}

func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// writeAtomic puts data into dir/FileName by a temp file and a rename.
func writeAtomic(dir string, data []byte) error {
	f, err := os.CreateTemp(dir, "."+FileName+".tmp*")
	if err != nil {
		return fmt.Errorf("write the published metrics: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, FileName))
	}
	if err != nil {
		return fmt.Errorf("write the published metrics: %w", err)
	}
	return nil
}

// Kind names what a path in a metrics dir is, for an error that says why it
// was refused: symlink, FIFO, directory, socket, device, file.
func Kind(m os.FileMode) string {
	switch {
	case m&os.ModeSymlink != 0:
		return "symlink"
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m.IsDir():
		return "directory"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	case m.IsRegular():
		return "file"
	}
	return "special file"
}
