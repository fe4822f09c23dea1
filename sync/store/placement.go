package store

import "context"

// docPath is the document this host's login lives in: the main one, or
// hosts/<host id> beside it when another host owns the main one.
func (v *Vault) docPath() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.onHost {
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
	v.mu.Lock()
	mine := v.cfg.HostID == "" || v.owner == v.cfg.HostID || (v.wroteMain > 0 && v.wroteMain == main.Version) ||
		(v.adopted > 0 && v.adopted == main.Version)
	v.mu.Unlock()
	if mine {
		return false
	}
	o, err := main.OAuth()
	return err == nil && o != nil && o.Usable() == nil && (v.cfg.Knows == nil || !v.cfg.Knows(o))
}

// lastWritten is the document this process wrote last, while this host
// still uses that document (nil otherwise).
func (v *Vault) lastWritten() *Doc {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.last == nil || (v.cfg.HostID != "" && !v.placed) {
		return nil
	}
	if want := map[bool]string{true: v.hostPath(), false: v.cfg.Path}[v.onHost]; v.last.path != want {
		return nil
	}
	return v.last
}

func (v *Vault) remember(d *Doc) {
	v.mu.Lock()
	v.last = d
	v.mu.Unlock()
}

// MetaOwnerKey is the main document's custom_metadata key naming the host
// whose login it holds.
const MetaOwnerKey = "owner_host"

// place decides, once (again after unplace), which document is this
// host's: the main one when this host owns it, or when nobody does and it
// holds no login or one this host knows; else hosts/<id>.
func (v *Vault) place(ctx context.Context) error {
	v.mu.Lock()
	done := v.placed || v.cfg.HostID == ""
	v.mu.Unlock()
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
			v.mu.Lock()
			v.adopted = main.Version
			v.mu.Unlock()
		}
	}
	v.mu.Lock()
	v.placed, v.onHost, v.owner = true, onHost, owner
	v.mu.Unlock()
	return nil
}

// Place decides which document is this host's, if that is not decided
// since the last Prepare (health names it before the first backup does).
func (v *Vault) Place(ctx context.Context) error { return v.place(ctx) }

// claim records this host as the main document's owner after its first
// write there (best effort: a policy from before hosts cannot, and the
// lineage rule in place keeps hosts apart without it).
func (v *Vault) claim(ctx context.Context, wrote string) {
	v.mu.Lock()
	need := v.cfg.HostID != "" && wrote == v.cfg.Path && v.owner == "" && !v.claimTried
	v.claimTried = true
	v.mu.Unlock()
	if need {
		_ = v.PatchMetadata(ctx, map[string]any{MetaOwnerKey: v.cfg.HostID})
	}
}

// unplace has the next call decide the document again.
func (v *Vault) unplace() {
	v.mu.Lock()
	v.placed, v.claimTried, v.last = false, false, nil
	v.mu.Unlock()
}

// Placement says which document this host uses ("main" or "hosts") and
// whether the main document names an owner yet.
func (v *Vault) Placement() (doc string, claimed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.onHost {
		return "hosts", true
	}
	return "main", v.owner == v.cfg.HostID && v.owner != ""
}

// Owner reads the main document's owner host ("" when none is recorded).
func (v *Vault) Owner(ctx context.Context) (string, error) {
	m, err := v.client.Logical().ReadWithContext(ctx, v.cfg.Mount+"/metadata/"+v.cfg.Path)
	if err != nil {
		return "", v.classify("read metadata of "+v.cfg.Mount+"/"+v.cfg.Path, err)
	}
	if m == nil || m.Data == nil {
		return "", nil
	}
	cm, _ := m.Data["custom_metadata"].(map[string]any)
	owner, _ := cm[MetaOwnerKey].(string)
	return owner, nil
}
