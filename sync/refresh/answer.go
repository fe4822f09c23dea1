package refresh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// ErrNotWritten: the token endpoint rotated the login but the new one could
// not be written to the credentials file (a full or read-only file system).
// The result carries the new login, for the caller to back up; the answer is
// kept (in the state dir, and in memory), and the next Refresh writes it
// instead of presenting the spent refresh token again.
var ErrNotWritten = errors.New("the refreshed login could not be written to the credentials file")

// finish writes a refresh answer into the file (compare-and-swap on the
// refresh token it was sent for, or over a file left unusable), under the
// storage-write lock, and forgets the kept answer once it is in.
func (r *Refresher[L]) finish(ctx context.Context, held Held, w Witness, cur Current[L], p *kept, tok *oauth.Token) (Result[L], error) {
	var zero L
	sent := credentials.Secret("")
	if cur.Login != zero {
		sent = cur.Login.RefreshToken()
	}
	next, err := r.fam.Merge(cur.Login, tok, p.At)
	if err != nil {
		return Result[L]{}, err
	}
	if err := w.Observe(next.RefreshToken()); err != nil {
		r.diag.Warn("cannot record lineage", "err", err)
	}
	werr := held.WithStorageWrite(ctx, func() error { return r.fam.Write(sent, next) })
	if errors.Is(werr, ErrLoggedOut) {
		return Result[L]{OAuth: next}, fmt.Errorf("%w: %v", ErrNotWritten, werr)
	}
	if errors.Is(werr, ErrChanged) {
		r.dropKept()
		return Result[L]{}, fmt.Errorf("write the refreshed login: %w", werr)
	}
	if werr != nil {
		return Result[L]{OAuth: next}, fmt.Errorf("%w (the new login is kept in %s): %v", ErrNotWritten, r.keptPath(), werr)
	}
	r.dropKept()
	r.tokens.note(next.AccessToken(), p.At)
	return Result[L]{Refreshed: true, OAuth: next, Message: "refreshed; valid until " + next.ExpiresAt().Format(time.RFC3339)}, nil
}
