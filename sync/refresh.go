package authsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// ErrLoginDead: the token endpoint answered invalid_grant and the file holds no
// other login: only an interactive login helps.
var ErrLoginDead = errors.New("the login is dead")

// RefreshResult says what a brokered refresh did.
type RefreshResult struct {
	Refreshed bool               // we rotated the token
	OAuth     *credentials.OAuth // the login now in the file (nil when unknown)
	Message   string
}

// lifetimes remembers when this process first saw each access token, to know a
// token's lifetime (for the half-lifetime cap on the lead).
type lifetimes struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// born is when the token was issued, if this process saw that (it refreshed it,
// or the agent saw it appear in the file).
func (l *lifetimes) born(tok credentials.Secret) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.seen[tok.Fingerprint()]
	return t, ok
}

func (l *lifetimes) note(tok credentials.Secret, issued time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]time.Time{}
	}
	if len(l.seen) > 64 {
		clear(l.seen)
	}
	l.seen[tok.Fingerprint()] = issued
}

// NoteNewLogin records that a login was just issued (the agent saw it appear).
func (e *Engine) NoteNewLogin(o *credentials.OAuth) { e.tokens.note(o.AccessToken(), e.now()) }

// RefreshDue is when the refresher should rotate o: expiresAt minus the lead.
// The default lead (15 min) is capped at half the token's lifetime, so a short
// token is not refreshed the moment it arrives; a lead set explicitly
// (CLAUDE_AUTH_REFRESH_LEAD) is honoured as long as it is shorter than the
// lifetime. A token whose birth this process did not see counts as long-lived
// (for an 8 h token the lead is 15 min either way).
func (e *Engine) RefreshDue(o *credentials.OAuth) time.Time {
	exp := o.ExpiresAt()
	lead := e.Cfg.RefreshLead
	if born, ok := e.tokens.born(o.AccessToken()); ok && exp.After(born) {
		life := exp.Sub(born)
		if _, explicit := e.Cfg.Sources["CLAUDE_AUTH_REFRESH_LEAD"]; explicit {
			lead = min(lead, life-time.Second)
		} else {
			lead = min(lead, life/2)
		}
	}
	return exp.Add(-lead)
}

func (e *Engine) lockWait() time.Duration {
	if e.LockWait > 0 {
		return e.LockWait
	}
	return 30 * time.Second
}

func (e *Engine) pendingRefreshPath() string {
	return filepath.Join(e.Cfg.StateDir, "pending-refresh")
}

type pendingRefresh struct {
	Response json.RawMessage `json:"response"`
	SentFP   string          `json:"sent_refresh_token_fingerprint"`
	At       time.Time       `json:"at"`
}

// Refresh is one brokered refresh, the single refresher's step. It takes our
// refresh flock, then Claude's .oauth_refresh.lock and <realpath>.lock, re-reads
// the file under them and stops if someone already refreshed (the file no longer
// holds saw, when given) or the token is not due (unless force). It POSTs the
// refresh, writes the response durably to the state dir first, then writes the
// file under .storage-write.lock with compare-and-swap on the refresh token it
// sent. Claude's locks are held only for the re-read, the POST and the write.
func (e *Engine) Refresh(ctx context.Context, lin *Lineage, force bool, saw credentials.Secret) (RefreshResult, error) {
	lctx, cancel := context.WithTimeout(ctx, e.lockWait())
	defer cancel()
	ours, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Refresh)
	if err != nil {
		return RefreshResult{}, err
	}
	defer ours.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, e.Cfg.ClaudeConfigDir)
	if err != nil {
		return RefreshResult{}, err
	}
	defer claude.Release()

	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return RefreshResult{}, err
	}
	if cur.State != credentials.Usable {
		return RefreshResult{}, fmt.Errorf("no usable login to refresh (%s: %v)", cur.State, cur.Problem)
	}
	o := cur.OAuth
	if IsBackfill(o, e.readEnvToken(), e.now()) {
		return RefreshResult{OAuth: o, Message: "setup-token mode: nothing to refresh"}, nil
	}
	if saw != "" && o.RefreshToken() != saw {
		return RefreshResult{OAuth: o, Message: "someone already refreshed"}, nil
	}
	if !force && e.now().Before(e.RefreshDue(o)) {
		return RefreshResult{OAuth: o, Message: "not due yet"}, nil
	}
	client := e.OAuth
	if client == nil {
		client = &oauth.Client{}
	}
	tok, err := client.Refresh(ctx, o.RefreshToken())
	if errors.Is(err, oauth.ErrInvalidGrant) {
		// Someone may have rotated without our locks (an old Claude): look again.
		if again, rerr := credentials.Read(e.Cfg.CredentialsFile); rerr == nil && again.State == credentials.Usable &&
			again.OAuth.RefreshToken() != o.RefreshToken() {
			return RefreshResult{OAuth: again.OAuth, Message: "rotated by someone else meanwhile"}, nil
		}
		return RefreshResult{}, fmt.Errorf("%w: the token endpoint answered %v", ErrLoginDead, err)
	}
	if err != nil {
		return RefreshResult{}, fmt.Errorf("refresh: %w", err)
	}
	now := e.now()
	// Durable first: between the response and the rename this is the only copy
	// of the live refresh token.
	if err := e.writePendingRefresh(tok, o.RefreshToken(), now); err != nil {
		return RefreshResult{}, fmt.Errorf("keep the refresh response: %w", err)
	}
	next, err := mergeToken(o, tok, now)
	if err != nil {
		return RefreshResult{}, err
	}
	werr := claude.WithStorageWrite(ctx, func() error { return e.casWrite(o.RefreshToken(), next) })
	if werr != nil {
		return RefreshResult{}, fmt.Errorf("write the refreshed login (kept in %s): %w", e.pendingRefreshPath(), werr)
	}
	_ = os.Remove(e.pendingRefreshPath())
	e.tokens.note(next.AccessToken(), now)
	if err := lin.Observe(next.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
	return RefreshResult{Refreshed: true, OAuth: next, Message: "refreshed; valid until " + next.ExpiresAt().Format(time.RFC3339)}, nil
}

// casWrite writes next over the file if it still holds the refresh token sent
// (or holds nothing usable any more: ours is then the only live login).
func (e *Engine) casWrite(sent credentials.Secret, next *credentials.OAuth) error {
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return err
	}
	if cur.State == credentials.Usable && cur.OAuth.RefreshToken() != sent {
		return fmt.Errorf("%w: the file holds another login now", ErrChanged)
	}
	if cur.State == credentials.Missing {
		if err := os.MkdirAll(filepath.Dir(cur.Target), 0o700); err != nil {
			return err
		}
	}
	data, err := cur.Base().WithOAuth(next).Marshal()
	if err != nil {
		return err
	}
	target, err := credentials.WriteAtomic(e.Cfg.CredentialsFile, data, credentials.ModeFor(cur))
	if target != "" {
		e.Diag.Warn("credentials file is a symlink; wrote its target and kept the link", "link", e.Cfg.CredentialsFile, "target", target)
	}
	return err
}

// mergeToken puts a refresh response into the login, keeping every other field:
// new tokens, expiresAt = now + expires_in, scopes when given, and the login's
// deadline (refreshTokenExpiresAt) = the smaller of old and new.
func mergeToken(o *credentials.OAuth, tok *oauth.Token, now time.Time) (*credentials.OAuth, error) {
	set := map[string]any{
		"accessToken":  tok.AccessToken,
		"refreshToken": tok.RefreshToken,
		"expiresAt":    now.Add(tok.ExpiresIn).UnixMilli(),
	}
	if tok.Scope != "" {
		set["scopes"] = strings.Fields(tok.Scope)
	}
	if tok.RefreshTokenExpiresIn > 0 {
		deadline := now.Add(tok.RefreshTokenExpiresIn)
		if old := o.RefreshTokenExpiresAt(); !old.IsZero() && old.Before(deadline) {
			deadline = old
		}
		set["refreshTokenExpiresAt"] = deadline.UnixMilli()
	}
	return o.With(set)
}

func (e *Engine) writePendingRefresh(tok *oauth.Token, sent credentials.Secret, now time.Time) error {
	data, err := json.Marshal(pendingRefresh{Response: tok.Raw, SentFP: sent.Fingerprint(), At: now})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e.Cfg.StateDir, 0o700); err != nil {
		return err
	}
	_, err = credentials.WriteAtomic(e.pendingRefreshPath(), data, 0o600)
	return err
}

// ApplyPendingRefresh finishes a refresh that crashed between the token
// endpoint's answer and the rename: if the file still holds the refresh token
// that was sent (or nothing usable), the saved response goes in.
func (e *Engine) ApplyPendingRefresh(ctx context.Context, lin *Lineage) (bool, error) {
	data, err := os.ReadFile(e.pendingRefreshPath())
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var p pendingRefresh
	tok, perr := (*oauth.Token)(nil), json.Unmarshal(data, &p)
	if perr == nil {
		tok, perr = oauth.ParseToken(p.Response)
	}
	if perr != nil {
		_ = os.Rename(e.pendingRefreshPath(), e.pendingRefreshPath()+".unreadable")
		return false, fmt.Errorf("pending refresh record is unreadable; kept as %s.unreadable", e.pendingRefreshPath())
	}
	lctx, cancel := context.WithTimeout(ctx, e.lockWait())
	defer cancel()
	ours, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Refresh)
	if err != nil {
		return false, err
	}
	defer ours.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, e.Cfg.ClaudeConfigDir)
	if err != nil {
		return false, err
	}
	defer claude.Release()
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return false, err
	}
	applied := false
	if cur.State != credentials.Usable || cur.OAuth.RefreshToken().Fingerprint() == p.SentFP {
		base := cur.OAuth
		if base == nil {
			base, _ = credentials.ParseOAuth([]byte(`{}`))
		}
		next, err := mergeToken(base, tok, p.At)
		if err != nil {
			return false, err
		}
		sent := credentials.Secret("")
		if cur.OAuth != nil {
			sent = cur.OAuth.RefreshToken()
		}
		if err := claude.WithStorageWrite(ctx, func() error { return e.casWrite(sent, next) }); err != nil {
			return false, err
		}
		_ = lin.Observe(next.RefreshToken())
		applied = true
	}
	_ = os.Remove(e.pendingRefreshPath())
	return applied, nil
}

// SetupToken is the setup token from the env file ("" when not in that mode).
func (e *Engine) SetupToken() credentials.Secret { return e.readEnvToken() }

// RefreshNow is the `refresh` command: prepare the store, one forced brokered
// refresh, then back the new login up.
func (e *Engine) RefreshNow(ctx context.Context) Outcome {
	lin, err := LoadLineage(e.lineagePath())
	if err != nil {
		return e.finish(nil, fail("lineage: %v", err))
	}
	vs, hard := e.prepare(ctx)
	if hard != nil {
		return e.finish(nil, *hard)
	}
	res, err := e.Refresh(ctx, lin, true, "")
	switch {
	case errors.Is(err, ErrLoginDead):
		return e.finish(nil, fail("refresh: %v; %s", err, loginHint()))
	case errors.Is(err, lock.ErrClaudeLocksUnavailable), errors.Is(err, oauth.ErrTransient), errors.Is(err, context.DeadlineExceeded):
		return e.finish(nil, Outcome{Status: WARN, Code: ExitTempFail, Message: "refresh could not run now: " + err.Error()})
	case err != nil:
		return e.finish(nil, fail("refresh: %v", err))
	}
	msg := res.Message
	if res.OAuth != nil {
		return e.finish(nil, e.afterGoodCheck(ctx, newRecord(), lin, res.OAuth, vs, msg))
	}
	return e.finish(nil, Outcome{Status: OK, Code: ExitOK, Message: msg})
}
