package fleet

import (
	"fmt"
	"os"
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/tokenfile"
)

// DefaultPath is the agents' default CLAUDE_AUTH_VAULT_PATH.
const DefaultPath = "secret/workstation/claude-users/{user}"

// SplitPath finds where the users' documents live from the agents' path
// setting (CLAUDE_AUTH_VAULT_PATH, "" for the default) and mount
// (CLAUDE_AUTH_VAULT_MOUNT, "" = the path's first segment): the mount and
// the base, the path without its last segment "{user}". A path whose last
// segment is not the user cannot be listed user by user.
func SplitPath(path, mount string) (string, string, error) {
	full := strings.Trim(path, "/")
	if full == "" {
		full = DefaultPath
	}
	rest := ""
	if mount == "" {
		var ok bool
		if mount, rest, ok = strings.Cut(full, "/"); !ok {
			return "", "", fmt.Errorf("%w: CLAUDE_AUTH_VAULT_PATH=%q: want <mount>/<path>/{user}", config.ErrConfig, path)
		}
	} else {
		mount = strings.Trim(mount, "/")
		rest = strings.TrimPrefix(full, mount+"/")
	}
	base, ok := strings.CutSuffix(rest, "{user}")
	base = strings.TrimSuffix(base, "/")
	if !ok || (base != "" && !strings.HasSuffix(rest, "/{user}")) || strings.Contains(base, "{user}") ||
		strings.Contains("/"+base+"/", "/../") || strings.HasPrefix(base+"/", "data/") || strings.HasPrefix(base+"/", "metadata/") {
		return "", "", fmt.Errorf("%w: CLAUDE_AUTH_VAULT_PATH=%q: the fleet needs {user} as the last segment of a plain KV path, e.g. %s", config.ErrConfig, path, DefaultPath)
	}
	// Every segment goes into the paths fleet reads and the reader policy.
	if err := store.CheckPath("the Vault mount", mount); err != nil {
		return "", "", fmt.Errorf("%w: %v", config.ErrConfig, err)
	}
	if base != "" {
		if err := store.CheckPath("CLAUDE_AUTH_VAULT_PATH", base); err != nil {
			return "", "", fmt.Errorf("%w: %v", config.ErrConfig, err)
		}
	}
	return mount, base, nil
}

// ReaderPolicy is the name of the fleet reader's policy.
const ReaderPolicy = "claude-auth-sync-fleet-reader"

// ReaderPolicyHCL lets a token list the users and read each user's main
// document's metadata (where each host's health is), and look itself up,
// renew itself (the reader token is periodic) and ask its own capabilities
// (fleet's check of this policy); nothing on any data path, so no login.
// The user is one segment ("+", its dot segments denied by exact rules):
// Vault matches the decoded path and KV v2 resolves dot segments after it,
// so a glob would reach every path of the mount.
func ReaderPolicyHCL(mount, base string) string {
	meta := strings.TrimSuffix(mount+"/metadata/"+base, "/")
	return fmt.Sprintf(`path "%[1]s/" {
  capabilities = ["list"]
}
path "%[1]s/+" {
  capabilities = ["read"]
}
path "%[1]s/." {
  capabilities = ["deny"]
}
path "%[1]s/.." {
  capabilities = ["deny"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
`, meta)
}

// ReaderStaleProbe is a path the reader policy of a version before
// single-segment rules granted (its "<base>/*" glob) and the current one
// refuses (see store.ProbePolicy).
func ReaderStaleProbe(mount, base string) string {
	return strings.TrimSuffix(mount+"/metadata/"+base, "/") + "/policy-probe/x/y"
}

// ReadTokenFile reads an admin's or reader's token from path (see
// tokenfile.Read: a private regular file of the caller's, not a link).
func ReadTokenFile(path string) (credentials.Secret, error) {
	tok, err := tokenfile.Read(path, os.Geteuid())
	if err != nil {
		return "", fmt.Errorf("%w: token file %v", config.ErrConfig, err)
	}
	return tok, nil
}
