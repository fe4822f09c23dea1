package refresh

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// ClaudeLogin is the Claude login's family: the claudeAiOauth object of the
// credentials file, under Claude's .oauth_refresh.lock and <realpath>.lock,
// rotated at Claude's token endpoint with the scopes the login holds.
type ClaudeLogin struct {
	CredentialsFile string
	ClaudeConfigDir string // Claude's lock directories are made here
	// LocksHeld records the Claude lock directories the holder of our
	// refresh flock made, so the next holder can take over those a killed
	// one left behind.
	LocksHeld *lock.HolderRecord
	Client    *oauth.Client // Claude's token endpoint by default
	Log       *eventlog.EventLog
	Diag      *slog.Logger
	// IdleWhy says why a login needs no token request (setup-token mode
	// backfills the file with the admin's token); nil: never.
	IdleWhy func(*credentials.OAuth) string
}

// Claude is the refresher of the Claude login.
type Claude = Refresher[*credentials.OAuth]

// ClaudeResult is what a refresh of the Claude login did.
type ClaudeResult = Result[*credentials.OAuth]

// KeptName: the Claude login's answer is kept in pending-refresh.
func (c *ClaudeLogin) KeptName() string { return "pending-refresh" }

// Flock: the refresh flock, which also orders every other write of the file
// by our processes (restore, setup-token backfill).
func (c *ClaudeLogin) Flock() string { return lock.Refresh }

// Answer reads a kept answer of Claude's token endpoint.
func (c *ClaudeLogin) Answer(raw []byte) (*oauth.Token, error) { return oauth.ParseToken(raw) }

// Lock takes Claude's .oauth_refresh.lock and <realpath>.lock.
func (c *ClaudeLogin) Lock(ctx context.Context) (Held, error) {
	held, err := lock.AcquireClaudeRefresh(ctx, c.ClaudeConfigDir, c.LocksHeld)
	if err != nil {
		return nil, err
	}
	return held, nil
}

// Read reads the credentials file's login.
func (c *ClaudeLogin) Read() (Current[*credentials.OAuth], error) {
	l, err := credentials.Read(c.CredentialsFile)
	if err != nil {
		return Current[*credentials.OAuth]{}, err
	}
	return Current[*credentials.OAuth]{State: l.State, Problem: l.Problem, Login: l.OAuth}, nil
}

// Idle is IdleWhy's answer.
func (c *ClaudeLogin) Idle(o *credentials.OAuth) string {
	if c.IdleWhy == nil {
		return ""
	}
	return c.IdleWhy(o)
}

// Request asks for the scopes the login holds (or the override, which may
// narrow them: said as WARN).
func (c *ClaudeLogin) Request(ctx context.Context, o *credentials.OAuth) (*oauth.Token, error) {
	client := c.Client
	if client == nil {
		client = &oauth.Client{}
	}
	scopes, _ := o.Scopes()
	if lost := client.Narrowed(scopes); len(lost) > 0 && c.Log != nil {
		c.Log.Event(eventlog.WARN, "CLAUDE_AUTH_OAUTH_SCOPES leaves out scopes this login holds (%s): the refresh narrows the login", strings.Join(lost, " "))
	}
	return client.Refresh(ctx, o.RefreshToken(), scopes)
}

// Merge puts a refresh response into the login, keeping every other field:
// new tokens, expiresAt = now + expires_in, scopes when given, and the login's
// deadline (refreshTokenExpiresAt) = the smaller of old and new.
func (c *ClaudeLogin) Merge(o *credentials.OAuth, tok *oauth.Token, now time.Time) (*credentials.OAuth, error) {
	if o == nil {
		o, _ = credentials.ParseOAuth([]byte(`{}`))
	}
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

// Write writes next over the file's claudeAiOauth, every other key kept, if
// the file still holds the refresh token sent (or holds something unusable:
// ours is then the only live login). A removed file is a logout and stays
// removed.
func (c *ClaudeLogin) Write(sent credentials.Secret, next *credentials.OAuth) error {
	cur, err := credentials.Read(c.CredentialsFile)
	if err != nil {
		return err
	}
	if cur.State == credentials.Usable && cur.OAuth.RefreshToken() != sent {
		return fmt.Errorf("%w: the file holds another login now", ErrChanged)
	}
	if cur.State == credentials.Missing {
		return ErrLoggedOut
	}
	data, err := cur.Base().WithOAuth(next).Marshal()
	if err != nil {
		return err
	}
	target, err := atomicfile.Write(c.CredentialsFile, data, credentials.FileMode)
	if target != "" && c.Diag != nil {
		c.Diag.Warn("credentials file is a symlink; wrote its target and kept the link", "link", c.CredentialsFile, "target", target)
	}
	return err
}

// Parse reads a claudeAiOauth object.
func (c *ClaudeLogin) Parse(data []byte) (*credentials.OAuth, error) {
	return credentials.ParseOAuth(data)
}

var _ Family[*credentials.OAuth] = (*ClaudeLogin)(nil)
