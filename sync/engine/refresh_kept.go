package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

type pendingRefresh struct {
	Response json.RawMessage `json:"response"`
	SentFP   string          `json:"sent_refresh_token_fingerprint"`
	At       time.Time       `json:"at"`
}

func (e *Engine) pendingRefreshPath() string {
	return filepath.Join(e.Cfg.StateDir, "pending-refresh")
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
