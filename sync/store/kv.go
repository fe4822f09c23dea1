package store

import (
	"context"
	"errors"
	"fmt"

	vault "github.com/hashicorp/vault/api"
)

// Read returns the latest version of this host's document. A deleted or
// destroyed latest version reads as absent, with Version set to the
// metadata's current_version. On a host document the setup token (one per
// user) is the main document's.
func (v *Vault) Read(ctx context.Context) (*Doc, error) {
	if err := v.place(ctx); err != nil {
		return nil, err
	}
	path := v.docPath()
	doc, err := v.read(ctx, path)
	if err != nil {
		return nil, err
	}
	var main *Doc
	if path == v.cfg.Path {
		if !v.othersLogin(doc) {
			return doc, nil
		}
		// Another host's login came into the unowned main document since
		// this host placed itself there (both found it empty): it is that
		// host's now, and this host's login goes to its own document.
		v.pl.mu.Lock()
		v.pl.onHost, v.pl.last = true, nil
		v.pl.mu.Unlock()
		main = doc
		if doc, err = v.read(ctx, v.hostPath()); err != nil {
			return nil, err
		}
	} else if main, err = v.read(ctx, v.cfg.Path); err != nil {
		return nil, err
	}
	doc.setup = map[string]any{}
	for _, k := range []string{FieldSetupToken, FieldSetupTokenExpiresAt} {
		if x, ok := main.fields[k]; ok {
			doc.setup[k] = x
		}
	}
	return doc, nil
}

// read reads one document (path inside the mount).
func (v *Vault) read(ctx context.Context, path string) (*Doc, error) {
	doc, err := v.readData(ctx, path)
	if err != nil || doc != nil {
		return doc, err
	}
	// No live latest version: the cas for a write is the metadata's
	// current_version (a deleted version still counts); 0 only with no metadata.
	m, err := v.kv().GetMetadata(ctx, path)
	switch {
	case errors.Is(err, vault.ErrSecretNotFound):
		m = &vault.KVMetadata{}
	case err != nil:
		return nil, v.classify("read metadata of "+v.cfg.Mount+"/"+path, err)
	}
	doc = &Doc{fields: map[string]any{}, path: path, Version: m.CurrentVersion}
	if doc.Version > 0 {
		// A version written between the two reads (another host's first
		// backup) would pass for a deleted one, and our write with its
		// version as the cas would replace it unseen: look again.
		if again, err := v.readData(ctx, path); err != nil || again != nil {
			return again, err
		}
	}
	return doc, nil
}

// readData reads the document's live latest version (nil when there is none:
// no version, or a deleted or destroyed one).
func (v *Vault) readData(ctx context.Context, path string) (*Doc, error) {
	s, err := v.kv().Get(ctx, path)
	switch {
	case errors.Is(err, vault.ErrSecretNotFound):
		return nil, nil
	case err != nil:
		return nil, v.classify("read "+v.cfg.Mount+"/"+path, kvErr(err))
	case s.Data == nil:
		return nil, nil
	}
	ver := 0
	if s.VersionMetadata != nil {
		ver = s.VersionMetadata.Version
	}
	return &Doc{Exists: true, Version: ver, fields: s.Data, path: path}, nil
}

// write writes fields as the document's next version if its current one is
// still cas (0: if it has none), and returns the version written.
func (v *Vault) write(ctx context.Context, path string, fields map[string]any, cas int) (int, error) {
	s, err := v.kv().Put(ctx, path, fields, vault.WithCheckAndSet(cas))
	switch {
	case errors.Is(err, vault.ErrSecretNotFound):
		// Written, with no answer to say as which version.
		return cas + 1, nil
	case err != nil:
		return 0, v.classify("write "+v.cfg.Mount+"/"+path, kvErr(err))
	case s.VersionMetadata == nil || s.VersionMetadata.Version <= 0:
		return cas + 1, nil
	}
	return s.VersionMetadata.Version, nil
}

// kv is the user's mount through vault/api's KV v2 helpers, which ask for
// <mount>/data/<path> and <mount>/metadata/<path>: NewVault checked that
// the mount and the path are each safe segments.
func (v *Vault) kv() *vault.KVv2 { return v.client.KVv2(v.cfg.Mount) }

// kvErr is the error under the KV helpers' own wrapping ("error
// encountered while reading secret at …"): classify says the operation in
// its words. Only for Get, Put and PatchMetadata, which always wrap.
func kvErr(err error) error {
	if inner := errors.Unwrap(err); inner != nil {
		return inner
	}
	return err
}

// Update is `vault kv patch -method=rw`: read, merge at top level, write with
// cas = the version read; on a cas conflict, read and merge again.
func (v *Vault) Update(ctx context.Context, fn func(cur *Doc) (map[string]any, error)) (*Doc, error) {
	// The document this process wrote last stands for a read: the
	// check-and-set on its version fails if anyone wrote since, and then
	// it is read. A decision not to write is only taken on a fresh read.
	cur, cached := v.lastWritten(), true
	for attempt := 0; ; {
		if cur == nil {
			var err error
			if cur, err = v.Read(ctx); err != nil {
				return nil, err
			}
			cached = false
		}
		set, err := fn(cur)
		if err != nil {
			if cached && errors.Is(err, ErrSkip) {
				cur = nil
				continue
			}
			return cur, err
		}
		merged := cur.merged(set)
		path := cur.path
		ver, err := v.write(ctx, path, merged, cur.Version)
		if err != nil {
			v.remember(nil)
			if errors.Is(err, ErrConflict) && cached {
				cur = nil // our copy was old: read, and try again
				continue
			}
			if attempt++; errors.Is(err, ErrConflict) && attempt < maxConflicts {
				// Someone wrote first: if it was another host taking an
				// unclaimed main document, this host moves to its own.
				v.unplace()
				cur = nil
				continue
			}
			return cur, err
		}
		if path == v.cfg.Path {
			v.pl.mu.Lock()
			v.pl.wroteMain = ver
			v.pl.mu.Unlock()
		}
		v.claim(ctx, path)
		done := &Doc{Exists: true, Version: ver, fields: merged, setup: cur.setup, path: path}
		v.remember(done)
		return done, nil
	}
}

// PatchMetadata merges keys into the main document's custom_metadata
// (non-secret: host health, the owner). A nil value removes the key.
func (v *Vault) PatchMetadata(ctx context.Context, keys map[string]any) error {
	if len(keys) == 0 {
		return nil // the helper would send null: every key removed
	}
	op := "write metadata of " + v.cfg.Mount + "/" + v.cfg.Path
	err := v.kv().PatchMetadata(ctx, v.cfg.Path, vault.KVMetadataPatchInput{CustomMetadata: keys})
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == 404 {
		return fmt.Errorf("%s: %w", op, ErrNoDocument)
	}
	if err != nil {
		return v.classify(op, kvErr(err))
	}
	if owner, ok := keys[MetaOwnerKey].(string); ok {
		v.pl.mu.Lock()
		v.pl.owner = owner
		v.pl.mu.Unlock()
	}
	return nil
}
