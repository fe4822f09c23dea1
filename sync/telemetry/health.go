package telemetry

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// Every pass and agent leaves this host's health, nothing secret, in the
// user's Vault metadata (custom_metadata "host.<host id>"), where `fleet`
// reads it for every user and host without touching a secret.

// healthMemory is what health writes remember between them.
type healthMemory struct {
	mu       sync.Mutex
	setupEnd time.Time // the setup token's end, from the last document read
	refused  string    // the refusal last reported (reported once)
	// policy is what the last look at the token's policy found, at policyAt.
	policy   store.PolicyState
	policyAt time.Time
}

// policyLookEvery is how often health asks Vault again whether the token's
// policy is still the old one (provision rewrites it; the answer changes
// about once in a fleet's life).
const policyLookEvery = time.Hour

// noteDoc remembers what health needs from a document just read.
// NoteDoc remembers what health needs from a document a pass just read (the
// setup token's end).
func (t *Reporter) NoteDoc(doc *store.Doc) { t.health.noteDoc(doc) }

func (h *healthMemory) noteDoc(doc *store.Doc) {
	if doc == nil {
		return
	}
	h.mu.Lock()
	h.setupEnd = time.Time{}
	if doc.SetupToken() != "" {
		h.setupEnd = doc.SetupTokenExpiresAt()
	}
	h.mu.Unlock()
}

// HealthNow is this host's health as a one-shot command knows it: st now,
// the login in the file, the last backup on record.
func (t *Reporter) HealthNow(st eventlog.Status) fleet.Health {
	h := fleet.Health{Status: string(st), StatusAt: t.now()}
	if l, err := credentials.Read(t.Cfg.CredentialsFile); err == nil && l.OAuth != nil {
		h.ExpiresAt, h.Deadline = l.OAuth.ExpiresAt(), l.OAuth.RefreshTokenExpiresAt()
	}
	if rec := t.LoadRecord(); rec.LastBackup != nil {
		h.BackupAt = rec.LastBackup.At
	}
	return h
}

// PublishHealth writes h (with this host's label, the version, where its
// login lives and the setup token's end) to the user's Vault metadata,
// with a token the last Prepare accepted (or refused only as exposed, when
// it is still this user's: the fleet sees that FAIL). A policy that does not allow it
// (from before the fleet: provision rewrites it) is said once, as WARN;
// nothing else depends on it.
func (t *Reporter) PublishHealth(ctx context.Context, h fleet.Health) {
	if t.Vault == nil || t.Cfg.HostID == "" || !t.Vault.MayReport() {
		return // no health with a token that was refused (or never checked)
	}
	h.Label, h.Version = t.Cfg.HostLabel, t.Version
	t.health.mu.Lock()
	if h.SetupExpires.IsZero() {
		h.SetupExpires = t.health.setupEnd
	}
	t.health.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Where this host backs up, decided now if no read or write has yet
	// (an agent reports before its first backup): never a guess. A token
	// refused as exposed reads nothing: only what is known already.
	if !t.Vault.Accepted() {
		if t.Vault.Placed() {
			h.Doc, _ = t.Vault.Placement()
		}
	} else if t.Vault.Place(ctx) == nil {
		h.Doc, _ = t.Vault.Placement()
	}
	if t.tokenPolicy(ctx) == store.PolicyOld {
		h.Policy = string(store.PolicyOld) // fleet shows it: run provision
	}
	err := t.Vault.PatchMetadata(ctx, map[string]any{fleet.MetadataKey(t.Cfg.HostID): h.Encode()})
	if errors.Is(err, store.ErrNoDocument) {
		// A new user before the first backup: nothing to hang the health
		// on yet, and nothing wrong. The write after the backup makes it.
		t.Diag.Debug("no document to write this host's health to yet", "err", err)
		return
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	t.health.mu.Lock()
	report := msg != "" && msg != t.health.refused
	t.health.refused = msg
	t.health.mu.Unlock()
	switch {
	case !report:
	case errors.Is(err, store.ErrForbidden):
		t.Log.Event(eventlog.WARN, "this host's health cannot be written to the Vault metadata: %v; backups go on (a policy from before the fleet view is rewritten by `claude-auth-sync provision`)", err)
	default:
		t.Diag.Warn("cannot write this host's health to Vault", "err", err)
	}
}

// tokenPolicy is whether the token still carries the old, escapable policy
// (asked at most every policyLookEvery; unknown says nothing).
func (t *Reporter) tokenPolicy(ctx context.Context) store.PolicyState {
	t.health.mu.Lock()
	state, at := t.health.policy, t.health.policyAt
	t.health.mu.Unlock()
	if !at.IsZero() && t.now().Sub(at) < policyLookEvery && t.now().After(at) {
		return state
	}
	state, _ = t.Vault.Policy(ctx)
	t.health.mu.Lock()
	t.health.policy, t.health.policyAt = state, t.now()
	t.health.mu.Unlock()
	return state
}
