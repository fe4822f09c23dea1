package store

import (
	"context"
	"errors"
	"sync"

	vault "github.com/hashicorp/vault/api"
)

// placement is which document is this host's and what this process
// knows that decides it, under its own lock.
type placement struct {
	mu     sync.Mutex
	placed bool // the document this host uses is known
	onHost bool // it is hosts/<id>, not the main document
	owner  string
	// claimTried: this placement already tried to record its ownership.
	claimTried bool
	last       *Doc // the document this process wrote last
	// wroteMain is the version of the main document this process wrote
	// last: its login is this host's, whatever the disk (lineage, a file
	// since logged out) says yet.
	wroteMain int
	// adopted is the version of an unowned main document placement took as
	// this host's.
	adopted int
}

// docPath is the document this host's login lives in: the main one, or
// hosts/<host id> beside it when another host owns the main one.
func (v *Vault) docPath() string {
	v.pl.mu.Lock()
	defer v.pl.mu.Unlock()
	if v.pl.onHost {
		return v.hostPath()
	}
	return v.cfg.Path
}

func (v *Vault) hostPath() string { return v.cfg.Path + "/hosts/" + v.cfg.HostID }

// othersLogin says whether main, the main document as read, holds another
// host's login: a usable one (an unreadable login is nobody's), in a
// document this host does not own, did not write this version of, and
// whose login it does not know.
func (v *Vault) othersLogin(main *Doc) bool {
	v.pl.mu.Lock()
	mine := v.cfg.HostID == "" || v.pl.owner == v.cfg.HostID || (v.pl.wroteMain > 0 && v.pl.wroteMain == main.Version) ||
		(v.pl.adopted > 0 && v.pl.adopted == main.Version)
	v.pl.mu.Unlock()
	if mine {
		return false
	}
	o, err := main.OAuth()
	return err == nil && o != nil && o.Usable() == nil && (v.cfg.Knows == nil || !v.cfg.Knows(o))
}

// lastWritten is the document this process wrote last, while this host
// still uses that document (nil otherwise).
func (v *Vault) lastWritten() *Doc {
	v.pl.mu.Lock()
	defer v.pl.mu.Unlock()
	if v.pl.last == nil || (v.cfg.HostID != "" && !v.pl.placed) {
		return nil
	}
	if want := map[bool]string{true: v.hostPath(), false: v.cfg.Path}[v.pl.onHost]; v.pl.last.path != want {
		return nil
	}
	return v.pl.last
}

func (v *Vault) remember(d *Doc) {
	v.pl.mu.Lock()
	v.pl.last = d
	v.pl.mu.Unlock()
}

// MetaOwnerKey is the main document's custom_metadata key naming the host
// whose login it holds.
const MetaOwnerKey = "owner_host"

// place decides, once (again after unplace), which document is this
// host's: the main one when this host owns it, or when nobody does and it
// holds no login or one this host knows; else hosts/<id>.
func (v *Vault) place(ctx context.Context) error {
	v.pl.mu.Lock()
	done := v.pl.placed || v.cfg.HostID == ""
	v.pl.mu.Unlock()
	if done {
		return nil
	}
	owner, err := v.Owner(ctx)
	if err != nil {
		return err
	}
	onHost := owner != "" && owner != v.cfg.HostID
	if owner == "" {
		main, err := v.read(ctx, v.cfg.Path)
		if err != nil {
			return err
		}
		if v.othersLogin(main) {
			onHost = true // another host's login, from before it said so
		} else if main.Exists {
			// This host's (it knows the login, or has no history yet and
			// takes over from the reference tool): that version stays
			// this host's while the process learns newer logins.
			v.pl.mu.Lock()
			v.pl.adopted = main.Version
			v.pl.mu.Unlock()
		}
	}
	v.pl.mu.Lock()
	v.pl.placed, v.pl.onHost, v.pl.owner = true, onHost, owner
	v.pl.mu.Unlock()
	return nil
}

// Place decides which document is this host's, if that is not decided
// since the last Prepare (health names it before the first backup does).
func (v *Vault) Place(ctx context.Context) error { return v.place(ctx) }

// claim records this host as the main document's owner after its first
// write there (best effort: a policy from before hosts cannot, and the
// lineage rule in place keeps hosts apart without it).
func (v *Vault) claim(ctx context.Context, wrote string) {
	v.pl.mu.Lock()
	need := v.cfg.HostID != "" && wrote == v.cfg.Path && v.pl.owner == "" && !v.pl.claimTried
	v.pl.claimTried = true
	v.pl.mu.Unlock()
	if need {
		_ = v.PatchMetadata(ctx, map[string]any{MetaOwnerKey: v.cfg.HostID})
	}
}

// unplace has the next call decide the document again.
func (v *Vault) unplace() {
	v.pl.mu.Lock()
	v.pl.placed, v.pl.claimTried, v.pl.last = false, false, nil
	v.pl.mu.Unlock()
}

// Placed says whether this host's document is decided (Placement is then
// its answer), without asking Vault.
func (v *Vault) Placed() bool {
	v.pl.mu.Lock()
	defer v.pl.mu.Unlock()
	return v.pl.placed
}

// Placement says which document this host uses ("main" or "hosts") and
// whether the main document names an owner yet.
func (v *Vault) Placement() (doc string, claimed bool) {
	v.pl.mu.Lock()
	defer v.pl.mu.Unlock()
	if v.pl.onHost {
		return "hosts", true
	}
	return "main", v.pl.owner == v.cfg.HostID && v.pl.owner != ""
}

// Owner reads the main document's owner host ("" when none is recorded).
func (v *Vault) Owner(ctx context.Context) (string, error) {
	m, err := v.kv().GetMetadata(ctx, v.cfg.Path)
	switch {
	case errors.Is(err, vault.ErrSecretNotFound):
		return "", nil
	case err != nil:
		return "", v.classify("read metadata of "+v.cfg.Mount+"/"+v.cfg.Path, err)
	}
	owner, _ := m.CustomMetadata[MetaOwnerKey].(string)
	return owner, nil
}
