package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

const statusHelp = `Usage: claude-auth-sync status [--json] [flags]

Show, without changing anything and without printing any secret: first one
verdict line (usable, or why not) and the one next step that can work (none
when nothing needs doing; never restore without a backup), then the mode
(rotating login or setup token) and the setup token's end, whether the login is
usable, the store, the credentials file and its state, when the access token
expires, the login's own deadline, the store's backup (version, when, whether it
matches the file), the last backup, check and pass this host made, the Vault
token's TTL, the claude CLI (path and version, or where it was looked for) and
the agent's live state (its last journal line, updated on every backup,
restore, refresh and check), and the MCP server logins the agent refreshes
(each server's state, token expiry, last and next refresh; a server that needs
a new login adds a next step, never a verdict). Relative times are computed as it prints. --json prints the same as one JSON document, described
field by field in docs/status-json.md.

Exit status, like "systemctl is-active" (scripts can test the login):
  0  the login is usable
  1  the login is unusable: clobbered or unreadable file, refused by the last
     check, past its deadline, or an expired setup token
  2  usage error
  3  not logged in (no login in the credentials file)
  78 configuration error
`

func statusFlags(fs *flagSet) action {
	var c commonFlags
	c.register(fs)
	c.registerClaude(fs) // for the Claude CLI's version
	asJSON := fs.Bool("json", false, "print JSON")
	return func(args []string, stdout, stderr io.Writer) int {
		eng, code := begin(fs, &c, args, stdout, stderr, statusHelp)
		if eng == nil {
			return code
		}
		ctx, cancel := signalContext()
		defer cancel()
		r := eng.Telemetry.Status(ctx)
		if *asJSON {
			if code := printJSON(stdout, stderr, r); code != 0 {
				return code
			}
			return r.ExitCode
		}
		printStatus(stdout, r, time.Now())
		return r.ExitCode
	}
}

// printJSON writes the report, or says on stderr why it cannot. Encoding goes
// into a buffer first, so a failure never leaves half a document (or nothing
// and a bare exit 1).
func printJSON(stdout, stderr io.Writer, r telemetry.Report) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync status: cannot write the report as JSON: %v\n", err)
		return engine.ExitFail
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync status: %v\n", err)
		return engine.ExitFail
	}
	return 0
}

// printStatus writes r for a person, its times relative to now.
func printStatus(w io.Writer, r telemetry.Report, now time.Time) {
	p := statusPrinter{w: w, r: r, now: now}
	// One verdict, first, and one step: the lines below are its evidence.
	p.line("verdict", r.Verdict)
	p.line("next step", r.NextStep)
	// An MCP server to log in to again is a step too, but never the
	// verdict's: that is the Claude login's.
	p.line("next step", printable.String(r.MCP.NextStep))
	p.overview()
	p.credentials()
	p.history()
	p.claude()
	p.agent()
	p.mcp()
}

// statusPrinter writes the report as "key: value" lines, one section at a
// time, in the order the help text lists them.
type statusPrinter struct {
	w   io.Writer
	r   telemetry.Report
	now time.Time
}

// line writes k: v, nothing when v is empty.
func (p *statusPrinter) line(k, v string) {
	if v != "" {
		fmt.Fprintf(p.w, "%-16s %s\n", k+":", v)
	}
}

// reportTime is t, but a time the report had to clamp is shown as what the
// source held.
func (p *statusPrinter) reportTime(key string, t time.Time) string {
	if v, ok := p.r.OutOfRange[key]; ok {
		return "out of range (" + v + ")"
	}
	return when(t, p.now)
}

// overview: whose login, the mode and the setup token's end.
func (p *statusPrinter) overview() {
	r := p.r
	p.line("user", r.User)
	p.line("mode", r.Mode)
	if st := r.SetupToken; st != nil {
		switch {
		case st.ExpiresAt == nil:
			p.line("setup token", "end not known yet (one year after the first pass sees it)")
		case st.ExpiresFrom == "first-seen":
			p.line("setup token", "expires "+p.reportTime("setup_token.expires_at", *st.ExpiresAt)+", one year after this host first saw it")
		default:
			p.line("setup token", "expires "+p.reportTime("setup_token.expires_at", *st.ExpiresAt))
		}
	}
}

// credentials: the store, the credentials file, the login in it and its
// times.
func (p *statusPrinter) credentials() {
	r := p.r
	p.line("store", r.Store)
	cred := r.CredentialsFile
	if r.SymlinkTarget != "" {
		cred += " -> " + r.SymlinkTarget
	}
	p.line("credentials", cred)
	login := r.Login
	if r.LoginProblem != "" {
		login += " (" + r.LoginProblem + ")"
	}
	p.line("login", login)
	if r.ExpiresAt != nil {
		p.line("access expires", p.reportTime("expires_at", *r.ExpiresAt))
	}
	if r.LoginDeadline != nil {
		p.line("login deadline", p.reportTime("login_deadline", *r.LoginDeadline))
	}
}

// history: the store's backup, what this host did last, and Vault's side.
func (p *statusPrinter) history() {
	r, now := p.r, p.now
	if b := r.Backup; b != nil {
		v := fmt.Sprintf("v%d", b.Version)
		if b.BackedUpAt != nil {
			v += ", backed up " + p.reportTime("backup.backed_up_at", *b.BackedUpAt)
		}
		if b.MatchesFile != nil {
			if *b.MatchesFile {
				v += ", matches the file"
			} else {
				v += ", differs from the file"
			}
		}
		p.line("backup", v)
	}
	if b := r.LastBackup; b != nil {
		p.line("last backup", fmt.Sprintf("v%d, %s, by this host", b.Version, when(b.At, now)))
	}
	if r.LastCheck != nil {
		p.line("last check", fmt.Sprintf("%s %s: %s", when(r.LastCheck.At, now), r.LastCheck.Result, r.LastCheck.Reason))
	}
	if r.LastPass != nil {
		p.line("last pass", fmt.Sprintf("%s %s %s", when(r.LastPass.At, now), r.LastPass.Status, r.LastPass.Message))
	}
	if r.VaultTokenTTL != nil {
		p.line("vault token ttl", human(time.Duration(*r.VaultTokenTTL)*time.Second))
	}
	switch r.VaultPolicy {
	case string(store.PolicyOld):
		p.line("vault policy", "OLD: its hosts/* glob lets this token write outside your path; ask your admin to run `claude-auth-sync provision` (it rewrites the policy)")
	case string(store.PolicyUnknown):
		p.line("vault policy", "unknown (Vault would not say)")
	default:
		p.line("vault policy", r.VaultPolicy)
	}
	p.line("vault error", r.VaultError)
}

// claude: the CLI found, or where it was looked for.
func (p *statusPrinter) claude() {
	switch c := p.r.Claude; {
	case c.Path == "":
		p.line("claude", "not found (tried "+strings.Join(c.Tried, ", ")+")")
	case c.Version == "":
		p.line("claude", c.Path+" (no version: `claude --version` failed)")
	default:
		p.line("claude", c.Path+" "+c.Version)
	}
}

// agent: whether it runs and, if it says, its live state.
func (p *statusPrinter) agent() {
	if !p.r.Agent.Running {
		p.line("agent", "not running")
		return
	}
	agent := fmt.Sprintf("running, pid %d", p.r.Agent.PID)
	a := p.r.Agent.AgentState
	if a != nil && a.Version != "" {
		agent += ", version " + a.Version
	}
	p.line("agent", agent)
	if a != nil {
		p.agentState(a)
	}
}

// agentState is what the running agent reports about itself.
func (p *statusPrinter) agentState(a *telemetry.AgentState) {
	now := p.now
	p.line("agent watch", a.Watch)
	if a.LastEvent != nil {
		p.line("last file event", when(*a.LastEvent, now)+" "+a.LastEventReason)
	}
	if a.LastBackup != nil {
		p.line("agent backup", fmt.Sprintf("v%d, %s, %s after the change (%d this run)", a.LastBackupVer, when(*a.LastBackup, now), lag(a.LastBackupLagMs), a.Backups))
	}
	switch {
	case a.NextCheck != nil:
		p.line("next check", when(*a.NextCheck, now)+"; "+a.NextCheckWhy)
	case a.NextCheckWhy != "":
		p.line("next check", a.NextCheckWhy)
	}
	if a.NextRefresh != nil {
		p.line("next refresh", fmt.Sprintf("%s (%d refreshes this run)", when(*a.NextRefresh, now), a.Refreshes))
	}
	if a.Pending {
		pending := "yes"
		if a.PendingSince != nil {
			pending += ", since " + when(*a.PendingSince, now)
		}
		p.line("backup pending", fmt.Sprintf("%s (%d retries)", pending, a.Retries))
	}
	if a.VaultDownSince != nil {
		p.line("vault down", "since "+when(*a.VaultDownSince, now))
	}
}

// mcp: the MCP server logins, one line each; nothing when there are none
// (and MCP refreshing is on).
func (p *statusPrinter) mcp() {
	m := p.r.MCP
	switch {
	case m.Off:
		p.line("mcp", "off (CLAUDE_AUTH_MCP=off): MCP server logins are not refreshed by claude-auth-sync; Claude refreshes them itself")
		return
	case m.Error != "":
		p.line("mcp", "mcp.json is unreadable ("+printable.String(m.Error)+"): the MCP server logins' state is not known")
		return
	case len(m.Servers) == 0:
		return
	}
	servers := "1 server"
	if len(m.Servers) != 1 {
		servers = fmt.Sprintf("%d servers", len(m.Servers))
	}
	v := fmt.Sprintf("%s; %d refreshes, %d failed (since the state dir was made)", servers, m.RefreshesTotal, m.FailuresTotal)
	if !p.r.Agent.Running {
		// The states are the last writer's; with no agent nothing refreshes
		// these logins ahead of Claude until an exec or the agent's start.
		v += "; the agent is not running, so nothing refreshes them ahead of Claude"
	}
	if m.Updated != nil {
		v += "; as of " + when(*m.Updated, p.now)
	}
	p.line("mcp", v)
	// The name is the user's: printable, and quoted; the id tells apart
	// two that print alike.
	names := map[string]int{}
	for _, s := range m.Servers {
		names[printable.String(s.Name)]++
	}
	for _, s := range m.Servers {
		name := printable.String(s.Name)
		v := strconv.Quote(name)
		if names[name] > 1 {
			v += " (id " + printable.String(s.ID) + ")"
		}
		v += " " + printable.String(s.State)
		if s.Reason != "" && s.State != "ok" {
			v += " (" + printable.String(s.Reason) + ")"
		}
		if s.ExpiresAt != nil {
			v += "; token expires " + when(*s.ExpiresAt, p.now)
		}
		if s.LastRefresh != nil {
			v += "; last refresh " + when(*s.LastRefresh, p.now)
		}
		if s.NextRefresh != nil {
			v += "; next refresh " + when(*s.NextRefresh, p.now)
		}
		p.line("mcp server", v)
	}
}

// when is t as a time and how far from now, e.g. "… (in 7h59m)", "… (2m ago)".
func when(t time.Time, now time.Time) string {
	d := t.Sub(now)
	// Sub saturates about 292 years out; the saturated value is no distance.
	switch d {
	case math.MaxInt64:
		return t.Local().Format(time.RFC3339) + " (in more than 292 years)"
	case math.MinInt64:
		return t.Local().Format(time.RFC3339) + " (more than 292 years ago)"
	}
	rel := "in " + human(d)
	if t.Before(now) {
		// Decided on the exact value: a moment ago is "0s ago", not "in 0s".
		rel = human(-d) + " ago"
	}
	return t.Local().Format(time.RFC3339) + " (" + rel + ")"
}

// human is a distance as a person reads it: the two largest units that
// matter, cut (not rounded) so "in 7h59m" never claims a minute too many:
// 45s, 4m10s, 2m, 7h59m, 8h, 2d3h, 31d.
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	const day = 24 * time.Hour
	two := func(a int64, ua string, b int64, ub string) string {
		if b == 0 {
			return fmt.Sprintf("%d%s", a, ua)
		}
		return fmt.Sprintf("%d%s%d%s", a, ua, b, ub)
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < 10*time.Minute:
		return two(int64(d/time.Minute), "m", int64(d%time.Minute/time.Second), "s")
	case d < time.Hour:
		return fmt.Sprintf("%dm", int64(d/time.Minute))
	case d < day:
		return two(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "m")
	case d < 7*day:
		return two(int64(d/day), "d", int64(d%day/time.Hour), "h")
	}
	return fmt.Sprintf("%dd", int64(d/day))
}

// lag is the agent's change-to-backup delay: milliseconds while short, then
// as human.
func lag(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	case ms < 60000:
		return fmt.Sprintf("%.1fs", ms/1000)
	}
	return human(time.Duration(ms * float64(time.Millisecond)))
}
