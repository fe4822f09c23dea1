package fleet

import (
	"context"
	"errors"
	"slices"
	"strings"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// ProbeReaderPolicy says whether c's token, a reader token, carries the
// current reader policy or the old one whose glob reads any metadata of the
// mount. capabilities-self answers for a current policy; the old one did not
// grant it (and a reader token has no default policy), so on a refusal the
// probe path is read instead: the old glob lets the read through to KV (404,
// or a document), where the current policy answers 403. Anything else is
// unknown: never a false alarm.
func ProbeReaderPolicy(ctx context.Context, c *vault.Client, mount, base string) store.PolicyState {
	probe := ReaderStaleProbe(mount, base)
	state, err := store.ProbePolicy(ctx, c, probe)
	if err == nil {
		return state
	}
	_, err = c.Logical().ReadWithContext(ctx, probe)
	var re *vault.ResponseError
	switch {
	case err == nil, errors.As(err, &re) && re.StatusCode == 404:
		return store.PolicyOld
	}
	return store.PolicyUnknown
}

// Policies is what fleet could tell about the policies provision writes:
// the reader's, and the users' (only an admin token may read those).
type Policies struct {
	Reader store.PolicyState
	// Users: current when every listed user's policy could be read and is
	// the current one, old when some is not (OldUsers), unknown otherwise.
	Users    store.PolicyState
	OldUsers []string
}

// CheckPolicies finds out which policies are still the old ones, asking
// with the reader's token (policies from its lookup-self): a reader token
// probes its own policy; a token that may read policies (an admin's)
// compares the reader's and each user's text with what provision writes now
// (provision rewrites any that differ).
func (r *Reader) CheckPolicies(ctx context.Context, tokenPolicies, users []string) Policies {
	out := Policies{Reader: store.PolicyUnknown, Users: store.PolicyUnknown}
	own := slices.DeleteFunc(slices.Clone(tokenPolicies), func(p string) bool { return p == "default" })
	if slices.Equal(own, []string{ReaderPolicy}) {
		out.Reader = ProbeReaderPolicy(ctx, r.Client, r.Mount, r.Base)
		return out
	}
	state, ok := r.comparePolicy(ctx, ReaderPolicy, ReaderPolicyHCL(r.Mount, r.Base))
	if !ok {
		return out // not an admin's token either: nothing more to learn
	}
	out.Reader = state
	out.Users = store.PolicyCurrent
	for _, u := range users {
		if store.CheckSegment("user", u) != nil {
			continue
		}
		path := u
		if r.Base != "" {
			path = r.Base + "/" + u
		}
		switch state, ok := r.comparePolicy(ctx, store.PolicyFor(u), store.PolicyHCL(r.Mount, path)); {
		case !ok:
			out.Users = store.PolicyUnknown
		case state == store.PolicyOld:
			out.OldUsers = append(out.OldUsers, u)
		}
	}
	if len(out.OldUsers) > 0 {
		out.Users = store.PolicyOld
	}
	return out
}

// comparePolicy reads policy name and compares it with want: old is a text
// that differs and holds a glob rule (what earlier versions wrote; any glob
// is escapable with dot segments); a text that differs without one is not
// called old (provision rewrites it all the same). ok is false when it
// cannot be read (refused, unreachable); a missing policy is current
// (nothing old to rewrite).
func (r *Reader) comparePolicy(ctx context.Context, name, want string) (store.PolicyState, bool) {
	have, err := r.Client.Sys().GetPolicyWithContext(ctx, name)
	switch {
	case err != nil:
		return store.PolicyUnknown, false
	case have != want && strings.Contains(have, `*"`):
		return store.PolicyOld, true
	}
	return store.PolicyCurrent, true
}
