package engine

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
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
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
	kept      *pendingRefresh // a refresh child's kept answer (ErrNotWritten)
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

// ErrNotWritten: the token endpoint rotated the login but the new one could
// not be written to the credentials file (a full or read-only file system).
// The result carries the new login, for the caller to back up; the answer is
// kept (pending-refresh, and in memory), and the next Refresh writes it
// instead of presenting the spent refresh token again.
var ErrNotWritten = errors.New("the refreshed login could not be written to the credentials file")

// Refresh is one brokered refresh, the single refresher's step. It takes our
// refresh flock, then Claude's .oauth_refresh.lock and <realpath>.lock, re-reads
// the file under them and stops if someone already refreshed (the file no longer
// holds saw, when given) or the token is not due (unless force). It POSTs the
// refresh, keeps the response durably in the state dir first, then writes the
// file under .storage-write.lock with compare-and-swap on the refresh token it
// sent. Claude's locks are held only for the re-read, the POST and the write.
// A response kept from an earlier refresh that never reached the file (a crash,
// a full disk) is written first, without a new POST: its refresh token is the
// live one, the file's is spent.
func (e *Engine) Refresh(ctx context.Context, lin *Lineage, force bool, saw credentials.Secret) (RefreshResult, error) {
	sawFP := ""
	if saw != "" {
		sawFP = saw.Fingerprint()
	}
	// In the agent every token request goes through the refresh child, so a
	// kill of the agent cannot lose an answer in flight. A kept answer is
	// written here: no request, and it may live only in this memory.
	if child := e.RefreshVia; child != nil && !e.RefreshPending() {
		res, err := child(ctx, force, sawFP)
		if res.kept != nil {
			e.keptMu.Lock()
			e.kept = res.kept
			e.keptMu.Unlock()
		}
		// The child appended to the lineage file.
		if lerr := lin.Reload(); lerr != nil {
			e.Diag.Warn("cannot reload lineage", "err", lerr)
		}
		if err == nil && res.OAuth == nil {
			if l, rerr := credentials.Read(e.Cfg.CredentialsFile); rerr == nil && l.State == credentials.Usable {
				res.OAuth = l.OAuth
			}
		}
		if err == nil && res.Refreshed && res.OAuth != nil {
			// The child noted the new login's birth in its own memory: note
			// it here too, or the lead of a short-lived login is taken as
			// the full default and it is refreshed again at once.
			e.tokens.note(res.OAuth.AccessToken(), e.now())
		}
		return res, err
	}
	return e.refreshHere(ctx, lin, force, sawFP)
}

// refreshHere is Refresh in this process. sawFP is the fingerprint of the
// refresh token the caller saw ("" for none).
func (e *Engine) refreshHere(ctx context.Context, lin *Lineage, force bool, sawFP string) (RefreshResult, error) {
	lctx, cancel := context.WithTimeout(ctx, e.lockWait())
	defer cancel()
	ours, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Refresh)
	if err != nil {
		return RefreshResult{}, err
	}
	defer ours.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, e.Cfg.ClaudeConfigDir, e.claudeLockRecord())
	if err != nil {
		return RefreshResult{}, err
	}
	defer claude.Release()

	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return RefreshResult{}, err
	}
	if p, tok := e.keptRefresh(); p != nil {
		switch {
		case cur.State == credentials.Clobbered || cur.State == credentials.Usable && cur.OAuth.RefreshToken().Fingerprint() == p.SentFP:
			res, err := e.finishRefresh(ctx, claude, lin, cur, p, tok)
			if err != nil || !force {
				return res, err
			}
			// Forced (a 401, `refresh`): the kept answer's access token may
			// have expired while it waited. Go on with a real refresh of the
			// login it holds.
			if cur, err = credentials.Read(e.Cfg.CredentialsFile); err != nil {
				return res, err
			}
			sawFP = ""
		case cur.State == credentials.Usable:
			// The file moved on (a new login): the kept answer is for a
			// login that is no longer there.
			e.dropKept()
		}
		// No file (a logout): the answer stays kept, never written back.
	}
	if cur.State != credentials.Usable {
		if cur.Problem == nil {
			return RefreshResult{}, fmt.Errorf("no usable login to refresh (%s)", cur.State)
		}
		return RefreshResult{}, fmt.Errorf("no usable login to refresh (%s: %v)", cur.State, cur.Problem)
	}
	o := cur.OAuth
	if IsBackfill(o, e.readEnvToken(), e.now()) {
		return RefreshResult{OAuth: o, Message: "setup-token mode: nothing to refresh"}, nil
	}
	if sawFP != "" && o.RefreshToken().Fingerprint() != sawFP {
		return RefreshResult{OAuth: o, Message: "someone already refreshed"}, nil
	}
	if !force && e.now().Before(e.RefreshDue(o)) {
		return RefreshResult{OAuth: o, Message: "not due yet"}, nil
	}
	client := e.OAuth
	if client == nil {
		client = &oauth.Client{}
	}
	scopes, _ := o.Scopes()
	if lost := client.Narrowed(scopes); len(lost) > 0 {
		e.Log.Event(WARN, "CLAUDE_AUTH_OAUTH_SCOPES leaves out scopes this login holds (%s): the refresh narrows the login", strings.Join(lost, " "))
	}
	tok, err := client.Refresh(ctx, o.RefreshToken(), scopes)
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
	// Between the response and the rename this answer is the only copy of the
	// live refresh token: keep it, in memory and durably. A state dir that
	// cannot take it (full) does not stop the write of the file itself.
	p := &pendingRefresh{Response: tok.Raw, SentFP: o.RefreshToken().Fingerprint(), At: e.now()}
	if err := e.keepRefresh(p); err != nil {
		e.Diag.Warn("cannot keep the refresh response in the state dir; writing the credentials file directly", "err", err)
	}
	return e.finishRefresh(ctx, claude, lin, cur, p, tok)
}

// finishRefresh writes a refresh answer into the file (compare-and-swap on the
// refresh token it was sent for, or over a file left unusable), under the
// storage-write lock, and forgets the kept answer once it is in.
func (e *Engine) finishRefresh(ctx context.Context, claude *lock.ClaudeRefresh, lin *Lineage, cur *credentials.Local, p *pendingRefresh, tok *oauth.Token) (RefreshResult, error) {
	base, sent := cur.OAuth, credentials.Secret("")
	if base == nil {
		base, _ = credentials.ParseOAuth([]byte(`{}`))
	} else {
		sent = base.RefreshToken()
	}
	next, err := mergeToken(base, tok, p.At)
	if err != nil {
		return RefreshResult{}, err
	}
	if err := lin.Observe(next.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
	werr := claude.WithStorageWrite(ctx, func() error { return e.casWrite(sent, next) })
	if errors.Is(werr, errLoggedOut) {
		return RefreshResult{OAuth: next}, fmt.Errorf("%w: %v", ErrNotWritten, werr)
	}
	if errors.Is(werr, ErrChanged) {
		e.dropKept()
		return RefreshResult{}, fmt.Errorf("write the refreshed login: %w", werr)
	}
	if werr != nil {
		return RefreshResult{OAuth: next}, fmt.Errorf("%w (the new login is kept in %s): %v", ErrNotWritten, e.pendingRefreshPath(), werr)
	}
	e.dropKept()
	e.tokens.note(next.AccessToken(), p.At)
	return RefreshResult{Refreshed: true, OAuth: next, Message: "refreshed; valid until " + next.ExpiresAt().Format(time.RFC3339)}, nil
}

// RefreshPending says whether a refresh answer is waiting to be written to the
// credentials file (then the file's refresh token is spent: refresh now).
func (e *Engine) RefreshPending() bool {
	p, _ := e.keptRefresh()
	return p != nil
}

// keptRefresh is the refresh answer waiting to be written: the one in memory,
// else the one in the state dir (nil when none or unreadable).
func (e *Engine) keptRefresh() (*pendingRefresh, *oauth.Token) {
	e.keptMu.Lock()
	p := e.kept
	e.keptMu.Unlock()
	if p == nil {
		data, err := os.ReadFile(e.pendingRefreshPath())
		if err != nil {
			return nil, nil
		}
		p = &pendingRefresh{}
		if json.Unmarshal(data, p) != nil {
			return nil, nil
		}
	}
	tok, err := oauth.ParseToken(p.Response)
	if err != nil {
		return nil, nil
	}
	return p, tok
}

func (e *Engine) keepRefresh(p *pendingRefresh) error {
	e.keptMu.Lock()
	e.kept = p
	e.keptMu.Unlock()
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(e.Cfg.StateDir, 0o700); err != nil {
		return err
	}
	// Visible before the fsyncs: until it is, a kill loses the login.
	return atomicfile.WriteVisibleFirst(e.pendingRefreshPath(), data, 0o600)
}

func (e *Engine) dropKept() {
	e.keptMu.Lock()
	e.kept = nil
	e.keptMu.Unlock()
	_ = os.Remove(e.pendingRefreshPath())
}

// errLoggedOut: the credentials file is gone (`claude auth logout` deletes
// it); a refresh answer must not bring it back.
var errLoggedOut = errors.New("the credentials file was removed (a logout?); not writing a login back into it")

// casWrite writes next over the file if it still holds the refresh token sent
// (or holds something unusable: ours is then the only live login). A removed
// file is a logout and stays removed.
func (e *Engine) casWrite(sent credentials.Secret, next *credentials.OAuth) error {
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return err
	}
	if cur.State == credentials.Usable && cur.OAuth.RefreshToken() != sent {
		return fmt.Errorf("%w: the file holds another login now", ErrChanged)
	}
	if cur.State == credentials.Missing {
		return errLoggedOut
	}
	data, err := cur.Base().WithOAuth(next).Marshal()
	if err != nil {
		return err
	}
	target, err := atomicfile.Write(e.Cfg.CredentialsFile, data, credentials.FileMode)
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
	return e.keepRefresh(&pendingRefresh{Response: tok.Raw, SentFP: sent.Fingerprint(), At: now})
}

// ApplyPendingRefresh finishes a refresh that crashed between the token
// endpoint's answer and the rename: if the file still holds the refresh token
// that was sent (or nothing usable), the saved response goes in.
// The result carries the new login when it could not be written (a logout
// meanwhile, a full disk: ErrNotWritten), for the caller to back it up.
func (e *Engine) ApplyPendingRefresh(ctx context.Context, lin *Lineage) (RefreshResult, error) {
	data, err := os.ReadFile(e.pendingRefreshPath())
	if errors.Is(err, os.ErrNotExist) {
		return RefreshResult{}, nil
	}
	if err != nil {
		return RefreshResult{}, err
	}
	var p pendingRefresh
	tok, perr := (*oauth.Token)(nil), json.Unmarshal(data, &p)
	if perr == nil {
		tok, perr = oauth.ParseToken(p.Response)
	}
	if perr != nil {
		_ = os.Rename(e.pendingRefreshPath(), e.pendingRefreshPath()+".unreadable")
		return RefreshResult{}, fmt.Errorf("pending refresh record is unreadable; kept as %s.unreadable", e.pendingRefreshPath())
	}
	lctx, cancel := context.WithTimeout(ctx, e.lockWait())
	defer cancel()
	ours, err := lock.Wait(lctx, e.Cfg.StateDir, lock.Refresh)
	if err != nil {
		return RefreshResult{}, err
	}
	defer ours.Unlock()
	claude, err := lock.AcquireClaudeRefresh(lctx, e.Cfg.ClaudeConfigDir, e.claudeLockRecord())
	if err != nil {
		return RefreshResult{}, err
	}
	defer claude.Release()
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return RefreshResult{}, err
	}
	if cur.State != credentials.Usable || cur.OAuth.RefreshToken().Fingerprint() == p.SentFP {
		return e.finishRefresh(ctx, claude, lin, cur, &p, tok)
	}
	e.dropKept()
	return RefreshResult{}, nil
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
	// The login as it is now: if another refresher rotates it while we wait
	// for the locks (many `refresh` at once, the agent), that was the refresh.
	saw := credentials.Secret("")
	cur, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return e.finish(nil, fail("%v", err))
	}
	switch {
	case cur.State == credentials.Usable:
		saw = cur.OAuth.RefreshToken()
	case cur.State == credentials.Clobbered && !e.RefreshPending():
		// A clobbered file has nothing to present: restore it the way a pass
		// does (the latest backup, if it holds a different login), then
		// refresh what was restored. A kept refresh answer is written by
		// Refresh itself instead.
		if o := e.restoreClobbered(ctx, lin, cur, vs); o != nil {
			return e.finish(nil, *o)
		}
	case cur.State == credentials.Missing || cur.State == credentials.NoLogin:
		return e.finish(nil, Outcome{Status: WARN, Code: ExitLoggedOut, Message: "refresh: no login to refresh at " + cur.Path +
			" (a logout, or a new home). To get back in: `claude auth login`, or `claude-auth-sync restore` to restore the last backup"})
	}
	res, err := e.Refresh(ctx, lin, true, saw)
	switch {
	case errors.Is(err, ErrNotWritten) && res.OAuth != nil:
		// The new login lives only in memory and pending-refresh: Vault too.
		o := e.afterGoodCheck(ctx, newRecord(), lin, res.OAuth, vs, "the new login")
		return e.finish(nil, fail("refresh: %v; %s", err, o.Message))
	case errors.Is(err, ErrLoginDead):
		return e.finish(nil, fail("refresh: %v; %s", err, LoginHint()))
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
