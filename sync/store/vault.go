package store

import (
	"fmt"
	"net/url"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// VaultConfig says where the user's document lives and how to reach it.
type VaultConfig struct {
	Address   string        // VAULT_ADDR
	Mount     string        // KV v2 mount, "secret"
	Path      string        // path inside the mount, "workstation/claude-users/<user>"
	TokenFile string        // the scoped token file
	User      string        // OS user the token must belong to
	Timeout   time.Duration // per request
	// HostID names this workstation: a user on several hosts has one login
	// per host, and each host's is kept only in that host's document. ""
	// keeps the single-host layout (one document, no placement).
	HostID string
	// Knows says whether a login in the main document is this host's own
	// (its lineage saw it): an unclaimed main document holding a login this
	// host never had is another host's.
	Knows func(*credentials.OAuth) bool
}

// Vault is the KV v2 store: the user's document (kv.go) in the place this
// host uses (placement.go), with the scoped token (token.go).
type Vault struct {
	cfg    VaultConfig
	client *vault.Client
	pl     placement
	// accepted: the last Prepare accepted the token (drift check, renew).
	accepted atomic.Bool
	// reportOnly: the last Prepare refused the token as exposed, but it is
	// this user's (drift check): it may still write this host's health.
	reportOnly atomic.Bool
}

// NewVault builds the client from the standard VAULT_* environment (CA, TLS,
// namespace …) with the address and token we were given. The client's own retries
// are off: the engine is the one place that retries.
func NewVault(cfg VaultConfig) (*Vault, error) {
	// Every path this store asks for is built from these: each name must
	// be one safe segment before any request goes out (a client only for
	// other paths, fleet's, has neither).
	if cfg.Mount != "" || cfg.Path != "" {
		if err := CheckPath("the Vault mount", cfg.Mount); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
		if err := CheckPath("the Vault path", cfg.Path); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
	}
	if cfg.HostID != "" {
		if err := CheckSegment("host id (CLAUDE_AUTH_HOST_ID)", cfg.HostID); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("%w: vault client settings (VAULT_CACERT, VAULT_CLIENT_CERT …): %s", ErrMisconfigured, flatten(vc.Error.Error()))
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if u, err := url.Parse(vc.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: VAULT_ADDR=%q is not an address: want https://host:8200", ErrMisconfigured, vc.Address)
	}
	vc.MaxRetries = 0
	if cfg.Timeout > 0 {
		vc.Timeout = cfg.Timeout
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearToken() // never VAULT_TOKEN from the environment: only the scoped file
	return &Vault{cfg: cfg, client: c}, nil
}

func (v *Vault) Describe() string {
	return fmt.Sprintf("vault %s %s/%s", v.client.Address(), v.cfg.Mount, v.docPath())
}

// Client is the Vault client NewVault built (its address checked, its
// retries off, no token unless one is set), for the commands that read
// other paths than the user's document (fleet).
func (v *Vault) Client() *vault.Client { return v.client }
