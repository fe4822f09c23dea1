// Package mcp makes the agent (and `exec`) the single refresher of the
// user's MCP server logins: the mcpOAuth entries of Claude Code's
// credentials file. Claude refreshes an MCP login itself when less than
// 300 s remain, under a per-server lock; sessions that race there burn the
// rotating refresh tokens of servers with reuse detection and force a
// re-authorisation. The Manager refreshes each entry well before that (the
// lead, 15 min by default, never under 10 min), through refresh.MCPLogin:
// under Claude's own per-server lock, re-reading the entry inside it, with
// the answer kept durably before the write, and only that entry's tokens,
// expiry and scope written.
//
// MCP logins stay in the home: nothing of them is backed up, and nothing
// logged names a token or a URL (servers are named by their name only).
// What the Manager knows (each server's expiry, last and next refresh, and
// the refresh and failure counts) is kept in the state dir's mcp.json for
// `status` and the metrics.
package mcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

// Config is what a Manager is built from.
type Config struct {
	CredentialsFile string
	ClaudeConfigDir string // resolved
	StateDir        string
	Lead            time.Duration // before expiresAt (config.MCPLead)
	Skip            []string      // server names left to Claude
	Clock           clock.Clock
	Diag            *slog.Logger // where the per-server lines go
	Client          *oauth.MCPClient
	// Child, when set, runs each token request in the agent's refresh
	// child (crash-safe: a kill of the agent mid-request loses nothing).
	Child *refresh.ChildCommand
	// LockWait bounds the wait for the locks (default 10 s: Claude itself
	// gives up on its per-server lock after about as long).
	LockWait time.Duration
	// Poll is the longest the agent sleeps between looks (default 1 min).
	Poll time.Duration
	// Changed, when set, is told each time mcp.json was written (the
	// agent's metrics follow).
	Changed func()
	// Publish: this Manager is the agent's, whose view of each server
	// mcp.json shows. Another (exec's) only adds its refreshes to the
	// counts, and leaves alone the servers the agent found refused or
	// skipped.
	Publish bool
}

// Manager refreshes a user's MCP logins.
type Manager struct {
	cfg     Config
	mu      sync.Mutex
	servers map[string]*server // by entry key
}

// server is what the Manager remembers of one entry.
type server struct {
	key  string
	r    *refresh.MCP
	said string // the last INFO/WARN said about it (said once)
	// deadFP: the refresh token the server refused (invalid_grant); the entry
	// is left alone until it holds another.
	deadFP string
	// short: its access tokens live less than twice the lead.
	short        bool
	life         time.Duration
	seenFP       string // the access token last seen, and since when
	seenAt       time.Time
	retryAt      time.Time
	failures     int // in a row
	lastRefresh  time.Time
	lastError    string
	present      bool
	refreshCount int
}

// shortLived: tokens that live less than twice the lead are left to Claude.
// A lifetime is seen from the moment the token was seen (a refresh's answer
// read, a write by Claude noticed), a little after it was issued: a minute
// of slack, or a server issuing exactly twice the lead would count as short
// (a 22 min run with 20 min tokens and a 10 min lead found the agent leaving
// the second refresh to Claude).
func shortLived(life, lead time.Duration) bool {
	return life > 0 && life < 2*lead-time.Minute
}

// LockWait is how long an MCP refresh waits for the locks: about as long as
// Claude's own sessions wait for the per-server lock before giving up.
const LockWait = 10 * time.Second

// Backoff after a failed refresh: 30 s, doubling, at most 5 min.
const (
	backoffMin = 30 * time.Second
	backoffMax = 5 * time.Minute
)

// New builds a Manager.
func New(c Config) *Manager {
	if c.Clock == nil {
		c.Clock = clock.Real
	}
	if c.Diag == nil {
		c.Diag = slog.New(slog.DiscardHandler)
	}
	if c.Client == nil {
		c.Client = &oauth.MCPClient{}
	}
	if c.LockWait <= 0 {
		c.LockWait = LockWait
	}
	if c.Poll <= 0 {
		c.Poll = time.Minute
	}
	return &Manager{cfg: c, servers: map[string]*server{}}
}

// Run is the agent's MCP component: a pass now, then whenever the file
// changes or the next entry is due, until ctx ends.
func (m *Manager) Run(ctx context.Context, changed <-chan struct{}) error {
	for {
		next := m.Pass(ctx)
		wait := m.cfg.Poll
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(m.cfg.Clock.Now()), time.Second))
		}
		t := m.cfg.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
			t.Stop()
		case <-t.C():
		}
	}
}

// Pass looks at every entry once and refreshes those due (the agent's step,
// and exec's before it becomes the command). It returns when the next one is
// due (zero when none is).
func (m *Manager) Pass(ctx context.Context) time.Time {
	now := m.cfg.Clock.Now()
	l, err := credentials.Read(m.cfg.CredentialsFile)
	if err != nil || l.File == nil {
		// No file (a logout) or not JSON: nothing to do here; the backup
		// writer sees to a broken file.
		m.forgetAll()
		if m.cfg.Publish {
			m.save(now)
		}
		return time.Time{}
	}
	var next time.Time
	keys := l.File.MCPKeys()
	var agentSays map[string]string
	if !m.cfg.Publish {
		agentSays = map[string]string{}
		if st, err := Load(m.cfg.StateDir); err == nil {
			for _, s := range st.Servers {
				agentSays[s.ID] = s.State
			}
		}
	}
	m.mu.Lock()
	for _, s := range m.servers {
		s.present = false
	}
	m.mu.Unlock()
	for _, key := range keys {
		e, err := l.File.MCPEntry(key)
		if err != nil {
			continue
		}
		if st := agentSays[refresh.KeyID(key)]; st == "needs-login" || st == "skipped" {
			continue
		}
		s := m.server(key)
		at := m.look(ctx, s, e)
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	m.mu.Lock()
	for k, s := range m.servers {
		if !s.present {
			delete(m.servers, k)
		}
	}
	m.mu.Unlock()
	if m.cfg.Publish {
		m.save(m.cfg.Clock.Now())
	}
	return next
}

func (m *Manager) server(key string) *server {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.servers[key]
	if !ok {
		r := Refresher(m.cfg, key)
		if m.cfg.Child != nil {
			c := *m.cfg.Child
			c.MCPKey = key
			r.Via = r.InChild(c)
		}
		s = &server{key: key, r: r}
		m.servers[key] = s
	}
	s.present = true
	return s
}

// Refresher is the refresher of the MCP login under key, built from c (the
// Manager's own, and the agent's refresh child's).
func Refresher(c Config, key string) *refresh.MCP {
	f := &refresh.MCPLogin{Key: key, CredentialsFile: c.CredentialsFile, ClaudeConfigDir: c.ClaudeConfigDir,
		StateDir: c.StateDir, Client: c.Client, Diag: c.Diag}
	wait := c.LockWait
	if wait <= 0 {
		wait = LockWait
	}
	return refresh.NewMCP(f, refresh.Config[*credentials.MCPEntry]{Clock: c.Clock, Diag: c.Diag,
		LockWait: wait, Lead: c.Lead, LeadExplicit: true})
}

func (m *Manager) forgetAll() {
	m.mu.Lock()
	clear(m.servers)
	m.mu.Unlock()
}

// name is how lines and status name an entry's server: its name, printable.
func name(e *credentials.MCPEntry, key string) string {
	n := e.ServerName()
	if n == "" {
		n, _, _ = cutKey(key)
	}
	return printable.Short(n, 64)
}

func cutKey(key string) (string, string, bool) {
	for i := len(key) - 1; i >= 0; i-- {
		if key[i] == '|' {
			return key[:i], key[i+1:], true
		}
	}
	return key, "", false
}

// look decides about one entry, refreshes it when due, and returns when to
// look at it again (zero: only when the file changes).
func (m *Manager) look(ctx context.Context, s *server, e *credentials.MCPEntry) time.Time {
	now := m.cfg.Clock.Now()
	n := name(e, s.key)
	lead := m.cfg.Lead
	if fp := e.AccessToken().Fingerprint(); e.AccessToken() != "" && fp != s.seenFP {
		// A new access token, written by someone else (Claude) while we
		// watched: it was born about now, which tells its lifetime.
		if s.seenFP != "" && !e.ExpiresAt().IsZero() {
			s.life = e.ExpiresAt().Sub(now)
			s.short = shortLived(s.life, lead)
		}
		s.seenFP, s.seenAt = fp, now
	}
	if v := m.classify(s, e); v.state != StateOK {
		if v.line != "" {
			m.note(s, slog.LevelInfo, fmt.Sprintf("MCP server %q: %s", n, v.line))
		}
		return time.Time{} // a refused login was said once, when it was refused
	}
	s.deadFP = ""
	due := e.ExpiresAt().Add(-lead)
	if now.Before(s.retryAt) && s.retryAt.After(due) {
		return s.retryAt
	}
	if now.Before(due) {
		return due
	}
	return m.refresh(ctx, s, e, n)
}

// refresh refreshes one due entry and returns when to look again.
func (m *Manager) refresh(ctx context.Context, s *server, e *credentials.MCPEntry, n string) time.Time {
	res, err := s.r.Refresh(ctx, refresh.NoWitness{}, false, "")
	now := m.cfg.Clock.Now()
	switch {
	case err == nil && res.Refreshed:
		s.failures, s.retryAt, s.lastError, s.lastRefresh = 0, time.Time{}, "", now
		s.refreshCount++
		m.bump(1, 0, s.key, now)
		if res.OAuth != nil {
			s.seenFP, s.seenAt = res.OAuth.AccessToken().Fingerprint(), now
			if exp := res.OAuth.ExpiresAt(); !exp.IsZero() {
				s.life = exp.Sub(now)
				s.short = shortLived(s.life, m.cfg.Lead)
			}
			m.cfg.Diag.Info(fmt.Sprintf("MCP server %q: refreshed its login ahead of Claude (valid until %s)",
				n, res.OAuth.ExpiresAt().Local().Format(time.RFC3339)))
		}
		s.said = ""
		return time.Time{}
	case err == nil:
		// Someone else refreshed meanwhile, or it is not due after all.
		s.failures, s.retryAt = 0, time.Time{}
		return time.Time{}
	case errors.Is(err, refresh.ErrLoginDead):
		s.deadFP = e.RefreshToken().Fingerprint()
		s.lastError = "the server refused the refresh token: log in again with /mcp in Claude Code"
		m.bump(0, 1, "", now)
		m.note(s, slog.LevelWarn, fmt.Sprintf("MCP server %q refused its refresh token (invalid_grant): left as it is; log in to it again with /mcp in Claude Code", n))
		return time.Time{}
	}
	// Unreachable, slow, locks busy, not written: back off and try again
	// (an answer not written is kept, and the next try writes it first).
	s.failures++
	wait := backoffMin << min(s.failures-1, 5)
	wait = min(wait, backoffMax)
	s.retryAt = now.Add(wait)
	s.lastError = err.Error()
	m.bump(0, 1, "", now)
	m.note(s, slog.LevelWarn, fmt.Sprintf("MCP server %q: could not refresh its login (%v); retrying with backoff", n, err))
	return s.retryAt
}

// verdict is what an entry's own fields and what the Manager learned of its
// server say about refreshing it: StateOK (refresh when due), or why not, as
// status shows it (reason) and as the log says it (line; empty: said elsewhere).
type verdict struct {
	state, reason, line string
}

// classify is the one place an entry is judged, for look and for Servers
// alike (s is nil for a server the Manager has not looked at yet).
func (m *Manager) classify(s *server, e *credentials.MCPEntry) verdict {
	switch {
	case slices.Contains(m.cfg.Skip, e.ServerName()):
		return verdict{StateSkipped, "named in CLAUDE_AUTH_MCP_SKIP", "left to Claude (named in CLAUDE_AUTH_MCP_SKIP)"}
	case e.RefreshToken() == "":
		return verdict{StateSkipped, "no refresh token", "skipped, its login has no refresh token"}
	case e.ExpiresAt().IsZero():
		return verdict{StateSkipped, "no expiry", "skipped, its access token has no expiry"}
	case s != nil && s.deadFP != "" && s.deadFP == e.RefreshToken().Fingerprint():
		return verdict{StateNeedsLogin, s.lastError, ""}
	case s != nil && s.short:
		life := s.life.Round(time.Second)
		return verdict{StateSkipped, fmt.Sprintf("tokens live %s, less than twice the lead", life),
			fmt.Sprintf("skipped, its access tokens live %s, less than twice the lead (%s)", life, m.cfg.Lead)}
	}
	return verdict{state: StateOK}
}

// note says msg at level once: not again until something else is said.
func (m *Manager) note(s *server, level slog.Level, msg string) {
	if s.said == msg {
		return
	}
	s.said = msg
	m.cfg.Diag.Log(context.Background(), level, msg)
}

// Servers is what the Manager knows of each server now, for mcp.json.
func (m *Manager) Servers() []ServerState {
	l, err := credentials.Read(m.cfg.CredentialsFile)
	if err != nil || l.File == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []ServerState
	for _, key := range l.File.MCPKeys() {
		e, err := l.File.MCPEntry(key)
		if err != nil {
			continue
		}
		st := ServerState{Name: name(e, key), ID: refresh.KeyID(key)}
		if exp := e.ExpiresAt(); !exp.IsZero() {
			st.ExpiresAt = &exp
		}
		s := m.servers[key]
		v := m.classify(s, e)
		switch {
		case v.state != StateOK:
			st.State, st.Reason = v.state, v.reason
		default:
			st.State = StateOK
			next := e.ExpiresAt().Add(-m.cfg.Lead)
			if s != nil && s.retryAt.After(next) {
				next = s.retryAt
				st.State, st.Reason = StateRetrying, s.lastError
			}
			st.NextRefresh = &next
		}
		if s != nil && !s.lastRefresh.IsZero() {
			lr := s.lastRefresh
			st.LastRefresh = &lr
		}
		out = append(out, st)
	}
	return out
}
