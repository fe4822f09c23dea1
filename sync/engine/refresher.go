package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// ErrLoginDead: the token endpoint answered invalid_grant and the file holds no
// other login: only an interactive login helps.
var ErrLoginDead = errors.New("the login is dead")

// refreshKind names a class of refresh errors by its sentinel.
type refreshKind struct {
	name string
	err  error
}

// laterKinds are the refresh errors that say nothing about the login: Claude's
// lock directories cannot be made, the token endpoint is unavailable, time ran
// out. A later try may work, so nothing is restored after them.
var laterKinds = []refreshKind{
	{"locks", lock.ErrClaudeLocksUnavailable},
	{"transient", oauth.ErrTransient},
	{"timeout", context.DeadlineExceeded},
}

// tryLater says whether a refresh failed with one of laterKinds.
func tryLater(err error) bool {
	for _, k := range laterKinds {
		if errors.Is(err, k.err) {
			return true
		}
	}
	return false
}

// RefreshResult says what a brokered refresh did.
type RefreshResult struct {
	Refreshed bool               // we rotated the token
	OAuth     *credentials.OAuth // the login now in the file (nil when unknown)
	Message   string
	kept      *pendingRefresh // a refresh child's kept answer (ErrNotWritten)
}

// refresher is the single refresher: it owns the locks every write of the
// credentials file takes (our refresh flock, Claude's lock directories), asks
// the token endpoint (here, or through the agent's refresh child), keeps an
// answer until the file holds it, and knows when the tokens it saw were
// issued. It is made from the Engine's settings at each use, since cmd and
// tests set them after New; what it remembers between refreshes is the
// Engine's refreshMemory.
type refresher struct {
	cfg      *config.Config
	clock    clock.Clock
	diag     *slog.Logger
	log      *eventlog.EventLog
	client   *oauth.Client
	lockWait time.Duration
	// via runs the token request in the agent's refresh child (Engine.RefreshVia).
	via func(ctx context.Context, force bool, sawFP string) (RefreshResult, error)
	mem *refreshMemory
}

// refreshMemory is what one Engine's refresher remembers between refreshes.
type refreshMemory struct {
	// kept is a refresh answer not yet in the credentials file (also in
	// pending-refresh when the state dir can hold it).
	mu   sync.Mutex
	kept *pendingRefresh
	// tokens: when this process saw each access token issued.
	tokens lifetimes
}

func (m *refreshMemory) keptAnswer() *pendingRefresh {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.kept
}

func (m *refreshMemory) setKept(p *pendingRefresh) {
	m.mu.Lock()
	m.kept = p
	m.mu.Unlock()
}

func (e *Engine) refresher() *refresher {
	return &refresher{cfg: e.Cfg, clock: e.Clock, diag: e.Diag, log: e.Log, client: e.OAuth,
		lockWait: e.LockWait, via: e.RefreshVia, mem: &e.refreshMem}
}

func (r *refresher) now() time.Time { return r.clock.Now() }

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
	return e.refresher().refresh(ctx, lin, force, saw)
}

func (r *refresher) refresh(ctx context.Context, lin *Lineage, force bool, saw credentials.Secret) (RefreshResult, error) {
	sawFP := ""
	if saw != "" {
		sawFP = saw.Fingerprint()
	}
	// In the agent every token request goes through the refresh child, so a
	// kill of the agent cannot lose an answer in flight. A kept answer is
	// written here: no request, and it may live only in this memory.
	if r.via != nil && !r.pending() {
		return r.refreshViaChild(ctx, lin, force, sawFP)
	}
	return r.refreshHere(ctx, lin, force, sawFP)
}

// refreshHere is Refresh in this process. sawFP is the fingerprint of the
// refresh token the caller saw ("" for none).
func (r *refresher) refreshHere(ctx context.Context, lin *Lineage, force bool, sawFP string) (res RefreshResult, err error) {
	err = r.underLocks(ctx, false, func(_ context.Context, claude *lock.ClaudeRefresh) error {
		res, err = r.refreshLocked(ctx, claude, lin, force, sawFP)
		return err
	})
	return res, err
}

// refreshLocked is refreshHere under the locks: a kept answer first, then a
// token request if one is still needed.
func (r *refresher) refreshLocked(ctx context.Context, claude *lock.ClaudeRefresh, lin *Lineage, force bool, sawFP string) (RefreshResult, error) {
	cur, err := credentials.Read(r.cfg.CredentialsFile)
	if err != nil {
		return RefreshResult{}, err
	}
	if p, tok := r.keptRefresh(); p != nil {
		switch {
		case cur.State == credentials.Clobbered || cur.State == credentials.Usable && cur.OAuth.RefreshToken().Fingerprint() == p.SentFP:
			res, err := r.finishRefresh(ctx, claude, lin, cur, p, tok)
			if err != nil || !force {
				return res, err
			}
			// Forced (a 401, `refresh`): the kept answer's access token may
			// have expired while it waited. Go on with a real refresh of the
			// login it holds.
			if cur, err = credentials.Read(r.cfg.CredentialsFile); err != nil {
				return res, err
			}
			sawFP = ""
		case cur.State == credentials.Usable:
			// The file moved on (a new login): the kept answer is for a
			// login that is no longer there.
			r.dropKept()
		}
		// No file (a logout): the answer stays kept, never written back.
	}
	if res, done, err := r.needless(cur, force, sawFP); done {
		return res, err
	}
	return r.post(ctx, claude, lin, cur)
}

// needless says when the file as it is needs no token request, or cannot
// have one: no usable login, a setup-token backfill, someone already
// refreshed (the file no longer holds the refresh token sawFP), not due.
func (r *refresher) needless(cur *credentials.Local, force bool, sawFP string) (RefreshResult, bool, error) {
	if cur.State != credentials.Usable {
		if cur.Problem == nil {
			return RefreshResult{}, true, fmt.Errorf("no usable login to refresh (%s)", cur.State)
		}
		return RefreshResult{}, true, fmt.Errorf("no usable login to refresh (%s: %v)", cur.State, cur.Problem)
	}
	o := cur.OAuth
	switch {
	case IsBackfill(o, readEnvToken(r.cfg.TokenEnvFile), r.now()):
		return RefreshResult{OAuth: o, Message: "setup-token mode: nothing to refresh"}, true, nil
	case sawFP != "" && o.RefreshToken().Fingerprint() != sawFP:
		return RefreshResult{OAuth: o, Message: "someone already refreshed"}, true, nil
	case !force && r.now().Before(r.due(o)):
		return RefreshResult{OAuth: o, Message: "not due yet"}, true, nil
	}
	return RefreshResult{}, false, nil
}

// post asks the token endpoint to rotate the file's login, keeps the answer,
// then writes it into the file.
func (r *refresher) post(ctx context.Context, claude *lock.ClaudeRefresh, lin *Lineage, cur *credentials.Local) (RefreshResult, error) {
	o := cur.OAuth
	client := r.client
	if client == nil {
		client = &oauth.Client{}
	}
	scopes, _ := o.Scopes()
	if lost := client.Narrowed(scopes); len(lost) > 0 {
		r.log.Event(eventlog.WARN, "CLAUDE_AUTH_OAUTH_SCOPES leaves out scopes this login holds (%s): the refresh narrows the login", strings.Join(lost, " "))
	}
	tok, err := client.Refresh(ctx, o.RefreshToken(), scopes)
	if errors.Is(err, oauth.ErrInvalidGrant) {
		// Someone may have rotated without our locks (an old Claude): look again.
		if again, rerr := credentials.Read(r.cfg.CredentialsFile); rerr == nil && again.State == credentials.Usable &&
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
	p := &pendingRefresh{Response: tok.Raw, SentFP: o.RefreshToken().Fingerprint(), At: r.now()}
	if err := r.keep(p); err != nil {
		r.diag.Warn("cannot keep the refresh response in the state dir; writing the credentials file directly", "err", err)
	}
	return r.finishRefresh(ctx, claude, lin, cur, p, tok)
}
