// Package engine is one user's sync pass, backup and restore: the pass and
// the table of decisions it makes, the write of a login to the store and back
// into the credentials file, setup-token mode, and the `sync`, `refresh` and
// `restore` commands. It ties together the credentials model, the store, the
// inference check, the single refresher (sync/refresh), the lineage and the
// telemetry (sync/telemetry); the commands in cmd/ only parse flags and call
// it, and the agent (sync/agent) runs its steps on events.
package engine

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// Engine ties the pieces together for one user.
type Engine struct {
	Cfg     *config.Config
	Store   store.Store
	Vault   *store.Vault // nil with the local store
	Log     *eventlog.EventLog
	Checker Checker
	Diag    *slog.Logger
	// Clock is the one clock of the engine, its event log and the agent.
	Clock clock.Clock

	// Interactive: a person watches the console (a command at a terminal),
	// so a step that can take long says so before it starts.
	Interactive bool

	// Refresher is the single refresher of the Claude login: every token
	// request and every write of the credentials file goes through it.
	Refresher *refresh.Claude

	// Telemetry is what this user's sync says about itself: state.json,
	// metrics, health, status.
	Telemetry *telemetry.Reporter
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
		Log: &eventlog.EventLog{User: cfg.User, LogFile: cfg.LogFile, JournalSocket: cfg.JournalSocket,
			Console: console, ConsoleIsJournal: consoleIsJournal, Clock: clock.Real},
		Checker: &check.Runner{Timeout: cfg.CheckTimeout, Env: checkEnv(cfg), Dir: cfg.Home,
			Locate: func() (string, string) { l := cfg.FindClaude(); return l.Path, l.NotFound() }},
	}
	if cfg.Store == "vault" {
		v, err := store.NewVault(store.VaultConfig{Address: cfg.VaultAddr, Mount: cfg.VaultMount, Path: cfg.VaultPath,
			TokenFile: cfg.VaultTokenFile, User: cfg.User, Timeout: cfg.VaultTimeout, HostID: cfg.HostID, Knows: e.knows})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", config.ErrConfig, err)
		}
		e.Vault, e.Store = v, v
	} else {
		e.Store = store.NewFile(cfg.LocalStoreFile)
	}
	Assemble(e, &oauth.Client{TokenURL: cfg.OAuthTokenURL, ClientID: cfg.OAuthClientID, Scopes: cfg.OAuthScopes,
		UserAgent: cfg.OAuthUserAgent})
	e.Log.AfterEvent = e.Telemetry.MetricsEvent
	return e, nil
}

// Assemble builds e's refresher and telemetry from its config, store, log
// and clock: New does, and so do tests that make an Engine by hand. client
// asks the token endpoint (nil: Claude's).
func Assemble(e *Engine, client *oauth.Client) {
	e.Refresher = newRefresher(e, client)
	e.Telemetry = &telemetry.Reporter{Cfg: e.Cfg, Store: e.Store, Vault: e.Vault, Log: e.Log, Diag: e.Diag, Clock: e.Clock}
}

// newRefresher builds the refresher of e's Claude login. A setup-token
// backfill is never refreshed.
func newRefresher(e *Engine, client *oauth.Client) *refresh.Claude {
	cfg := e.Cfg
	_, explicit := cfg.Sources["CLAUDE_AUTH_REFRESH_LEAD"]
	return refresh.New(refresh.Config[*credentials.OAuth]{
		Family: &refresh.ClaudeLogin{CredentialsFile: cfg.CredentialsFile, ClaudeConfigDir: cfg.ClaudeConfigDir,
			LocksHeld: lock.NewHolderRecord(filepath.Join(cfg.StateDir, "claude-locks-held")),
			Client:    client, Log: e.Log, Diag: e.Diag,
			IdleWhy: func(o *credentials.OAuth) string {
				if IsBackfill(o, readEnvToken(cfg.TokenEnvFile), e.now()) {
					return "setup-token mode: nothing to refresh"
				}
				return ""
			}},
		StateDir: cfg.StateDir, Clock: e.Clock, Diag: e.Diag,
		Lead: cfg.RefreshLead, LeadExplicit: explicit,
	})
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
	if e.Refresher != nil {
		e.Refresher.SetClock(c)
	}
	if e.Telemetry != nil {
		e.Telemetry.Clock = c
	}
}
