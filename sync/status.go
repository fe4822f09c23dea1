package authsync

import (
	"context"
	"os/exec"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Report is `status`: what a user or admin needs to see, and never a secret.
type Report struct {
	User            string        `json:"user"`
	Mode            string        `json:"mode"` // rotating | setup-token | unknown
	Store           string        `json:"store"`
	CredentialsFile string        `json:"credentials_file"`
	SymlinkTarget   string        `json:"symlink_target,omitempty"`
	Login           string        `json:"login"` // usable | missing | no-login | clobbered
	LoginProblem    string        `json:"login_problem,omitempty"`
	ExpiresAt       *time.Time    `json:"expires_at,omitempty"`
	LoginDeadline   *time.Time    `json:"login_deadline,omitempty"`
	ClaudeVersion   string        `json:"claude_version,omitempty"`
	LastBackup      *BackupRecord `json:"last_backup,omitempty"`
	BackupVersion   int           `json:"backup_version,omitempty"`
	BackupAt        *time.Time    `json:"backup_backed_up_at,omitempty"`
	BackupCurrent   *bool         `json:"backup_matches_file,omitempty"`
	LastCheck       *CheckRecord  `json:"last_check,omitempty"`
	LastPass        *PassRecord   `json:"last_pass,omitempty"`
	VaultTokenTTL   string        `json:"vault_token_ttl,omitempty"`
	VaultError      string        `json:"vault_error,omitempty"`
	AgentRunning    bool          `json:"agent_running"`
	AgentPID        string        `json:"agent_pid,omitempty"`
	Agent           *AgentState   `json:"agent,omitempty"`
}

// Status gathers the report. It asks Vault (lookup-self, read) but changes
// nothing: no renew, no write.
func (e *Engine) Status(ctx context.Context) Report {
	r := Report{User: e.Cfg.User, Store: e.Store.Describe(), CredentialsFile: e.Cfg.CredentialsFile, Mode: "unknown"}
	rec := loadRecord(e.recordPath())
	r.LastBackup, r.LastCheck, r.LastPass = rec.LastBackup, rec.LastCheck, rec.LastPass

	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		r.Login, r.LoginProblem = "unreadable", err.Error()
	} else {
		r.Login = local.State.String()
		if local.Problem != nil {
			r.LoginProblem = local.Problem.Error()
		}
		if local.Symlink {
			r.SymlinkTarget = local.Target
		}
		if local.OAuth != nil {
			if t := local.OAuth.ExpiresAt(); !t.IsZero() {
				r.ExpiresAt = &t
			}
			if t := local.OAuth.RefreshTokenExpiresAt(); !t.IsZero() {
				r.LoginDeadline = &t
			}
		}
	}

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	vaultOK := true
	if e.Vault != nil {
		if err := e.Vault.LoadToken(); err != nil {
			r.VaultError, vaultOK = err.Error(), false
		} else if info, err := e.Vault.LookupSelf(ctx); err != nil {
			r.VaultError, vaultOK = err.Error(), false
		} else {
			r.VaultTokenTTL = info.TTL.String()
		}
	}
	if vaultOK {
		if doc, err := e.Store.Read(ctx); err != nil {
			r.VaultError = err.Error()
		} else {
			r.Mode = "rotating"
			if doc.SetupToken() != "" {
				r.Mode = "setup-token"
			}
			if doc.Exists {
				r.BackupVersion = doc.Version
				if t := doc.BackedUpAt(); !t.IsZero() {
					r.BackupAt = &t
				}
				if vo, err := doc.OAuth(); err == nil && vo != nil && local != nil && local.OAuth != nil {
					same := vo.Equal(local.OAuth)
					r.BackupCurrent = &same
				}
			}
		}
	}
	r.ClaudeVersion = claudeVersion(ctx, e.Cfg.ClaudeBin)
	r.AgentRunning, r.AgentPID = lock.Held(e.Cfg.StateDir, lock.Agent)
	if r.AgentRunning {
		r.Agent = LoadAgentState(e.Cfg.StateDir)
	}
	return r
}

func claudeVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}
