package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// ErrNotWritten: the token endpoint rotated the login but the new one could
// not be written to the credentials file (a full or read-only file system).
// The result carries the new login, for the caller to back up; the answer is
// kept (pending-refresh, and in memory), and the next Refresh writes it
// instead of presenting the spent refresh token again.
var ErrNotWritten = errors.New("the refreshed login could not be written to the credentials file")

// finishRefresh writes a refresh answer into the file (compare-and-swap on the
// refresh token it was sent for, or over a file left unusable), under the
// storage-write lock, and forgets the kept answer once it is in.
func (r *refresher) finishRefresh(ctx context.Context, claude *lock.ClaudeRefresh, lin *Lineage, cur *credentials.Local, p *pendingRefresh, tok *oauth.Token) (RefreshResult, error) {
	base, sent := cur.OAuth, credentials.Secret("")
	if base == nil {
		base, _ = credentials.ParseOAuth([]byte(`{}`))
	} else {
		sent = base.RefreshToken()
	}
	next, err := mergeToken(base, tok, p.At)
	if err != nil {
		return RefreshResult{}, err
	}
	if err := lin.Observe(next.RefreshToken()); err != nil {
		r.diag.Warn("cannot record lineage", "err", err)
	}
	werr := claude.WithStorageWrite(ctx, func() error { return r.casWrite(sent, next) })
	if errors.Is(werr, errLoggedOut) {
		return RefreshResult{OAuth: next}, fmt.Errorf("%w: %v", ErrNotWritten, werr)
	}
	if errors.Is(werr, ErrChanged) {
		r.dropKept()
		return RefreshResult{}, fmt.Errorf("write the refreshed login: %w", werr)
	}
	if werr != nil {
		return RefreshResult{OAuth: next}, fmt.Errorf("%w (the new login is kept in %s): %v", ErrNotWritten, r.pendingPath(), werr)
	}
	r.dropKept()
	r.mem.tokens.note(next.AccessToken(), p.At)
	return RefreshResult{Refreshed: true, OAuth: next, Message: "refreshed; valid until " + next.ExpiresAt().Format(time.RFC3339)}, nil
}

// errLoggedOut: the credentials file is gone (`claude auth logout` deletes
// it); a refresh answer must not bring it back.
var errLoggedOut = errors.New("the credentials file was removed (a logout?); not writing a login back into it")

// casWrite writes next over the file if it still holds the refresh token sent
// (or holds something unusable: ours is then the only live login). A removed
// file is a logout and stays removed.
func (r *refresher) casWrite(sent credentials.Secret, next *credentials.OAuth) error {
	cur, err := credentials.Read(r.cfg.CredentialsFile)
	if err != nil {
		return err
	}
	if cur.State == credentials.Usable && cur.OAuth.RefreshToken() != sent {
		return fmt.Errorf("%w: the file holds another login now", ErrChanged)
	}
	if cur.State == credentials.Missing {
		return errLoggedOut
	}
	data, err := cur.Base().WithOAuth(next).Marshal()
	if err != nil {
		return err
	}
	target, err := atomicfile.Write(r.cfg.CredentialsFile, data, credentials.FileMode)
	if target != "" {
		r.diag.Warn("credentials file is a symlink; wrote its target and kept the link", "link", r.cfg.CredentialsFile, "target", target)
	}
	return err
}

// mergeToken puts a refresh response into the login, keeping every other field:
// new tokens, expiresAt = now + expires_in, scopes when given, and the login's
// deadline (refreshTokenExpiresAt) = the smaller of old and new.
func mergeToken(o *credentials.OAuth, tok *oauth.Token, now time.Time) (*credentials.OAuth, error) {
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
