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

// pendingRefresh is a token endpoint's answer not yet in the credentials file,
// as kept in memory and in pending-refresh (0600) in the state dir.
type pendingRefresh struct {
	Response json.RawMessage `json:"response"`
	SentFP   string          `json:"sent_refresh_token_fingerprint"`
	At       time.Time       `json:"at"`
}

// parsePending reads a kept answer and the token in it.
func parsePending(data []byte) (*pendingRefresh, *oauth.Token, error) {
	p := &pendingRefresh{}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, nil, err
	}
	tok, err := oauth.ParseToken(p.Response)
	if err != nil {
		return nil, nil, err
	}
	return p, tok, nil
}

func (r *refresher) pendingPath() string {
	return filepath.Join(r.cfg.StateDir, "pending-refresh")
}

// RefreshPending says whether a refresh answer is waiting to be written to the
// credentials file (then the file's refresh token is spent: refresh now).
func (e *Engine) RefreshPending() bool { return e.refresher().pending() }

func (r *refresher) pending() bool {
	p, _ := r.keptRefresh()
	return p != nil
}

// keptRefresh is the refresh answer waiting to be written: the one in memory,
// else the one in the state dir (nil when none or unreadable).
func (r *refresher) keptRefresh() (*pendingRefresh, *oauth.Token) {
	if p := r.mem.keptAnswer(); p != nil {
		tok, err := oauth.ParseToken(p.Response)
		if err != nil {
			return nil, nil
		}
		return p, tok
	}
	data, err := os.ReadFile(r.pendingPath())
	if err != nil {
		return nil, nil
	}
	p, tok, err := parsePending(data)
	if err != nil {
		return nil, nil
	}
	return p, tok
}

func (r *refresher) keep(p *pendingRefresh) error {
	r.mem.setKept(p)
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.cfg.StateDir, 0o700); err != nil {
		return err
	}
	// Visible before the fsyncs: until it is, a kill loses the login.
	return atomicfile.WriteVisibleFirst(r.pendingPath(), data, 0o600)
}

func (r *refresher) dropKept() {
	r.mem.setKept(nil)
	_ = os.Remove(r.pendingPath())
}

func (r *refresher) writePendingRefresh(tok *oauth.Token, sent credentials.Secret, now time.Time) error {
	return r.keep(&pendingRefresh{Response: tok.Raw, SentFP: sent.Fingerprint(), At: now})
}

// ApplyPendingRefresh finishes a refresh that crashed between the token
// endpoint's answer and the rename: if the file still holds the refresh token
// that was sent (or nothing usable), the saved response goes in.
// The result carries the new login when it could not be written (a logout
// meanwhile, a full disk: ErrNotWritten), for the caller to back it up.
func (e *Engine) ApplyPendingRefresh(ctx context.Context, lin *Lineage) (RefreshResult, error) {
	return e.refresher().applyPending(ctx, lin)
}

func (r *refresher) applyPending(ctx context.Context, lin *Lineage) (RefreshResult, error) {
	data, err := os.ReadFile(r.pendingPath())
	if errors.Is(err, os.ErrNotExist) {
		return RefreshResult{}, nil
	}
	if err != nil {
		return RefreshResult{}, err
	}
	p, tok, err := parsePending(data)
	if err != nil {
		_ = os.Rename(r.pendingPath(), r.pendingPath()+".unreadable")
		return RefreshResult{}, fmt.Errorf("pending refresh record is unreadable; kept as %s.unreadable", r.pendingPath())
	}
	var res RefreshResult
	err = r.underLocks(ctx, false, func(_ context.Context, claude *lock.ClaudeRefresh) error {
		cur, err := credentials.Read(r.cfg.CredentialsFile)
		if err != nil {
			return err
		}
		if cur.State != credentials.Usable || cur.OAuth.RefreshToken().Fingerprint() == p.SentFP {
			res, err = r.finishRefresh(ctx, claude, lin, cur, p, tok)
			return err
		}
		r.dropKept()
		return nil
	})
	return res, err
}
