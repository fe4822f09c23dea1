package telemetry

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// AgentState is the agent's live state, kept in agent.json for `status`.
type AgentState struct {
	PID             int         `json:"pid"`
	Version         string      `json:"version,omitempty"`
	Started         time.Time   `json:"started"`
	LastEvent       *time.Time  `json:"last_event,omitempty"`
	LastEventReason string      `json:"last_event_reason,omitempty"`
	LastBackup      *time.Time  `json:"last_backup,omitempty"`
	LastBackupVer   int         `json:"last_backup_version,omitempty"`
	LastBackupLagMs float64     `json:"last_backup_lag_ms,omitempty"`
	Backups         int         `json:"backups"`
	Pending         bool        `json:"pending"`
	PendingSince    *time.Time  `json:"pending_since,omitempty"`
	Retries         int         `json:"retries"`
	VaultDownSince  *time.Time  `json:"vault_down_since,omitempty"`
	VaultTokenTTL   string      `json:"vault_token_ttl,omitempty"`
	LastPass        *PassRecord `json:"last_pass,omitempty"`
	Watch           string      `json:"watch"`
	NextRefresh     *time.Time  `json:"next_refresh,omitempty"`
	NextCheck       *time.Time  `json:"next_check,omitempty"`
	NextCheckWhy    string      `json:"next_check_why,omitempty"`
	Refreshes       int         `json:"refreshes"`
	// The last status line this agent wrote to the journal (and sync.log):
	// its status, when, and its message.
	LastStatus   string     `json:"last_status,omitempty"`
	LastStatusAt *time.Time `json:"last_status_at,omitempty"`
	LastMessage  string     `json:"last_message,omitempty"`
	// LastRefresh: this agent's last refresh of the login.
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
}

// AgentStatePath is agent.json in the state dir.
func AgentStatePath(stateDir string) string { return filepath.Join(stateDir, "agent.json") }

// LoadAgentState reads agent.json (nil when absent).
func LoadAgentState(stateDir string) *AgentState {
	data, err := os.ReadFile(AgentStatePath(stateDir))
	if err != nil {
		return nil
	}
	var s AgentState
	if json.Unmarshal(data, &s) != nil {
		return nil
	}
	return &s
}
