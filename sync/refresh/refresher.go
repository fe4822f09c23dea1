// Package refresh is the single refresher: the one place a user's OAuth
// logins are rotated at their token endpoints. It takes the locks every
// refresh and every write of the credentials file takes (our refresh flock,
// then the login's own lock directories), keeps the token endpoint's answer
// durably before anything else (a kill at any point loses no live refresh
// token), writes it into the file by compare-and-swap, knows when each login
// is due, and can run the token request in a child process that outlives the
// agent.
//
// It is generic over a token family (Family): what the file holds of one kind
// of login, the locks its other writers take, its token endpoint, and how an
// answer goes back into the file. The Claude login (claudeAiOauth, see
// ClaudeLogin) is the first; a per-server mcpOAuth entry is another family
// with its own lock, endpoint and client authentication.
package refresh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// Login is what the refresher needs of one family's login: its tokens, when
// the access token expires, and its JSON (for the refresh child's report).
type Login interface {
	comparable // the zero value (a nil pointer) is "no login"
	AccessToken() credentials.Secret
	RefreshToken() credentials.Secret
	ExpiresAt() time.Time
	Compact() []byte
}

// Current is what the credentials file holds of a family's login now.
type Current[L Login] struct {
	State   credentials.State // of the file, for this family: Missing is a logout
	Problem error             // why the login is not usable, when known
	Login   L                 // the login, when the file holds one (even an unusable one)
}

// Family is one kind of login the refresher rotates. Its methods touch only
// the family's own keys of the credentials file.
type Family[L Login] interface {
	// KeptName is the state-dir file the family's kept answer lives in.
	KeptName() string
	// Flock is the name of our flock (in the state dir) that orders our own
	// processes' refreshes of this family.
	Flock() string
	// Lock takes the locks the family's other writers take, after our
	// refresh flock (ctx bounds the wait). It returns
	// lock.ErrClaudeLocksUnavailable when they cannot exist.
	Lock(ctx context.Context) (Held, error)
	// Read is the family's login as the file holds it now.
	Read() (Current[L], error)
	// Idle says why l needs no token request whatever its expiry ("" when
	// it may have one).
	Idle(l L) string
	// Request asks the token endpoint to rotate l; oauth.ErrInvalidGrant
	// when it refuses the refresh token.
	Request(ctx context.Context, l L) (*oauth.Token, error)
	// Merge puts an answer issued at `at` into base (zero: the file held no
	// login), keeping every other field.
	Merge(base L, tok *oauth.Token, at time.Time) (L, error)
	// Write puts next into the file if it still holds the refresh token
	// sent, or no usable login: ErrChanged when it holds another,
	// ErrLoggedOut when the file is gone.
	Write(sent credentials.Secret, next L) error
	// Parse reads a login back from its Compact form.
	Parse(data []byte) (L, error)
	// Answer reads a token endpoint's answer back (a kept one).
	Answer(raw []byte) (*oauth.Token, error)
}

// Held is a family's locks while held: a write of the file takes the storage
// write lock inside them.
type Held interface {
	WithStorageWrite(ctx context.Context, fn func() error) error
	Release()
}

// Witness is told of each refresh token a refresh brings into being, before
// the file holds it (the lineage, which orders them), and reloads what a
// refresh child told its own.
type Witness interface {
	Observe(credentials.Secret) error
	Reload() error
}

// ErrLoginDead: the token endpoint answered invalid_grant and the file holds no
// other login: only an interactive login helps.
var ErrLoginDead = errors.New("the login is dead")

// ErrChanged: the credentials file changed meanwhile; nothing was written.
var ErrChanged = errors.New("credentials file changed meanwhile")

// ErrLoggedOut: the credentials file is gone (`claude auth logout` deletes
// it); a refresh answer must not bring it back.
var ErrLoggedOut = errors.New("the credentials file was removed (a logout?); not writing a login back into it")

// kind names a class of refresh errors by its sentinel.
type kind struct {
	name string
	err  error
}

// laterKinds are the refresh errors that say nothing about the login: the
// lock directories cannot be made, the token endpoint is unavailable, time ran
// out. A later try may work, so nothing is restored after them.
var laterKinds = []kind{
	{"locks", lock.ErrClaudeLocksUnavailable},
	{"transient", oauth.ErrTransient},
	{"timeout", context.DeadlineExceeded},
}

// TryLater says whether a refresh failed with an error that says nothing
// about the login (locks, a transient answer, time ran out).
func TryLater(err error) bool {
	for _, k := range laterKinds {
		if errors.Is(err, k.err) {
			return true
		}
	}
	return false
}

// Result says what a refresh did.
type Result[L Login] struct {
	Refreshed bool // we rotated the token
	OAuth     L    // the login now in the file (zero when unknown)
	Message   string
	kept      *kept // a refresh child's kept answer (ErrNotWritten)
}

// Config is what a Refresher is built from.
type Config[L Login] struct {
	Family   Family[L]
	StateDir string // our refresh flock and the kept answer
	Clock    clock.Clock
	Diag     *slog.Logger
	LockWait time.Duration // how long a writer waits for the locks (0: 30 s)
	// Lead is how long before expiry a login is due; LeadExplicit says the
	// user set it (then it is honoured down to the login's lifetime, else
	// capped at half of it).
	Lead         time.Duration
	LeadExplicit bool
}

// Refresher is the single refresher of one family.
type Refresher[L Login] struct {
	fam          Family[L]
	stateDir     string
	diag         *slog.Logger
	lockWait     time.Duration
	lead         time.Duration
	leadExplicit bool

	// Via, when set, makes every token request in the agent's refresh child
	// (see InChild), which survives the agent being killed mid-request. Set
	// once, before use.
	Via func(ctx context.Context, force bool, sawFP string) (Result[L], error)

	mu    sync.Mutex
	clock clock.Clock
	// kept is an answer not yet in the credentials file (also in the state
	// dir when it can hold it).
	kept *kept
	// tokens: when this process saw each access token issued.
	tokens lifetimes
}

// New builds the refresher of c.Family.
func New[L Login](c Config[L]) *Refresher[L] {
	if c.Clock == nil {
		c.Clock = clock.Real
	}
	if c.Diag == nil {
		c.Diag = slog.New(slog.DiscardHandler)
	}
	return &Refresher[L]{fam: c.Family, stateDir: c.StateDir, clock: c.Clock, diag: c.Diag, lockWait: c.LockWait,
		lead: c.Lead, leadExplicit: c.LeadExplicit}
}

// SetClock makes c the refresher's clock (tests and the e2e harness).
func (r *Refresher[L]) SetClock(c clock.Clock) {
	r.mu.Lock()
	r.clock = c
	r.mu.Unlock()
}

func (r *Refresher[L]) now() time.Time {
	r.mu.Lock()
	c := r.clock
	r.mu.Unlock()
	return c.Now()
}

func (r *Refresher[L]) keptAnswer() *kept {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kept
}

func (r *Refresher[L]) setKept(p *kept) {
	r.mu.Lock()
	r.kept = p
	r.mu.Unlock()
}

// Refresh is one brokered refresh, the single refresher's step. It takes our
// refresh flock, then the family's locks (for the Claude login
// .oauth_refresh.lock and <realpath>.lock), re-reads the file under them and
// stops if someone already refreshed (the file no longer holds saw, when
// given) or the token is not due (unless force). It POSTs the refresh, keeps
// the response durably in the state dir first, then writes the file under
// .storage-write.lock with compare-and-swap on the refresh token it sent. The
// family's locks are held only for the re-read, the POST and the write. A
// response kept from an earlier refresh that never reached the file (a crash,
// a full disk) is written first, without a new POST: its refresh token is the
// live one, the file's is spent.
func (r *Refresher[L]) Refresh(ctx context.Context, w Witness, force bool, saw credentials.Secret) (Result[L], error) {
	sawFP := ""
	if saw != "" {
		sawFP = saw.Fingerprint()
	}
	// In the agent every token request goes through the refresh child, so a
	// kill of the agent cannot lose an answer in flight. A kept answer is
	// written here: no request, and it may live only in this memory.
	if r.Via != nil && !r.Pending() {
		return r.refreshViaChild(ctx, w, force, sawFP)
	}
	return r.refreshHere(ctx, w, force, sawFP)
}

// refreshHere is Refresh in this process. sawFP is the fingerprint of the
// refresh token the caller saw ("" for none).
func (r *Refresher[L]) refreshHere(ctx context.Context, w Witness, force bool, sawFP string) (res Result[L], err error) {
	err = r.underLocks(ctx, false, func(_ context.Context, held Held) error {
		res, err = r.refreshLocked(ctx, held, w, force, sawFP)
		return err
	})
	return res, err
}

// refreshLocked is refreshHere under the locks: a kept answer first, then a
// token request if one is still needed.
func (r *Refresher[L]) refreshLocked(ctx context.Context, held Held, w Witness, force bool, sawFP string) (Result[L], error) {
	cur, err := r.fam.Read()
	if err != nil {
		return Result[L]{}, err
	}
	if p, tok := r.keptRefresh(); p != nil {
		switch {
		case cur.State == credentials.Clobbered || cur.State == credentials.Usable && cur.Login.RefreshToken().Fingerprint() == p.SentFP:
			res, err := r.finish(ctx, held, w, cur, p, tok)
			if err != nil || !force {
				return res, err
			}
			// Forced (a 401, `refresh`): the kept answer's access token may
			// have expired while it waited. Go on with a real refresh of the
			// login it holds.
			if cur, err = r.fam.Read(); err != nil {
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
	return r.post(ctx, held, w, cur)
}

// needless says when the file as it is needs no token request, or cannot
// have one: no usable login, an idle one (a setup-token backfill), someone
// already refreshed (the file no longer holds the refresh token sawFP), not
// due.
func (r *Refresher[L]) needless(cur Current[L], force bool, sawFP string) (Result[L], bool, error) {
	if cur.State != credentials.Usable {
		if cur.Problem == nil {
			return Result[L]{}, true, fmt.Errorf("no usable login to refresh (%s)", cur.State)
		}
		return Result[L]{}, true, fmt.Errorf("no usable login to refresh (%s: %v)", cur.State, cur.Problem)
	}
	o := cur.Login
	if why := r.fam.Idle(o); why != "" {
		return Result[L]{OAuth: o, Message: why}, true, nil
	}
	switch {
	case sawFP != "" && o.RefreshToken().Fingerprint() != sawFP:
		return Result[L]{OAuth: o, Message: "someone already refreshed"}, true, nil
	case !force && r.now().Before(r.Due(o)):
		return Result[L]{OAuth: o, Message: "not due yet"}, true, nil
	}
	return Result[L]{}, false, nil
}

// post asks the token endpoint to rotate the file's login, keeps the answer,
// then writes it into the file.
func (r *Refresher[L]) post(ctx context.Context, held Held, w Witness, cur Current[L]) (Result[L], error) {
	o := cur.Login
	tok, err := r.fam.Request(ctx, o)
	if errors.Is(err, oauth.ErrInvalidGrant) {
		// Someone may have rotated without our locks (an old Claude): look again.
		if again, rerr := r.fam.Read(); rerr == nil && again.State == credentials.Usable &&
			again.Login.RefreshToken() != o.RefreshToken() {
			return Result[L]{OAuth: again.Login, Message: "rotated by someone else meanwhile"}, nil
		}
		return Result[L]{}, fmt.Errorf("%w: the token endpoint answered %v", ErrLoginDead, err)
	}
	if err != nil {
		return Result[L]{}, fmt.Errorf("refresh: %w", err)
	}
	// Between the response and the rename this answer is the only copy of the
	// live refresh token: keep it, in memory and durably. A state dir that
	// cannot take it (full) does not stop the write of the file itself.
	p := &kept{Response: tok.Raw, SentFP: o.RefreshToken().Fingerprint(), At: r.now()}
	if err := r.keep(p); err != nil {
		r.diag.Warn("cannot keep the refresh response in the state dir; writing the credentials file directly", "err", err)
	}
	return r.finish(ctx, held, w, cur, p, tok)
}
