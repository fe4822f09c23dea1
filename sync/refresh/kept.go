package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// kept is a token endpoint's answer not yet in the credentials file, as kept
// in memory and in the family's file in the state dir (pending-refresh for the
// Claude login, 0600).
type kept struct {
	Response json.RawMessage `json:"response"`
	SentFP   string          `json:"sent_refresh_token_fingerprint"`
	At       time.Time       `json:"at"`
}

// parseKept reads a kept answer and the token in it.
func parseKept(data []byte, answer func([]byte) (*oauth.Token, error)) (*kept, *oauth.Token, error) {
	p := &kept{}
	if err := json.Unmarshal(data, p); err != nil {
		return nil, nil, err
	}
	tok, err := answer(p.Response)
	if err != nil {
		return nil, nil, err
	}
	return p, tok, nil
}

// keptPath is where the family's kept answer lives in the state dir.
func (r *Refresher[L]) keptPath() string {
	return filepath.Join(r.stateDir, r.fam.KeptName())
}

// Pending says whether a refresh answer is waiting to be written to the
// credentials file (then the file's refresh token is spent: refresh now).
func (r *Refresher[L]) Pending() bool {
	p, _ := r.keptRefresh()
	return p != nil
}

// keptRefresh is the refresh answer waiting to be written: the one in memory,
// else the one in the state dir (nil when none or unreadable).
func (r *Refresher[L]) keptRefresh() (*kept, *oauth.Token) {
	if p := r.keptAnswer(); p != nil {
		tok, err := r.fam.Answer(p.Response)
		if err != nil {
			return nil, nil
		}
		return p, tok
	}
	data, err := os.ReadFile(r.keptPath())
	if err != nil {
		return nil, nil
	}
	p, tok, err := parseKept(data, r.fam.Answer)
	if err != nil {
		return nil, nil
	}
	return p, tok
}

func (r *Refresher[L]) keep(p *kept) error {
	r.setKept(p)
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.stateDir, 0o700); err != nil {
		return err
	}
	// Visible before the fsyncs: until it is, a kill loses the login.
	return atomicfile.WriteVisibleFirst(r.keptPath(), data, 0o600)
}

func (r *Refresher[L]) dropKept() {
	r.setKept(nil)
	_ = os.Remove(r.keptPath())
}

// keepAnswer keeps tok as the answer to a refresh that sent the refresh token sent
// at now, as a token request does before anything else (tests make a crash
// between the answer and the write with it).
func (r *Refresher[L]) keepAnswer(tok *oauth.Token, sent credentials.Secret, now time.Time) error {
	return r.keep(&kept{Response: tok.Raw, SentFP: sent.Fingerprint(), At: now})
}

// ApplyPending finishes a refresh that crashed between the token endpoint's
// answer and the rename: if the file still holds the refresh token that was
// sent (or nothing usable), the saved response goes in. The result carries
// the new login when it could not be written (a logout meanwhile, a full
// disk: ErrNotWritten), for the caller to back it up.
func (r *Refresher[L]) ApplyPending(ctx context.Context, w Witness) (Result[L], error) {
	data, err := os.ReadFile(r.keptPath())
	if errors.Is(err, os.ErrNotExist) {
		return Result[L]{}, nil
	}
	if err != nil {
		return Result[L]{}, err
	}
	p, tok, err := parseKept(data, r.fam.Answer)
	if err != nil {
		_ = os.Rename(r.keptPath(), r.keptPath()+".unreadable")
		return Result[L]{}, fmt.Errorf("pending refresh record is unreadable; kept as %s.unreadable", r.keptPath())
	}
	var res Result[L]
	err = r.underLocks(ctx, false, func(_ context.Context, held Held) error {
		cur, err := r.fam.Read()
		if err != nil {
			return err
		}
		if cur.State != credentials.Usable || cur.Login.RefreshToken().Fingerprint() == p.SentFP {
			res, err = r.finish(ctx, held, w, cur, p, tok)
			return err
		}
		r.dropKept()
		return nil
	})
	return res, err
}
