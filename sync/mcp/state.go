package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

// StateFile is mcp.json in the state dir: what `status` and the metrics
// show of the user's MCP logins. It holds no secret and no URL.
const StateFile = "mcp.json"

// stateLock orders the writers of mcp.json (the agent, exec).
const stateLock = "mcp-state.lock"

// State is mcp.json.
type State struct {
	Updated *time.Time `json:"updated,omitempty"`
	// RefreshesTotal and FailuresTotal count this user's MCP refreshes by
	// us and the failed ones (invalid_grant, unreachable, not written),
	// over every server, since the state dir was made.
	RefreshesTotal int           `json:"refreshes_total"`
	FailuresTotal  int           `json:"failures_total"`
	Servers        []ServerState `json:"servers"`
}

// The states of a server (ServerState.State).
const (
	StateOK         = "ok"
	StateRetrying   = "retrying"    // the last refresh failed; tried again with backoff
	StateNeedsLogin = "needs-login" // the server refused the refresh token: /mcp in Claude Code
	StateSkipped    = "skipped"     // left to Claude (CLAUDE_AUTH_MCP_SKIP, no refresh token, ...)
)

// States are every state, in the order status and the metrics list them.
var States = [...]string{StateOK, StateRetrying, StateNeedsLogin, StateSkipped}

// ServerState is one server's line.
type ServerState struct {
	Name string `json:"name"`
	ID   string `json:"id"` // a short hash of the entry key (two entries may share a name)
	// State: one of States.
	State       string     `json:"state"`
	Reason      string     `json:"reason,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	NextRefresh *time.Time `json:"next_refresh,omitempty"`
}

// Load reads mcp.json (a zero State when there is none).
func Load(stateDir string) (State, error) {
	var st State
	b, err := os.ReadFile(filepath.Join(stateDir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, errors.New("mcp.json is not readable")
	}
	return st, nil
}

// update changes mcp.json under its flock; wrote says whether it did.
func update(stateDir string, fn func(*State)) (wrote bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	lk, err := lock.Wait(ctx, stateDir, stateLock)
	if err != nil {
		return false, err
	}
	defer lk.Unlock()
	st, _ := Load(stateDir)
	before, _ := json.Marshal(st)
	fn(&st)
	after, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return false, err
	}
	if compact, _ := json.Marshal(st); string(compact) == string(before) {
		return false, nil
	}
	_, err = atomicfile.Write(filepath.Join(stateDir, StateFile), append(after, '\n'), 0o600)
	return err == nil, err
}

// updated runs update and tells Changed when it wrote.
func (m *Manager) updated(fn func(*State)) {
	wrote, err := update(m.cfg.StateDir, fn)
	if err != nil {
		m.cfg.Diag.Warn("cannot update mcp.json", "err", err)
	}
	if wrote && m.cfg.Changed != nil {
		m.cfg.Changed()
	}
}

// bump adds to the counters; a refresh of key at `at` is that server's last.
func (m *Manager) bump(refreshes, failures int, key string, at time.Time) {
	m.updated(func(st *State) {
		st.RefreshesTotal += refreshes
		st.FailuresTotal += failures
		if key == "" {
			return
		}
		id := refresh.KeyID(key)
		for i := range st.Servers {
			if st.Servers[i].ID == id {
				st.Servers[i].LastRefresh = &at
			}
		}
	})
}

// save writes what the Manager knows of each server. A last refresh by
// another of our processes (exec) that mcp.json holds is kept.
func (m *Manager) save(now time.Time) {
	servers := m.Servers()
	m.updated(func(st *State) {
		last := map[string]*time.Time{}
		for _, s := range st.Servers {
			last[s.ID] = s.LastRefresh
		}
		for i, s := range servers {
			if old := last[s.ID]; old != nil && (s.LastRefresh == nil || old.After(*s.LastRefresh)) {
				servers[i].LastRefresh = old
			}
		}
		was, _ := json.Marshal(st.Servers)
		is, _ := json.Marshal(servers)
		if string(was) == string(is) || len(servers) == 0 && len(st.Servers) == 0 {
			return
		}
		st.Servers = servers
		st.Updated = &now
	})
}
