package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// TokenInfo is what lookup-self says about the token (no secret inside).
type TokenInfo struct {
	DisplayName string
	Policies    []string
	TTL         time.Duration
	Period      time.Duration
	Orphan      bool
	Renewable   bool
}

// LoadToken reads and checks the token file and uses the token for requests.
func (v *Vault) LoadToken() error {
	tok, err := ReadTokenFile(v.cfg.TokenFile)
	if err != nil {
		return err
	}
	v.client.SetToken(tok.Reveal())
	return nil
}

// ReadTokenFile reads the scoped token: the file must exist, belong to us, be
// non-empty and be readable by its owner only.
func ReadTokenFile(path string) (credentials.Secret, error) {
	hint := "ask your workstation admin to run `claude-auth-sync provision`, or write your scoped token to " + path + " with mode 0600"
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist; %s", ErrTokenFile, path, hint)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrTokenFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrTokenFile, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrTokenFile, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %04o, readable by others; run `chmod 600 %s` (and consider the token exposed: ask for a new one)", ErrTokenFile, path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return "", fmt.Errorf("%w: %s is owned by uid %d, not by you (uid %d)", ErrTokenFile, path, st.Uid, os.Geteuid())
	}
	buf := make([]byte, 4097)
	n, _ := f.Read(buf)
	if n > 4096 {
		return "", fmt.Errorf("%w: %s is too large to be a Vault token", ErrTokenFile, path)
	}
	tok := strings.TrimSpace(string(buf[:n]))
	if tok == "" {
		return "", fmt.Errorf("%w: %s is empty; %s", ErrTokenFile, path, hint)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%w: %s holds more than one line; it must hold only the token", ErrTokenFile, path)
	}
	return credentials.Secret(tok), nil
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
	info := TokenInfo{}
	info.DisplayName, _ = s.Data["display_name"].(string)
	if ps, ok := s.Data["policies"].([]any); ok {
		for _, p := range ps {
			if s, ok := p.(string); ok {
				info.Policies = append(info.Policies, s)
			}
		}
	}
	info.TTL = seconds(s.Data["ttl"])
	info.Period = seconds(s.Data["period"])
	info.Orphan, _ = s.Data["orphan"].(bool)
	info.Renewable, _ = s.Data["renewable"].(bool)
	return info, nil
}

func seconds(v any) time.Duration {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return time.Duration(i) * time.Second
	case float64:
		return time.Duration(n) * time.Second
	case int:
		return time.Duration(n) * time.Second
	}
	return 0
}

// RenewSelf renews the token (periodic tokens go back to their full period) and
// returns the new TTL.
func (v *Vault) RenewSelf(ctx context.Context) (time.Duration, error) {
	s, err := v.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return 0, v.classify("renew the vault token", err)
	}
	if s != nil && s.Auth != nil {
		return time.Duration(s.Auth.LeaseDuration) * time.Second, nil
	}
	return 0, nil
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

func (v *Vault) setAccepted(ok bool) {
	v.mu.Lock()
	v.accepted = ok
	v.mu.Unlock()
}

// Accepted says whether the last Prepare accepted the token: only then is
// it used for anything beyond the document's own reads and writes (this
// host's health), never a token that failed the drift check or none.
func (v *Vault) Accepted() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.accepted
}
