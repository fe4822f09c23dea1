package provision

// The Vault side of a user: the policy, and the scoped token (looked up,
// minted, revoked) that provision installs in the user's home.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// ensurePolicy writes the policy name when it is missing or not want (with
// an admin token; without one, policies are not read).
func (p *provisioner) ensurePolicy(ctx context.Context, l *line, name, want string) error {
	if p.admin == nil {
		return nil
	}
	have, err := p.admin.Sys().GetPolicyWithContext(ctx, name)
	if err != nil {
		return fmt.Errorf("read policy %s: %v", name, vaultErr(err))
	}
	if have == want {
		return nil
	}
	if p.apply {
		if err := p.admin.Sys().PutPolicyWithContext(ctx, name, want); err != nil {
			return fmt.Errorf("write policy %s: %v", name, vaultErr(err))
		}
	}
	done, would := "wrote", "write"
	if have != "" {
		done, would = "rewrote", "rewrite"
	}
	l.did("%s policy %s", p.verb(done, would), name)
	return nil
}

// ensureToken decides about the token file found (st): keep a live token
// that check accepts ("" = fine, else why not), mint one (when applying)
// when there is none. A token others could read is as good as theirs: it is
// replaced, and returned as exposed, to be revoked once the new one is in.
func (p *provisioner) ensureToken(ctx context.Context, l *line, st *treeStatus, check func(credentials.Secret) (string, error),
	mint func() (*vault.SecretAuth, error), what string) (minted *vault.SecretAuth, exposed credentials.Secret, err error) {
	why := ""
	switch {
	case !st.tokenExists:
		why = "no token file"
	case st.token == "":
		why = "the token file is empty or not a token"
	default:
		if why, err = check(st.token); err != nil {
			return nil, "", err
		}
		if why == "" && st.exposed() {
			why = fmt.Sprintf("the token file was readable by other users (mode %04o): consider the token exposed", st.tokenMode)
			exposed = st.token
			l.warn = true
		}
	}
	switch {
	case why == "":
	case p.admin == nil:
		l.needs = append(l.needs, "a new Vault token ("+why+")")
	case p.apply:
		if minted, err = mint(); err != nil {
			return nil, "", fmt.Errorf("mint a token (%s): %v", why, err)
		}
		l.did("minted a token (%s; %s)", why, what)
	default:
		l.did("would mint a token (%s)", why)
	}
	return minted, exposed, nil
}

// checkToken looks the user's token up with itself (lookup-self is in the
// user's policy, so this needs no admin token). "" means it is live and this
// user's; otherwise the reason it must be replaced.
func (p *provisioner) checkToken(ctx context.Context, tok credentials.Secret, name string) (string, error) {
	info, why, err := p.lookupToken(ctx, tok)
	if why != "" || err != nil {
		return why, err
	}
	if err := store.CheckDrift(info, name); err != nil {
		return "the token file holds a token that is not " + name + "'s", nil
	}
	return "", nil
}

// lookupToken asks Vault about tok with tok itself: its display name and
// policies, or why it is no use ("the token is expired or revoked").
func (p *provisioner) lookupToken(ctx context.Context, tok credentials.Secret) (store.TokenInfo, string, error) {
	info := store.TokenInfo{}
	c, err := p.base.Clone()
	if err != nil {
		return info, "", err
	}
	c.SetToken(tok.Reveal())
	s, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		var re *vault.ResponseError
		if errors.As(err, &re) && (re.StatusCode == 403 || re.StatusCode == 400 || re.StatusCode == 401) {
			return info, "the token is expired or revoked", nil
		}
		return info, "", fmt.Errorf("look up the token: %v", vaultErr(err))
	}
	if s == nil || s.Data == nil {
		return info, "", errors.New("look up the token: empty answer from Vault")
	}
	if info, err = store.TokenInfoOf(s); err != nil {
		return info, "", fmt.Errorf("look up the token: %v", err)
	}
	return info, "", nil
}

// reportStalePolicy, in a run without an admin token (which cannot read
// policies), asks Vault with tok, a live token of the policy's, whether the
// policy is still the old, escapable one (store.ProbePolicy): then the run
// needs an admin token to rewrite it. A probe Vault refuses says nothing.
func (p *provisioner) reportStalePolicy(ctx context.Context, l *line, tok credentials.Secret, policy, probe string) {
	c, err := p.base.Clone()
	if err != nil {
		return
	}
	c.SetToken(tok.Reveal())
	if state, _ := store.ProbePolicy(ctx, c, probe); state == store.PolicyOld {
		l.needs = append(l.needs, "a rewrite of policy "+policy+" (it is the old one, whose glob lets the token reach paths outside its own)")
	}
}

// mint creates the user's periodic orphan token: only the user's policy
// (not even Vault's default: the policy grants what the token needs), the
// fleet's display name.
func (p *provisioner) mint(ctx context.Context, name, policy string) (*vault.SecretAuth, error) {
	return p.mintToken(ctx, &vault.TokenCreateRequest{
		Policies:        []string{policy},
		NoDefaultPolicy: true,
		DisplayName:     store.DisplayNameFor(name),
		Metadata:        map[string]string{"os_user": name, "created_by": "claude-auth-sync provision"},
	})
}

// mintToken creates a periodic (TokenPeriod), renewable orphan token as req
// says. The token travels in request and response bodies only, never in a
// URL or argv.
func (p *provisioner) mintToken(ctx context.Context, req *vault.TokenCreateRequest) (*vault.SecretAuth, error) {
	renewable := true
	req.Period, req.Renewable = TokenPeriod, &renewable
	s, err := p.admin.Auth().Token().CreateOrphanWithContext(ctx, req)
	if err != nil {
		return nil, vaultErr(err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, errors.New("vault returned no token")
	}
	return s.Auth, nil
}

// revokeToken revokes tok (looked up by the admin for its accessor; the token
// itself travels only in a request body).
func (p *provisioner) revokeToken(ctx context.Context, tok credentials.Secret) error {
	s, err := p.admin.Auth().Token().LookupWithContext(ctx, tok.Reveal())
	if err != nil {
		return vaultErr(err)
	}
	acc, _ := s.Data["accessor"].(string)
	if acc == "" {
		return errors.New("vault gave no accessor")
	}
	return vaultErr(p.admin.Auth().Token().RevokeAccessorWithContext(ctx, acc))
}

func (p *provisioner) revoke(ctx context.Context, accessor string) {
	if accessor != "" && p.admin != nil {
		_ = p.admin.Auth().Token().RevokeAccessorWithContext(ctx, accessor)
	}
}

// vaultErr keeps Vault's status and words (they never hold the token) and
// drops the request URL.
func vaultErr(err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("vault answered %d: %s", re.StatusCode, strings.Join(re.Errors, "; "))
	}
	return err
}
