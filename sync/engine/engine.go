// Package engine is the engine of claude-auth-sync: the sync pass, restore and
// status, built from the credentials model, the store, the inference check and
// our locks. The commands in cmd/ only parse flags and call it.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// Exit codes, decided here once.
const (
	ExitOK        = 0 // OK, SKIP, RECOVERED, setup-token mode
	ExitFail      = 1 // FAIL: unusable login, foreign token, 403
	ExitUsage     = 2 // bad flags or arguments
	ExitLoggedOut = 3 // WARN: no login in the file (logout or new home)
	// ExitAgentRunning: `run` found another agent holding this user's agent
	// lock (a user unit and a template unit for one user). Units list it in
	// RestartPreventExitStatus= so it is not retried every 10 s forever.
	ExitAgentRunning = 4
	ExitTempFail     = 75 // WARN: login fine but backup pending, or check could not run
	ExitConfig       = 78 // bad configuration
)

// Outcome is the end of a command: the status word, the exit code, one line.
type Outcome struct {
	Status  Status
	Code    int
	Message string
}

// Checker runs the inference check (check.Runner in production).
type Checker interface {
	Run(ctx context.Context, extraEnv ...string) check.Result
}

// Engine ties the pieces together for one user.
type Engine struct {
	Cfg     *config.Config
	Store   store.Store
	Vault   *store.Vault // nil with the local store
	Log     *EventLog
	Checker Checker
	Diag    *slog.Logger
	// Clock is the one clock of the engine, its event log and the agent.
	Clock clock.Clock

	// Interactive: a person watches the console (a command at a terminal),
	// so a step that can take long says so before it starts.
	Interactive bool

	// LockWait bounds how long a writer waits for the credentials-file lock.
	LockWait time.Duration
	// OAuth is the refresh client (Claude's token endpoint by default).
	OAuth *oauth.Client

	tokens lifetimes

	// kept is a refresh answer not yet in the credentials file (also in
	// pending-refresh when the state dir can hold it).
	keptMu sync.Mutex
	kept   *pendingRefresh

	// RefreshVia, when set, makes every token request (the agent's and its
	// passes' forced refreshes): ChildRefresher runs them in a child process
	// that survives the agent being killed mid-request. Set once, before use.
	RefreshVia func(ctx context.Context, force bool, sawFP string) (RefreshResult, error)

	metricsMu  sync.Mutex
	metricsErr string // the metrics error last reported (reported once)
}

// New builds the engine from the config. When the config acts for another
// account (root's --user), the process first takes that account's identity,
// so nothing below reads, writes or runs anything as root.
func New(cfg *config.Config, console *slog.Logger, consoleIsJournal bool) (*Engine, error) {
	if err := cfg.TakeIdentity(); err != nil {
		return nil, err
	}
	e := &Engine{
		Cfg:   cfg,
		Diag:  console,
		Clock: clock.Real,
		Log: &EventLog{User: cfg.User, LogFile: cfg.LogFile, JournalSocket: cfg.JournalSocket,
			Console: console, ConsoleIsJournal: consoleIsJournal, Clock: clock.Real},
		Checker: &check.Runner{Timeout: cfg.CheckTimeout, Env: checkEnv(cfg), Dir: cfg.Home,
			Locate: func() (string, string) { l := cfg.FindClaude(); return l.Path, l.NotFound() }},
		OAuth: &oauth.Client{TokenURL: cfg.OAuthTokenURL, ClientID: cfg.OAuthClientID, Scopes: cfg.OAuthScopes,
			UserAgent: cfg.OAuthUserAgent},
	}
	if cfg.Store == "vault" {
		v, err := store.NewVault(store.VaultConfig{Address: cfg.VaultAddr, Mount: cfg.VaultMount, Path: cfg.VaultPath,
			TokenFile: cfg.VaultTokenFile, User: cfg.User, Timeout: cfg.VaultTimeout})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", config.ErrConfig, err)
		}
		e.Vault, e.Store = v, v
	} else {
		e.Store = store.NewFile(cfg.LocalStoreFile)
	}
	e.Log.AfterEvent = e.MetricsEvent
	return e, nil
}

// checkEnv is the environment for the claude child: ours, minus anything that
// would make it use another credential than the one we are checking.
func checkEnv(cfg *config.Config) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := cut(kv, '=')
		switch k {
		case "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "VAULT_TOKEN":
			continue
		}
		env = append(env, kv)
	}
	if os.Getenv("CLAUDE_CONFIG_DIR") == "" && cfg.ClaudeConfigDir != filepath.Join(cfg.Home, ".claude") {
		env = append(env, "CLAUDE_CONFIG_DIR="+cfg.ClaudeConfigDir)
	}
	return env
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func (e *Engine) now() time.Time { return e.Clock.Now() }

// SetClock makes c the clock of the engine and its event log.
func (e *Engine) SetClock(c clock.Clock) {
	e.Clock = c
	if e.Log != nil {
		e.Log.Clock = c
	}
}

func (e *Engine) recordPath() string { return filepath.Join(e.Cfg.StateDir, "state.json") }

// LoadRecord reads state.json (an empty record when absent or unreadable).
func (e *Engine) LoadRecord() *Record { return loadRecord(e.recordPath()) }

// MergeRecord writes r's set fields into state.json.
func (e *Engine) MergeRecord(r *Record) error { return mergeRecord(e.recordPath(), r) }

// OpenLineage loads this user's lineage (the order of the logins seen here).
func (e *Engine) OpenLineage() (*Lineage, error) { return LoadLineage(e.lineagePath()) }
func (e *Engine) lineagePath() string            { return filepath.Join(e.Cfg.StateDir, "lineage") }

// finish logs the outcome's event, remembers it and returns it.
func (e *Engine) finish(rec *Record, o Outcome) Outcome {
	e.Log.Event(o.Status, "%s", o.Message)
	if rec != nil {
		rec.LastPass = &PassRecord{At: e.now(), Status: o.Status, Message: check.Mask(o.Message)}
		if rec.LastCheck != nil {
			sub := e.CurrentSubject(context.Background(), !rec.storeDown)
			rec.LastCheck.Subject = &sub
		}
		if err := mergeRecord(e.recordPath(), rec); err != nil {
			e.Diag.Warn("cannot save state", "path", e.recordPath(), "err", err)
		}
	}
	return o
}

// CurrentSubject reads the file and, with readStore, the store's document
// (bounded) for what a check now would be about.
func (e *Engine) CurrentSubject(ctx context.Context, readStore bool) CheckSubject {
	local, _ := credentials.Read(e.Cfg.CredentialsFile)
	if !readStore {
		return SubjectOf(local, nil)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	doc, err := e.Store.Read(ctx)
	if err != nil {
		doc = nil
	}
	return SubjectOf(local, doc)
}

// TightenLoose sets a credentials file other users could read to 0600, with a
// WARN that names it (and says what to do).
func (e *Engine) TightenLoose(l *credentials.Local) {
	old, err := credentials.TightenMode(l)
	msg := ""
	switch {
	case err != nil:
		msg = fmt.Sprintf("credentials file %s is open to other users (mode %04o) and could not be set to 0600: %v", l.Target, l.Mode.Perm(), err)
	case old != 0:
		msg = fmt.Sprintf("credentials file %s was open to other users (mode %04o); set it to 0600. Whoever read it meanwhile holds the login: if that may have happened, log in again (`claude auth login`)", l.Target, old)
	}
	if msg != "" {
		e.Log.Event(WARN, "%s", msg)
	}
}

// loginDeadlineWarning: how long before refreshTokenExpiresAt passes warn.
const loginDeadlineWarning = 7 * 24 * time.Hour

func fail(format string, args ...any) Outcome {
	return Outcome{Status: FAIL, Code: ExitFail, Message: fmt.Sprintf(format, args...)}
}

func LoginHint() string {
	return "log in again with `claude auth login` (or `claude /login`), then run `claude-auth-sync sync`"
}

// vaultState is what preparing the store found.
type vaultState struct {
	doc       *store.Doc // nil when the store could not be read
	down      error      // non-nil when the store is unreachable
	tokenInfo *store.TokenInfo
}

// prepare runs step 2 of a pass: the token routine and one read of the document.
// A hard failure (token file, foreign token, 403) is returned as an Outcome.
func (e *Engine) prepare(ctx context.Context) (vaultState, *Outcome) {
	var vs vaultState
	if e.Vault != nil {
		info, err := e.Vault.Prepare(ctx)
		switch {
		case err == nil:
			vs.tokenInfo = &info
		case errors.Is(err, store.ErrUnreachable):
			vs.down = err
			return vs, nil
		case errors.Is(err, store.ErrMisconfigured):
			o := Outcome{Status: FAIL, Code: ExitConfig, Message: err.Error()}
			return vs, &o
		default:
			o := fail("vault token: %v", err)
			return vs, &o
		}
	}
	doc, err := e.Store.Read(ctx)
	switch {
	case err == nil:
		vs.doc = doc
	case errors.Is(err, store.ErrUnreachable):
		vs.down = err
	default:
		o := fail("read backup: %v", err)
		return vs, &o
	}
	return vs, nil
}

// PassOptions change how a pass meets a clobbered file.
type PassOptions struct {
	// AwaitRestore, in the agent, leaves a clobbered file to the agent's
	// backup worker and waits for it: the worker also knows a newer login
	// not yet in the backup, which a pass's read of the backup does not (two
	// restorers raced, and the pass could put back an older, spent login).
	// It returns the file once usable, nil if it did not become usable.
	AwaitRestore func(ctx context.Context) *credentials.Local
}

// Pass is one `sync`: lock, prepare Vault, setup-token mode, local state, check,
// then backup or the failure rules.
func (e *Engine) Pass(ctx context.Context) Outcome { return e.PassWith(ctx, PassOptions{}) }

// PassWith is Pass with options (the agent's).
func (e *Engine) PassWith(ctx context.Context, opt PassOptions) Outcome {
	lk, err := lock.Try(e.Cfg.StateDir, lock.Sync)
	if errors.Is(err, lock.ErrHeld) {
		return e.finish(nil, Outcome{Status: SKIP, Code: ExitOK, Message: "another sync pass is running: " + err.Error()})
	}
	if err != nil {
		return e.finish(nil, fail("sync lock: %v", err))
	}
	defer lk.Unlock()

	rec := newRecord()
	lin, err := LoadLineage(e.lineagePath())
	if err != nil {
		return e.finish(rec, fail("lineage: %v", err))
	}
	e.Diag.Debug("store", "store", e.Store.Describe())

	vs, hard := e.prepare(ctx)
	if hard != nil {
		return e.finish(rec, *hard)
	}
	rec.storeDown = vs.down != nil

	if vs.doc != nil {
		if p := vs.doc.SetupTokenProblem(); p != "" {
			e.Log.Event(WARN, "setup-token mode ignored: %s at %s; staying with the rotating login. Store the token as a string (or remove the field)", p, e.Store.Describe())
		}
	}
	// Setup-token mode: Vault says so, or Vault is down and the env file says so.
	if vs.doc != nil && vs.doc.SetupToken() != "" {
		return e.finish(rec, e.setupTokenPass(ctx, rec, lin, vs.doc, vs.doc.SetupToken()))
	}
	if vs.doc == nil {
		if tok := e.readEnvToken(); tok != "" {
			o := e.setupTokenPass(ctx, rec, lin, nil, tok)
			if o.Code == ExitOK {
				o = Outcome{Status: WARN, Code: ExitTempFail, Message: o.Message + "; vault unreachable, setup-token mode not re-confirmed: " + vs.down.Error()}
			}
			return e.finish(rec, o)
		}
	} else if tok := e.readEnvToken(); tok != "" {
		if o := e.leaveSetupTokenMode(ctx, lin, vs.doc, tok); o != nil {
			e.Log.Event(o.Status, "%s", o.Message)
		}
	}

	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return e.finish(rec, fail("%v", err))
	}
	e.TightenLoose(local)
	switch local.State {
	case credentials.Missing, credentials.NoLogin:
		what := "no credentials file at " + local.Path
		if local.State == credentials.NoLogin {
			what = local.Path + " holds no claudeAiOauth login"
		}
		return e.finish(rec, Outcome{Status: WARN, Code: ExitLoggedOut, Message: what +
			" (a logout, or a new home); not restoring automatically. To get back in: `claude auth login`, or `claude-auth-sync restore` to restore the last backup"})
	case credentials.Clobbered:
		if opt.AwaitRestore != nil {
			cur := opt.AwaitRestore(ctx)
			if cur == nil {
				return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail,
					Message: fmt.Sprintf("credentials file is unusable (%v); the agent's restore has not fixed it yet (see its lines), the next pass looks again", local.Problem)})
			}
			local = cur
			break
		}
		o := e.restoreClobbered(ctx, lin, local, vs)
		if o != nil {
			return e.finish(rec, *o)
		}
		if local, err = credentials.Read(e.Cfg.CredentialsFile); err != nil {
			return e.finish(rec, fail("%v", err))
		}
	}
	if local.State != credentials.Usable {
		return e.finish(rec, fail("credentials file is still unusable: %v", local.Problem))
	}
	if err := lin.Observe(local.OAuth.RefreshToken()); err != nil {
		e.Diag.Warn("cannot record lineage", "err", err)
	}
	if d := local.OAuth.RefreshTokenExpiresAt(); !d.IsZero() && d.Sub(e.now()) < loginDeadlineWarning {
		e.Log.Event(WARN, "the login itself ends on %s (in %s): run `claude auth login` before then, then `claude-auth-sync sync`",
			d.Format(time.RFC3339), d.Sub(e.now()).Round(time.Hour))
	}

	res := e.runCheck(ctx, rec)
	if res.Kind == check.Auth || res.Kind == check.Dead {
		// A refresh by a running Claude between our read and the check revokes
		// the token the check used: that is not a dead login. If the file holds
		// a different usable login now, check that one instead, once.
		if cur, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable &&
			cur.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			e.Diag.Info("the login changed during the check; checking the new one")
			local = cur
			_ = lin.Observe(local.OAuth.RefreshToken())
			res = e.runCheck(ctx, rec)
		}
	}
	switch res.Kind {
	case check.OK:
		return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, local.OAuth, vs, "inference check passed"))
	case check.Transient, check.Unexpected:
		return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: res.Reason + "; not restoring, the next pass retries"})
	}

	// Auth failure. The first remedy is a forced refresh by the single
	// refresher; a restore comes only after the refresh gets invalid_grant.
	rr, rerr := e.Refresh(ctx, lin, true, local.OAuth.RefreshToken())
	switch {
	case rerr == nil:
		if rr.OAuth != nil && rr.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			first := res.Reason
			res = e.runCheck(ctx, rec)
			if res.Kind == check.OK {
				what := "inference check passed after a forced refresh (" + first + ")"
				if !rr.Refreshed {
					what = "inference check passed with the login someone else refreshed (" + first + ")"
				}
				return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, rr.OAuth, vs, what))
			}
			if res.Kind == check.Transient || res.Kind == check.Unexpected {
				return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "refreshed the login, then: " + res.Reason + "; the next pass retries"})
			}
			if cur, err := credentials.Read(e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable {
				if cur.OAuth.RefreshToken() != rr.OAuth.RefreshToken() {
					// Rotated again while we checked (each refresh revokes
					// the older access tokens): the check says nothing about
					// the login now in the file, and the refresh worked.
					return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "the login kept rotating during the check (" + res.Reason + "); not restoring, the next pass retries"})
				}
				local = cur
			}
		}
	case errors.Is(rerr, ErrNotWritten) && rr.OAuth != nil:
		// A new login the file cannot take (full file system): into Vault.
		o := e.afterGoodCheck(ctx, rec, lin, rr.OAuth, vs, "the new login")
		return e.finish(rec, fail("%s; a forced refresh got a new login, but %v; %s", res.Reason, rerr, o.Message))
	case errors.Is(rerr, ErrLoginDead):
		// Go on: a newer login in the backup is the only way back.
	case errors.Is(rerr, lock.ErrClaudeLocksUnavailable), errors.Is(rerr, oauth.ErrTransient), errors.Is(rerr, context.DeadlineExceeded):
		return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: res.Reason + "; a forced refresh could not run (" + rerr.Error() + "); not restoring, the next pass retries"})
	default:
		e.Diag.Warn("forced refresh failed", "err", rerr)
	}
	if vs.doc == nil {
		return e.finish(rec, fail("%s; cannot look for a backup: %v; %s", res.Reason, vs.down, LoginHint()))
	}
	vo, why := e.RestoreCandidate(lin, vs.doc, local)
	if vo == nil {
		return e.finish(rec, fail("%s; %s; %s", res.Reason, why, LoginHint()))
	}
	err = e.WriteLogin(ctx, lin, vo, sameRefresh(local.OAuth.RefreshToken()))
	if errors.Is(err, ErrChanged) {
		// Someone (a refresher that was mid-request, Claude) wrote a new
		// login while we decided to restore: that login is the one to check.
		if cur, rerr := credentials.Read(e.Cfg.CredentialsFile); rerr == nil && cur.State == credentials.Usable &&
			cur.OAuth.RefreshToken() != local.OAuth.RefreshToken() {
			_ = lin.Observe(cur.OAuth.RefreshToken())
			first := res.Reason
			if res = e.runCheck(ctx, rec); res.Kind == check.OK {
				return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, cur.OAuth, vs, "inference check passed with the login written meanwhile ("+first+")"))
			}
			return e.finish(rec, Outcome{Status: WARN, Code: ExitTempFail, Message: "the login kept changing during the check (" + first + ", then " + res.Reason + "); not restoring, the next pass retries"})
		}
	}
	if err != nil {
		return e.finish(rec, fail("%s; restore from %s failed: %v", res.Reason, e.Store.Describe(), err))
	}
	e.Log.Event(RECOVERED, "%s; restored the login from the backup (v%d)", res.Reason, vs.doc.Version)
	res = e.runCheck(ctx, rec)
	if res.Kind != check.OK {
		return e.finish(rec, fail("restored login from the backup, but the check still fails: %s; %s", res.Reason, LoginHint()))
	}
	return e.finish(rec, e.afterGoodCheck(ctx, rec, lin, vo, vs, "inference check passed after restore"))
}

func (e *Engine) runCheck(ctx context.Context, rec *Record, extraEnv ...string) check.Result {
	if e.Interactive {
		e.Diag.Info(fmt.Sprintf("checking the login with a one-turn prompt to %s; this can take up to %s", e.Cfg.ClaudeBin, e.Cfg.CheckTimeout))
	}
	res := e.Checker.Run(ctx, extraEnv...)
	rec.LastCheck = &CheckRecord{At: e.now(), Result: res.Kind.String(), Reason: check.Mask(res.Reason)}
	return res
}

// afterGoodCheck backs up the working login and words the outcome.
func (e *Engine) afterGoodCheck(ctx context.Context, rec *Record, lin *Lineage, oauth *credentials.OAuth, vs vaultState, what string) Outcome {
	if vs.down != nil {
		return Outcome{Status: WARN, Code: ExitTempFail, Message: what + "; backup pending: " + vs.down.Error()}
	}
	res, err := e.Backup(ctx, lin, oauth)
	if errors.Is(err, store.ErrUnreachable) {
		return Outcome{Status: WARN, Code: ExitTempFail, Message: what + "; backup pending: " + err.Error()}
	}
	if err != nil {
		return fail("%s, but the backup failed: %v", what, err)
	}
	if res.Written {
		rec.LastBackup = e.BackupRecord(res, oauth)
	}
	return Outcome{Status: OK, Code: ExitOK, Message: what + "; " + res.Message}
}
