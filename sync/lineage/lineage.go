// Package lineage orders a login's refresh tokens by when this host first saw
// each one: refresh tokens rotate, so that order is the login's history, and
// it decides which of two logins is newer without trusting clocks.
package lineage

import (
	"bufio"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gofrs/flock"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Lineage is the ordered list of refresh-token fingerprints this host has seen,
// oldest first, kept in the state dir. Refresh tokens rotate, so the order in
// which we first saw them is the order of the login's history; it decides which
// of two credentials is newer without trusting clocks, which step.
type Lineage struct {
	path string
	// mu guards seen and idx: the agent's refresher and its backup worker
	// share one Lineage (concurrent map access is a fatal error in Go).
	mu   sync.Mutex
	seen []string
	idx  map[string]int
	// unsynced: Note wrote the file without fsync; Persist syncs it.
	unsynced bool
}

// maxLen keeps the file small; older entries only ever matter for tokens that
// are long dead.
const maxLen = 512

// Load reads the lineage file (a missing file is an empty lineage; a
// corrupt line is skipped).
func Load(path string) (*Lineage, error) {
	l := &Lineage{path: path, idx: map[string]int{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		fp := strings.TrimSpace(sc.Text())
		if len(fp) != 64 {
			continue
		}
		l.add(fp)
	}
	return l, nil
}

func (l *Lineage) add(fp string) bool {
	if _, ok := l.idx[fp]; ok {
		return false
	}
	l.idx[fp] = len(l.seen)
	l.seen = append(l.seen, fp)
	return true
}

// Observe records a refresh token as seen now (no-op when already known) and
// persists the lineage when it changed. Several of our processes share the file:
// the append happens under a flock on a fresh read, so none loses another's entry.
func (l *Lineage) Observe(tok credentials.Secret) error {
	if tok == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.idx[tok.Fingerprint()]; ok && !l.unsynced {
		return nil
	}
	return l.save(true, tok.Fingerprint())
}

// Len is how many logins the lineage holds.
func (l *Lineage) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// Note is Observe without the fsyncs: every process of ours sees tok in the
// file at once (before the agent's backup puts it in Vault, so a pass that
// finds it there can order it), and Persist makes it durable after. It keeps
// the fsyncs off a backup's lag.
func (l *Lineage) Note(tok credentials.Secret) error {
	if tok == "" {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.idx[tok.Fingerprint()]; ok {
		return nil
	}
	return l.save(false, tok.Fingerprint())
}

// Persist makes what Note wrote durable.
func (l *Lineage) Persist() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.unsynced {
		return nil
	}
	return l.save(true)
}

// save merges fps (in order) into the file under its lock and rewrites it,
// durably or not; l.mu is held.
func (l *Lineage) save(durable bool, fps ...string) error {
	if err := os.MkdirAll(filepath.Dir(l.path), 0o700); err != nil {
		return err
	}
	lk := flock.New(l.path+".lock", flock.SetPermissions(0o600))
	if err := lk.Lock(); err != nil {
		return err
	}
	defer lk.Unlock()
	fresh, err := Load(l.path)
	if err != nil {
		return err
	}
	l.seen, l.idx = fresh.seen, fresh.idx
	added := false
	for _, fp := range fps {
		if l.add(fp) {
			added = true
		}
	}
	if !added && !(durable && l.unsynced) {
		return nil
	}
	if len(l.seen) > maxLen {
		l.seen = l.seen[len(l.seen)-maxLen:]
		l.idx = make(map[string]int, len(l.seen))
		for i, fp := range l.seen {
			l.idx[fp] = i
		}
	}
	var b bytes.Buffer
	for _, fp := range l.seen {
		b.WriteString(fp)
		b.WriteByte('\n')
	}
	if !durable {
		if err := atomicfile.WriteUnsynced(l.path, b.Bytes(), 0o600); err != nil {
			return err
		}
		l.unsynced = true
		return nil
	}
	if _, err := atomicfile.Write(l.path, b.Bytes(), 0o600); err != nil {
		return err
	}
	l.unsynced = false
	return nil
}

// Reload re-reads the lineage from disk, for a long-lived holder (the agent)
// that must also know the tokens other processes of ours have seen since.
func (l *Lineage) Reload() error {
	fresh, err := Load(l.path)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, fp := range l.seen {
		if _, ok := fresh.idx[fp]; !ok {
			// Ours but not on disk (a write that failed): keep it, last.
			fresh.add(fp)
		}
	}
	l.seen, l.idx = fresh.seen, fresh.idx
	return nil
}

// Order compares two refresh tokens: -1 when a was seen before b, 1 when after,
// 0 when either is unknown or they are the same.
func (l *Lineage) Order(a, b credentials.Secret) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	ia, oka := l.idx[a.Fingerprint()]
	ib, okb := l.idx[b.Fingerprint()]
	if !oka || !okb || ia == ib {
		return 0
	}
	if ia < ib {
		return -1
	}
	return 1
}

// Latest says whether tok is the newest refresh token this host has seen.
func (l *Lineage) Latest(tok credentials.Secret) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.idx[tok.Fingerprint()]
	return ok && i == len(l.seen)-1
}

// Known says whether this host has seen the token.
func (l *Lineage) Known(tok credentials.Secret) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.idx[tok.Fingerprint()]
	return ok
}
