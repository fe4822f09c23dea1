package authsync

import (
	"context"
	"fmt"
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
	// OutOfRange: report times (by JSON key) that lie outside years 0-9999,
	// which RFC 3339 cannot write. Each holds the nearest end of that range;
	// the value says what the source held.
	OutOfRange map[string]string `json:"out_of_range,omitempty"`
}

// The instants JSON can carry: RFC 3339 has four-digit years.
var (
	reportTimeMin = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	reportTimeMax = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
)

// ClampTime returns t as status can print it, and whether it had to move. A
// time whose own zone puts it past a year boundary is given in UTC instead;
// one outside the range in UTC as well becomes the nearest end.
func ClampTime(t time.Time) (time.Time, bool) {
	if y := t.Year(); y >= 0 && y <= 9999 {
		return t, false
	}
	switch {
	case t.Before(reportTimeMin):
		return reportTimeMin, true
	case t.After(reportTimeMax):
		return reportTimeMax, true
	}
	return t.UTC(), false
}

// reportTime is t for the report field key, clamped (and noted) if need be.
// Credentials and Vault documents are input: any int64 of ms can be there.
func (r *Report) reportTime(key string, t time.Time) *time.Time {
	c, moved := ClampTime(t)
	if moved {
		if r.OutOfRange == nil {
			r.OutOfRange = map[string]string{}
		}
		side := "after year 9999"
		if c.Equal(reportTimeMin) {
			side = "before year 0"
		}
		r.OutOfRange[key] = fmt.Sprintf("%d ms since the epoch, %s", t.UnixMilli(), side)
	}
	return &c
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
				r.ExpiresAt = r.reportTime("expires_at", t)
			}
			if t := local.OAuth.RefreshTokenExpiresAt(); !t.IsZero() {
				r.LoginDeadline = r.reportTime("login_deadline", t)
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
					r.BackupAt = r.reportTime("backup_backed_up_at", t)
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
