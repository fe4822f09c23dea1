package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/tokenfile"
)

// TokenInfo is what lookup-self says about the token (no secret inside).
type TokenInfo struct {
	DisplayName string
	Policies    []string // the token's own, not its entity's identity policies
	TTL         time.Duration
	Renewable   bool
}

// LoadToken reads and checks the token file and uses the token for requests.
func (v *Vault) LoadToken() error {
	tok, err := readTokenFile(v.cfg.TokenFile)
	if err != nil {
		return err
	}
	v.client.SetToken(tok.Reveal())
	return nil
}

// readTokenFile reads the scoped token (tokenfile.Read: a private regular
// file of ours, one line), saying what to do when there is none. A token file
// of ours open to others is refused with ErrTokenExposed, and its token is
// returned beside that error for Prepare's report-only use.
func readTokenFile(path string) (credentials.Secret, error) {
	tok, err := tokenfile.Read(path, os.Geteuid())
	switch {
	case errors.Is(err, tokenfile.ErrExposed):
		// The words that matter first: the fleet's reason keeps 160 bytes.
		exposed := fmt.Errorf("%w: %w (mode %04o), consider the token exposed: %s; ask your workstation admin to run `claude-auth-sync provision`, which installs a new token and revokes this one (a chmod does not make it private again)", ErrTokenFile, ErrTokenExposed, tokenfile.ExposedMode(err), path)
		return tok, exposed // tok is "" unless the file is the user's own
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, tokenfile.ErrEmpty):
		return "", fmt.Errorf("%w: %v; ask your workstation admin to run `claude-auth-sync provision`, or write your scoped token to %s with mode 0600", ErrTokenFile, err, path)
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrTokenFile, err)
	}
	return tok, nil
}

// PolicyFor is the per-user policy name the fleet uses.
func PolicyFor(user string) string { return "workstation-claude-" + user }

// DisplayNameFor is the display name provisioning gives the token.
func DisplayNameFor(user string) string { return "devvm-claude-auth-" + user }

var unsafeDisplay = regexp.MustCompile(`[^A-Za-z0-9-]`)

// SanitizedDisplayName is the display name as Vault reports it back: "token-"
// plus the name with every character outside [A-Za-z0-9-] replaced by "-".
func SanitizedDisplayName(name string) string {
	return "token-" + unsafeDisplay.ReplaceAllString(name, "-")
}

// CheckDrift refuses a token that is not this user's: it must carry the user's
// policy, no other user's, and the expected display name.
func CheckDrift(info TokenInfo, user string) error {
	want := PolicyFor(user)
	if !slices.Contains(info.Policies, want) {
		return fmt.Errorf("%w: it lacks policy %s (it has %s); the token file holds someone else's or an admin token: ask your admin to re-provision it", ErrForeignToken, want, strings.Join(info.Policies, ","))
	}
	for _, p := range info.Policies {
		if strings.HasPrefix(p, "workstation-claude-") && p != want {
			return fmt.Errorf("%w: it also carries %s, another user's policy", ErrForeignToken, p)
		}
		if p == "root" {
			return fmt.Errorf("%w: it is a root token; use your scoped token", ErrForeignToken)
		}
	}
	if wantName := SanitizedDisplayName(DisplayNameFor(user)); info.DisplayName != wantName {
		return fmt.Errorf("%w: its display name is %q, want %q", ErrForeignToken, info.DisplayName, wantName)
	}
	return nil
}

// LookupSelf asks Vault about the token.
func (v *Vault) LookupSelf(ctx context.Context) (TokenInfo, error) {
	s, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return TokenInfo{}, v.classify("look up the vault token", err)
	}
	if s == nil || s.Data == nil {
		return TokenInfo{}, fmt.Errorf("%w: empty lookup-self answer", ErrUnreachable)
	}
	return TokenInfoOf(s)
}

// TokenInfoOf reads a lookup-self answer. Its policies are the token's own:
// the checks on them (CheckDrift, the fleet reader's) are about what the
// token was minted with, not what an entity adds.
func TokenInfoOf(s *vault.Secret) (TokenInfo, error) {
	info := TokenInfo{}
	info.DisplayName, _ = s.Data["display_name"].(string)
	if _, err := s.TokenPolicies(); err != nil {
		return info, fmt.Errorf("%w: lookup-self answer: %v", ErrUnreachable, err)
	}
	if s.Auth != nil {
		info.Policies = s.Auth.TokenPolicies
	}
	var err error
	if info.TTL, err = s.TokenTTL(); err != nil {
		return info, fmt.Errorf("%w: lookup-self answer: ttl: %v", ErrUnreachable, err)
	}
	if info.Renewable, err = s.TokenIsRenewable(); err != nil {
		return info, fmt.Errorf("%w: lookup-self answer: %v", ErrUnreachable, err)
	}
	return info, nil
}

// RenewSelf renews the token (periodic tokens go back to their full period) and
// returns the new TTL.
func (v *Vault) RenewSelf(ctx context.Context) (time.Duration, error) {
	s, err := v.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return 0, v.classify("renew the vault token", err)
	}
	ttl, _ := s.TokenTTL() // from the answer's auth block: no parsing to fail
	return ttl, nil
}

// Prepare runs the per-pass token routine: load the file, drift check, renew.
func (v *Vault) Prepare(ctx context.Context) (TokenInfo, error) {
	info, err := v.prepare(ctx)
	if err != nil && !errors.Is(err, ErrUnreachable) {
		v.setAccepted(false)
	}
	return info, err
}

func (v *Vault) prepare(ctx context.Context) (TokenInfo, error) {
	v.reportOnly.Store(false)
	if tok, err := readTokenFile(v.cfg.TokenFile); errors.Is(err, ErrTokenExposed) && tok != "" {
		// Refused for all work. But the fleet must see why this host
		// stopped backing up, and only this user's token can tell it: one
		// that passes the drift check may still write this host's health
		// (MayReport), which reveals nothing its holders could not write.
		v.client.SetToken(tok.Reveal())
		if info, lerr := v.LookupSelf(ctx); lerr == nil && CheckDrift(info, v.cfg.User) == nil {
			v.reportOnly.Store(true)
		}
		return TokenInfo{}, err
	}
	if err := v.LoadToken(); err != nil {
		return TokenInfo{}, err
	}
	info, err := v.LookupSelf(ctx)
	if err != nil {
		return TokenInfo{}, err
	}
	if err := CheckDrift(info, v.cfg.User); err != nil {
		return info, err
	}
	ttl, err := v.RenewSelf(ctx)
	if err != nil {
		return info, err
	}
	if ttl > 0 {
		info.TTL = ttl
	}
	v.unplace() // a new look at which document is this host's
	v.setAccepted(true)
	return info, nil
}

func (v *Vault) setAccepted(ok bool) { v.accepted.Store(ok) }

// Accepted says whether the last Prepare accepted the token: only then is
// it used for anything beyond the document's own reads and writes (this
// host's health), never a token that failed the drift check or none.
func (v *Vault) Accepted() bool { return v.accepted.Load() }

// MayReport says whether this host's health may be written: the last
// Prepare accepted the token, or refused it only as exposed (its file's
// mode), when it is still this user's own. Nothing else uses such a token.
func (v *Vault) MayReport() bool { return v.accepted.Load() || v.reportOnly.Load() }
