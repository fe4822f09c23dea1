package telemetry

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// Report is `status`: what a user or admin needs to see, and never a secret.
// Its JSON is documented field by field in docs/status-json.md (a test holds
// the two together); the text form shows the same values.
type Report struct {
	User string `json:"user"`
	Mode string `json:"mode"` // rotating | setup-token | unknown
	// Usable says whether the login works as far as this host can tell
	// (ExitCode: 0 usable, 3 not logged in, 1 unusable); Unusable says why not.
	Usable   bool   `json:"usable"`
	Unusable string `json:"unusable,omitempty"`
	// Verdict is one line on the login, and NextStep the one thing to do
	// next ("" when nothing needs doing): never a step that cannot work.
	Verdict         string            `json:"verdict"`
	NextStep        string            `json:"next_step,omitempty"`
	ExitCode        int               `json:"exit_code"`
	Store           string            `json:"store"`
	CredentialsFile string            `json:"credentials_file"`
	SymlinkTarget   string            `json:"symlink_target,omitempty"`
	Login           string            `json:"login"` // usable | missing | no-login | clobbered | unreadable
	LoginProblem    string            `json:"login_problem,omitempty"`
	ExpiresAt       *time.Time        `json:"expires_at,omitempty"`
	LoginDeadline   *time.Time        `json:"login_deadline,omitempty"`
	SetupToken      *SetupTokenReport `json:"setup_token,omitempty"`
	Backup          *StoreBackup      `json:"backup,omitempty"`
	LastBackup      *BackupRecord     `json:"last_backup,omitempty"`
	LastCheck       *CheckRecord      `json:"last_check,omitempty"`
	LastPass        *PassRecord       `json:"last_pass,omitempty"`
	// VaultTokenTTL is in whole seconds.
	VaultTokenTTL *int64 `json:"vault_token_ttl,omitempty"`
	VaultError    string `json:"vault_error,omitempty"`
	// VaultPolicy: whether the token's policy is the current one, the old
	// escapable one (run provision), or unknown (Vault would not say).
	VaultPolicy string      `json:"vault_policy,omitempty"`
	Claude      ClaudeCLI   `json:"claude"`
	Agent       AgentReport `json:"agent"`
	// MCP is the user's MCP server logins, as mcp.json holds them. It never
	// makes the verdict or the exit code: those are the Claude login's.
	MCP MCPReport `json:"mcp"`
	// OutOfRange: report times (by JSON key) that lie outside years 0-9999,
	// which RFC 3339 cannot write. Each holds the nearest end of that range;
	// the value says what the source held.
	OutOfRange map[string]string `json:"out_of_range,omitempty"`
}

// StoreBackup is the store's latest copy of the login (whichever host wrote it).
type StoreBackup struct {
	Version    int        `json:"version"`
	BackedUpAt *time.Time `json:"backed_up_at,omitempty"`
	// MatchesFile: the copy is the credentials file's login (absent when
	// either cannot be read).
	MatchesFile *bool `json:"matches_file,omitempty"`
}

// SetupTokenReport is the admin's setup token's end (setup-token mode).
type SetupTokenReport struct {
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// ExpiresFrom: "vault" (setup_token_expires_at) or "first-seen" (one
	// year after this host first saw the token).
	ExpiresFrom string `json:"expires_from,omitempty"`
}

// ClaudeCLI is the claude CLI the check runs.
type ClaudeCLI struct {
	Path    string   `json:"path,omitempty"`    // "" = not found
	Version string   `json:"version,omitempty"` // its --version; "" = it did not say
	Tried   []string `json:"tried,omitempty"`   // where it was looked for, when not found
}

// AgentReport is the agent's live state; the fields of AgentState appear
// only while it runs.
type AgentReport struct {
	Running bool `json:"running"`
	PID     int  `json:"pid,omitempty"`
	*AgentState
}

// MCPReport is what the agent (and exec) last wrote of the user's MCP server
// logins in the state dir's mcp.json: never a token or a URL.
type MCPReport struct {
	// Off: CLAUDE_AUTH_MCP=off; Claude refreshes its MCP logins itself, and
	// the servers mcp.json may still list are not shown.
	Off bool `json:"off,omitempty"`
	// Error: mcp.json could not be read (the counts are then 0, the list empty).
	Error string `json:"error,omitempty"`
	// Updated is when the agent or exec last wrote mcp.json: the states
	// below are as of then.
	Updated        *time.Time  `json:"updated,omitempty"`
	RefreshesTotal int         `json:"refreshes_total"`
	FailuresTotal  int         `json:"failures_total"`
	Servers        []MCPServer `json:"servers"`
	// NextStep names the servers that need a new login (state needs-login).
	NextStep string `json:"next_step,omitempty"`
}

// MCPServer is one server's line of mcp.json. Name is the user's (Claude's
// config), printable.
type MCPServer struct {
	Name        string     `json:"name"`
	ID          string     `json:"id"`
	State       string     `json:"state"` // ok, retrying, needs-login, skipped
	Reason      string     `json:"reason,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	LastRefresh *time.Time `json:"last_refresh,omitempty"`
	NextRefresh *time.Time `json:"next_refresh,omitempty"`
}

// SetupTokenLifetime is how long `claude setup-token` tokens live when the
// admin did not record the end.
const SetupTokenLifetime = 365 * 24 * time.Hour

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
func (t *Reporter) Status(ctx context.Context) Report {
	r := Report{User: t.Cfg.User, Store: t.Store.Describe(), CredentialsFile: t.Cfg.CredentialsFile, Mode: "unknown"}
	rec := t.LoadRecord()
	r.LastBackup, r.LastCheck, r.LastPass = rec.LastBackup, rec.LastCheck, rec.LastPass

	local, err := credentials.Read(t.Cfg.CredentialsFile)
	r.fileLogin(local, err)

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var setupEnd time.Time
	if r.vaultToken(ctx, t.Vault) {
		setupEnd = r.storeDoc(ctx, t.Store, rec, local)
	}
	found := t.Cfg.FindClaude()
	r.Claude.Path = found.Path
	if found.Path == "" {
		r.Claude.Tried = found.Tried
	} else {
		r.Claude.Version = claudeVersion(ctx, found.Path, t.Cfg.ChildEnviron())
	}
	r.agent(t.Cfg.StateDir, t.Cfg.User, t.Cfg.HostID)
	r.MCP = mcpReport(t.Cfg.StateDir, t.Cfg.MCPOff, r.Agent.Running)
	var why, step string
	r.Usable, why, step, r.ExitCode = r.usability(local, setupEnd, t.now())
	if r.Usable {
		r.Verdict, r.NextStep = r.verdict()
	} else {
		r.Verdict, r.NextStep, r.Unusable = "not usable: "+why, step, why+"; "+step
	}
	// Much of it is the user's (their file's link target and errors, their
	// state.json and agent.json, their CLI's answers), and root reads it
	// (status --user): nothing in it may drive a terminal.
	printableStrings(reflect.ValueOf(&r).Elem())
	return r
}

// printableStrings makes every string reachable from v printable.
func printableStrings(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		if v.CanSet() {
			v.SetString(printable.String(v.String()))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			printableStrings(v.Elem())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			printableStrings(v.Field(i))
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			printableStrings(v.Index(i))
		}
	case reflect.Map:
		if v.Type().Elem().Kind() != reflect.String {
			return
		}
		for _, k := range v.MapKeys() {
			v.SetMapIndex(k, reflect.ValueOf(printable.String(v.MapIndex(k).String())).Convert(v.Type().Elem()))
		}
	}
}

// fileLogin is what the credentials file holds (err: it could not be read).
func (r *Report) fileLogin(local *credentials.Local, err error) {
	if err != nil {
		r.Login, r.LoginProblem = "unreadable", err.Error()
		return
	}
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

// vaultToken looks the Vault token up (with the local store there is
// none): its TTL, or why the store cannot be asked (false).
func (r *Report) vaultToken(ctx context.Context, v *store.Vault) bool {
	if v == nil {
		return true
	}
	if err := v.LoadToken(); err != nil {
		r.VaultError = err.Error()
		return false
	}
	info, err := v.LookupSelf(ctx)
	if err != nil {
		r.VaultError = err.Error()
		return false
	}
	ttl := int64(info.TTL / time.Second)
	r.VaultTokenTTL = &ttl
	state, _ := v.Policy(ctx)
	r.VaultPolicy = string(state)
	return true
}

// storeDoc reads the store's document: the mode, the setup token's end
// (returned; zero when unknown) and the backup.
func (r *Report) storeDoc(ctx context.Context, st store.Store, rec *Record, local *credentials.Local) time.Time {
	doc, err := st.Read(ctx)
	if err != nil {
		r.VaultError = err.Error()
		return time.Time{}
	}
	r.Mode = "rotating"
	var setupEnd time.Time
	if tok := doc.SetupToken(); tok != "" {
		r.Mode = "setup-token"
		r.SetupToken = &SetupTokenReport{ExpiresFrom: "vault"}
		setupEnd = doc.SetupTokenExpiresAt()
		if setupEnd.IsZero() {
			if first, ok := rec.SetupTokenFirstSeen[tok.Fingerprint()]; ok {
				setupEnd, r.SetupToken.ExpiresFrom = first.Add(SetupTokenLifetime), "first-seen"
			} else {
				r.SetupToken.ExpiresFrom = "" // no pass has seen it yet
			}
		}
		if !setupEnd.IsZero() {
			r.SetupToken.ExpiresAt = r.reportTime("setup_token.expires_at", setupEnd)
		}
	}
	if doc.Exists {
		r.Backup = &StoreBackup{Version: doc.Version}
		if t := doc.BackedUpAt(); !t.IsZero() {
			r.Backup.BackedUpAt = r.reportTime("backup.backed_up_at", t)
		}
		if vo, err := doc.OAuth(); err == nil && vo != nil && local != nil && local.OAuth != nil {
			same := vo.Equal(local.OAuth)
			r.Backup.MatchesFile = &same
		}
	}
	return setupEnd
}

// agent is the running agent's live state (agent.json).
func (r *Report) agent(stateDir, userName, hostID string) {
	var pid string
	r.Agent.Running, pid = lock.Held(stateDir, lock.Agent)
	r.Agent.PID, _ = strconv.Atoi(pid)
	if !r.Agent.Running {
		// The state dir (and its agent.lock) may be gone under a running
		// agent: its socket, which no path names, still says it runs.
		uid := os.Getuid()
		if u, err := osuser.Lookup(userName); err == nil {
			uid, _ = strconv.Atoi(u.Uid)
		}
		r.Agent.PID, r.Agent.Running = lock.AgentRunning(uid, userName+"@"+hostID)
	}
	if !r.Agent.Running {
		return
	}
	if a := LoadAgentState(stateDir); a != nil {
		st := *a
		st.VaultTokenTTL = "" // the report's own vault_token_ttl says it, in seconds
		if r.Login != credentials.Usable.String() || r.Mode == "setup-token" {
			st.NextRefresh = nil // nothing to refresh while logged out, or on a setup token
		}
		r.Agent.AgentState = &st
	}
}

// mcpReport reads mcp.json for status. An unreadable one is said, never
// fatal; with MCP off its servers (no longer looked after) are left out.
// With no agent running nobody keeps a server's next refresh, so none is
// shown: what mcp.json still says would be a promise nobody keeps.
func mcpReport(stateDir string, off, agentRunning bool) MCPReport {
	r := MCPReport{Off: off, Servers: []MCPServer{}}
	st, err := mcp.Load(stateDir)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	at := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		c, _ := ClampTime(*t)
		return &c
	}
	r.RefreshesTotal, r.FailuresTotal, r.Updated = st.RefreshesTotal, st.FailuresTotal, at(st.Updated)
	if off {
		return r
	}
	var relogin []string
	for _, s := range st.Servers {
		name := printable.Short(s.Name, 64)
		next := s.NextRefresh
		if !agentRunning {
			next = nil
		}
		r.Servers = append(r.Servers, MCPServer{Name: name, ID: printable.Short(s.ID, 16), State: s.State, Reason: s.Reason,
			ExpiresAt: at(s.ExpiresAt), LastRefresh: at(s.LastRefresh), NextRefresh: at(next)})
		if s.State == mcp.StateNeedsLogin {
			relogin = append(relogin, strconv.Quote(name))
		}
	}
	switch len(relogin) {
	case 0:
	case 1:
		r.NextStep = "MCP server " + relogin[0] + ": log in again with /mcp in Claude Code"
	default:
		r.NextStep = "MCP servers " + strings.Join(relogin, ", ") + ": log in again to each with /mcp in Claude Code"
	}
	return r
}

// Exit codes of `status`, like `systemctl is-active`: whether the login is
// usable. 2 stays the usage error.
const (
	StatusUsable      = 0
	StatusUnusable    = 1 // clobbered, unreadable, refused by the last check, past its deadline
	StatusNotLoggedIn = 3 // no login in the file (a logout, or a new home)
)

// usability decides the exit code from what the report found, and says
// why the login is not usable and the one step that can mend it.
func (r *Report) usability(local *credentials.Local, setupEnd, now time.Time) (ok bool, why, step string, code int) {
	if r.Mode == "setup-token" {
		// Claude runs on the admin's token, whatever the file holds.
		if !setupEnd.IsZero() && !setupEnd.After(now) {
			return false, "the setup token expired", "ask your admin for a new one", StatusUnusable
		}
		return true, "", "", StatusUsable
	}
	login := "run `claude auth login`"
	restore := login + " (the store holds no backup to restore)"
	if r.Backup != nil {
		restore = "run `claude-auth-sync restore` (the store holds a backup), or `claude auth login`"
	}
	switch r.Login {
	case credentials.Missing.String(), credentials.NoLogin.String():
		return false, "not logged in", restore, StatusNotLoggedIn
	case credentials.Usable.String():
	default:
		why := "the login in the credentials file is " + r.Login
		if r.LoginProblem != "" {
			why += " (" + r.LoginProblem + ")"
		}
		return false, why, restore, StatusUnusable
	}
	if r.LoginDeadline != nil && !r.LoginDeadline.After(now) {
		return false, "the login passed its deadline", login, StatusUnusable
	}
	// A check that refused this very login (not one before it) says it is dead.
	if c := r.LastCheck; c != nil && (c.Result == check.Dead.String() || c.Result == check.Auth.String()) &&
		c.Subject != nil && local != nil && local.OAuth != nil && c.Subject.Login == local.OAuth.RefreshToken().Short() {
		return false, "the last check refused this login: " + c.Reason, login, StatusUnusable
	}
	return true, "", "", StatusUsable
}

// verdict is the report's one line and its one next step, for a usable
// login (an unusable one's come from usability).
func (r *Report) verdict() (string, string) {
	v := "usable"
	if r.Mode == "setup-token" {
		v = "usable (on the admin's setup token)"
	}
	switch {
	case r.VaultError != "":
		return v + ", but the store cannot be asked", "fix what `vault error` says; backups wait until then"
	case r.LastCheck != nil && r.LastCheck.Result != check.OK.String():
		return v + ", but the last check did not pass: " + r.LastCheck.Reason, "run `claude-auth-sync sync` to check again"
	case !r.Agent.Running:
		return v + ", but no agent looks after it", "start it: `systemctl start claude-auth-sync-agent@" + r.User + "` (or run `claude-auth-sync run`)"
	}
	return v, ""
}

// claudeVersion is the first line of `bin --version`, printable: the CLI is
// the user's, and so is what it prints. It runs as the check does: a session
// of its own, output through pipes, env the allow-listed one when root acts
// for the user.
func claudeVersion(ctx context.Context, bin string, env []string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if session.Isolate(cmd) != nil {
		return ""
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if cmd.Run() != nil {
		return ""
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	return printable.Short(line, 200)
}
