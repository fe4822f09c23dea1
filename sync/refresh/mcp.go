package refresh

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// MCPLogin is the family of one MCP server's login: the mcpOAuth entry under
// Key in the credentials file, under Claude's per-server refresh lock
// (mcp-refresh-<key>.lock.lock) and .storage-write.lock for the write,
// rotated at the token endpoint its authorization server's metadata names.
// Only the entry's accessToken, refreshToken (kept when none comes back),
// expiresAt and scope are ever written; every other key and entry stays as
// it is. It never leaves the home: nothing of it is backed up.
type MCPLogin struct {
	Key             string
	CredentialsFile string
	ClaudeConfigDir string // resolved; Claude's lock directories are made here
	StateDir        string // our per-server flock and holder record
	Client          *oauth.MCPClient
	Diag            *slog.Logger
	// RequestTimeout bounds the whole token request, discovery included,
	// which runs under Claude's per-server lock (default 8 s: Claude's own
	// sessions give up waiting for that lock after about as long).
	RequestTimeout time.Duration
}

// MCP is the refresher of one MCP server's login.
type MCP = Refresher[*credentials.MCPEntry]

// MCPResult is what a refresh of an MCP login did.
type MCPResult = Result[*credentials.MCPEntry]

// NewMCP builds the refresher of the MCP login f.
func NewMCP(f *MCPLogin, c Config[*credentials.MCPEntry]) *MCP {
	c.Family = f
	if c.StateDir == "" {
		c.StateDir = f.StateDir
	}
	return New(c)
}

// KeyID is a short, stable, file-name-safe name for an entry key.
func KeyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:6])
}

// KeptName: pending-mcp-<key id>.
func (m *MCPLogin) KeptName() string { return "pending-mcp-" + KeyID(m.Key) }

// Flock: a flock of our own per server, so a slow authorization server holds
// up neither the Claude login nor the other servers.
func (m *MCPLogin) Flock() string { return "mcp-refresh-" + KeyID(m.Key) + ".lock" }

// Lock takes Claude's per-server MCP refresh lock.
func (m *MCPLogin) Lock(ctx context.Context) (Held, error) {
	rec := lock.NewHolderRecord(filepath.Join(m.StateDir, "mcp-locks-held-"+KeyID(m.Key)))
	held, err := lock.AcquireMCPRefresh(ctx, m.ClaudeConfigDir, m.Key, rec)
	if err != nil {
		return nil, err
	}
	return held, nil
}

// Read is the entry as the file holds it now: Usable with both tokens,
// Clobbered when Claude cleared them (after invalid_grant), NoLogin when
// the entry is gone, Missing when the file is.
func (m *MCPLogin) Read() (Current[*credentials.MCPEntry], error) {
	l, err := credentials.Read(m.CredentialsFile)
	if err != nil {
		return Current[*credentials.MCPEntry]{}, err
	}
	switch {
	case l.State == credentials.Missing:
		return Current[*credentials.MCPEntry]{State: credentials.Missing}, nil
	case l.File == nil:
		return Current[*credentials.MCPEntry]{State: credentials.Clobbered, Problem: l.Problem}, nil
	}
	e, err := l.File.MCPEntry(m.Key)
	if errors.Is(err, credentials.ErrNoMCPEntry) {
		return Current[*credentials.MCPEntry]{State: credentials.NoLogin, Problem: err}, nil
	}
	if err != nil {
		return Current[*credentials.MCPEntry]{State: credentials.Clobbered, Problem: err}, nil
	}
	if p := e.Usable(); p != nil {
		return Current[*credentials.MCPEntry]{State: credentials.Clobbered, Problem: p, Login: e}, nil
	}
	return Current[*credentials.MCPEntry]{State: credentials.Usable, Login: e}, nil
}

// Idle: an entry with no expiry is never due.
func (m *MCPLogin) Idle(e *credentials.MCPEntry) string {
	if e.ExpiresAt().IsZero() {
		return "the access token has no expiry"
	}
	return ""
}

// Request refreshes the entry at its token endpoint.
func (m *MCPLogin) Request(ctx context.Context, e *credentials.MCPEntry) (*oauth.Token, error) {
	c := m.Client
	if c == nil {
		c = &oauth.MCPClient{}
	}
	d := m.RequestTimeout
	if d <= 0 {
		d = 8 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return c.RefreshMCP(ctx, oauth.MCPServer{ServerURL: e.ServerURL(), ClientID: e.ClientID(),
		ClientSecret: e.ClientSecret(), Discovery: e.Discovery()}, e.RefreshToken())
}

// Answer reads a kept answer.
func (m *MCPLogin) Answer(raw []byte) (*oauth.Token, error) { return oauth.ParseMCPToken(raw) }

// Merge puts the answer into the entry: the access token, the refresh token
// when one came back (else the one sent stays: a server that does not
// rotate), expiresAt = at + expires_in (removed when the server sent none,
// as Claude does), and the scope when given.
func (m *MCPLogin) Merge(e *credentials.MCPEntry, tok *oauth.Token, at time.Time) (*credentials.MCPEntry, error) {
	if e == nil {
		return nil, errors.New("no mcpOAuth entry to put the answer in")
	}
	set := map[string]any{"accessToken": tok.AccessToken}
	if tok.RefreshToken != "" {
		set["refreshToken"] = tok.RefreshToken
	}
	var drop []string
	if tok.ExpiresIn > 0 {
		set["expiresAt"] = at.Add(tok.ExpiresIn).UnixMilli()
	} else {
		drop = append(drop, "expiresAt")
	}
	if tok.Scope != "" {
		set["scope"] = tok.Scope
	}
	return e.With(set, drop...)
}

// Write puts next into the file's entry if it still holds the refresh token
// sent (or Claude cleared it: ours is then the only live one). A removed
// entry (the server was removed, or logged out) is not brought back.
func (m *MCPLogin) Write(sent credentials.Secret, next *credentials.MCPEntry) error {
	l, err := credentials.Read(m.CredentialsFile)
	if err != nil {
		return err
	}
	if l.State == credentials.Missing {
		return ErrLoggedOut
	}
	if l.File == nil {
		return fmt.Errorf("%w: the credentials file is not JSON", ErrChanged)
	}
	cur, err := l.File.MCPEntry(m.Key)
	if err != nil {
		return fmt.Errorf("%w: the mcpOAuth entry is gone", ErrChanged)
	}
	if cur.RefreshToken() != "" && cur.RefreshToken() != sent {
		return fmt.Errorf("%w: the entry holds another login now", ErrChanged)
	}
	f, err := l.File.WithMCPEntry(m.Key, next)
	if err != nil {
		return err
	}
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	target, err := atomicfile.Write(m.CredentialsFile, data, credentials.FileMode)
	if target != "" && m.Diag != nil {
		m.Diag.Warn("credentials file is a symlink; wrote its target and kept the link", "link", m.CredentialsFile, "target", target)
	}
	return err
}

// Parse reads an entry back.
func (m *MCPLogin) Parse(data []byte) (*credentials.MCPEntry, error) {
	return credentials.ParseMCPEntry(data)
}

var _ Family[*credentials.MCPEntry] = (*MCPLogin)(nil)

// NoWitness is the witness of a family with no lineage (MCP logins).
type NoWitness struct{}

func (NoWitness) Observe(credentials.Secret) error { return nil }
func (NoWitness) Reload() error                    { return nil }
