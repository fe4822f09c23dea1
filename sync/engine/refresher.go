package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
	kept      *pendingRefresh // a refresh child's kept answer (ErrNotWritten)
}

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
