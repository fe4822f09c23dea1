package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// PolicyHCL is the per-user policy: create/read/update on the user's data
// path and on its per-host documents (<path>/hosts/<host id>, for a user on
// several workstations), read on their metadata, and on the main document's
// metadata patch of custom_metadata only (each host's health; not
// max_versions, delete_version_after or cas_required); the token's own
// lookup, renew and capabilities (the token has no default policy, and
// status asks whether its policy is this one). No delete, no patch of data,
// nothing on anyone else's path.
//
// Vault matches a rule against the decoded request path and KV v2 resolves
// dot segments after it, so a glob ("hosts/*") would let ".../hosts/../../V"
// through to any path of the mount: the host is one segment ("+"), and the
// dot segments, which "+" matches too, are denied by exact rules (an exact
// path wins over a "+" one).
func PolicyHCL(mount, path string) string {
	return fmt.Sprintf(`path "%[1]s/data/%[2]s" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/hosts/+" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/metadata/%[2]s" {
  capabilities = ["read", "patch"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "%[1]s/metadata/%[2]s/hosts/+" {
  capabilities = ["read"]
}
%[3]spath "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
`, mount, path, denyDotSegments(mount+"/data/"+path+"/hosts/", mount+"/metadata/"+path+"/hosts/"))
}

// denyDotSegments is the HCL that denies "." and ".." (and the empty
// segment a trailing "/" makes) right after each prefix: where a policy has
// a "+", which matches them too.
func denyDotSegments(prefixes ...string) string {
	var b strings.Builder
	for _, p := range prefixes {
		for _, seg := range []string{"", ".", ".."} {
			fmt.Fprintf(&b, "path %q {\n  capabilities = [\"deny\"]\n}\n", p+seg)
		}
	}
	return b.String()
}

// StalePolicyProbe is a path the policy of a version before single-segment
// rules granted (its "hosts/*" glob) and the current one refuses: asked with
// capabilities-self, anything but ["deny"] says the token's policy is the
// old, escapable one.
func StalePolicyProbe(mount, path string) string {
	return mount + "/data/" + path + "/hosts/policy-probe/x"
}

// PolicyState is what a probe found out about a token's policy.
type PolicyState string

const (
	PolicyCurrent PolicyState = "current"
	PolicyOld     PolicyState = "old"     // the escapable glob: run provision
	PolicyUnknown PolicyState = "unknown" // Vault would not say (refused, unreachable)
)

// ProbePolicy asks Vault (capabilities-self, with c's token) what the token
// may do on probe, a path only an old policy grants: ["deny"] is the current
// policy, any capability the old one. A refusal or an error is unknown, never
// old: a warning must not be a false alarm.
func ProbePolicy(ctx context.Context, c *vault.Client, probe string) (PolicyState, error) {
	caps, err := c.Sys().CapabilitiesSelfWithContext(ctx, probe)
	if err != nil {
		return PolicyUnknown, err
	}
	switch {
	case len(caps) == 0:
		return PolicyUnknown, nil
	case len(caps) == 1 && caps[0] == "deny":
		return PolicyCurrent, nil
	}
	return PolicyOld, nil
}

// Policy says whether this user's token still carries the old, escapable
// policy (see ProbePolicy).
func (v *Vault) Policy(ctx context.Context) (PolicyState, error) {
	return ProbePolicy(ctx, v.client, StalePolicyProbe(v.cfg.Mount, v.cfg.Path))
}

// CheckSegment refuses a name that would not be exactly one safe segment of
// a Vault path: empty, "." or "..", or holding "/", "%", "+", "*", a
// control character or a space (Vault decodes the path before matching its
// policies, and KV v2 resolves dot segments after). what names the setting
// for the message.
func CheckSegment(what, name string) error {
	switch name {
	case "", ".", "..":
		return fmt.Errorf("%s %q is %w: want a name that is not empty, \".\" or \"..\"", what, name, ErrPathSegment)
	}
	for _, r := range name {
		if r < 0x21 || r == 0x7f || (r >= 0x80 && r < 0xa0) || strings.ContainsRune("/%+*\\#?", r) {
			return fmt.Errorf("%s %q is %w: it may not hold '/', '%%', '+', '*', '\\', '#', '?', a space or a control character", what, name, ErrPathSegment)
		}
	}
	return nil
}

// ErrPathSegment marks a name CheckSegment refused.
var ErrPathSegment = errors.New("not a usable Vault path segment")

// CheckPath refuses a Vault path (inside a mount, or a mount itself) whose
// segments are not each a safe one (CheckSegment): no "//", no dot segments.
func CheckPath(what, path string) error {
	for _, seg := range strings.Split(path, "/") {
		if err := CheckSegment(what, seg); err != nil {
			return fmt.Errorf("%w (in %q)", err, path)
		}
	}
	return nil
}
