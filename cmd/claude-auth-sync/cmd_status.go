package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	authsync "github.com/claude-auth-sync/claude-auth-sync/sync"
)

const statusHelp = `Usage: claude-auth-sync status [--json] [flags]

Show, without changing anything and without printing any secret: the mode
(rotating login or setup token), the store, the credentials file and its state,
when the access token expires, the login's own deadline, the backup's version and
whether it matches the file, the last backup and check this host made, the last
pass, the Vault token's TTL, the Claude CLI version and whether the agent runs.
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
		r := eng.Status(ctx)
		if *asJSON {
			return printJSON(stdout, stderr, r)
		}
		printStatus(stdout, r, time.Now())
		return 0
	}
}

// printJSON writes the report, or says on stderr why it cannot. Encoding goes
// into a buffer first, so a failure never leaves half a document (or nothing
// and a bare exit 1).
func printJSON(stdout, stderr io.Writer, r authsync.Report) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync status: cannot write the report as JSON: %v\n", err)
		return authsync.ExitFail
	}
	if _, err := stdout.Write(buf.Bytes()); err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync status: %v\n", err)
		return authsync.ExitFail
	}
	return 0
}

func printStatus(w io.Writer, r authsync.Report, now time.Time) {
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-16s %s\n", k+":", v)
		}
	}
	line("user", r.User)
	line("mode", r.Mode)
	line("store", r.Store)
	cred := r.CredentialsFile
	if r.SymlinkTarget != "" {
		cred += " -> " + r.SymlinkTarget
	}
	line("credentials", cred)
	login := r.Login
	if r.LoginProblem != "" {
		login += " (" + r.LoginProblem + ")"
	}
	line("login", login)
	// A time the report had to clamp is shown as what the file held.
	reportTime := func(key string, t time.Time) string {
		if v, ok := r.OutOfRange[key]; ok {
			return "out of range (" + v + ")"
		}
		return when(t, now)
	}
	if r.ExpiresAt != nil {
		line("access expires", reportTime("expires_at", *r.ExpiresAt))
	}
	if r.LoginDeadline != nil {
		line("login deadline", reportTime("login_deadline", *r.LoginDeadline))
	}
	if r.BackupVersion > 0 {
		b := fmt.Sprintf("v%d", r.BackupVersion)
		if r.BackupAt != nil {
			b += ", backed up " + reportTime("backup_backed_up_at", *r.BackupAt)
		}
		if r.BackupCurrent != nil {
			if *r.BackupCurrent {
				b += ", matches the file"
			} else {
				b += ", differs from the file"
			}
		}
		line("backup", b)
	}
	if r.LastBackup != nil {
		line("last backup", fmt.Sprintf("%s (v%d)", when(r.LastBackup.At, now), r.LastBackup.Version))
	}
	if r.LastCheck != nil {
		line("last check", fmt.Sprintf("%s %s: %s", when(r.LastCheck.At, now), r.LastCheck.Result, r.LastCheck.Reason))
	}
	if r.LastPass != nil {
		line("last pass", fmt.Sprintf("%s %s %s", when(r.LastPass.At, now), r.LastPass.Status, r.LastPass.Message))
	}
	line("vault token ttl", r.VaultTokenTTL)
	line("vault error", r.VaultError)
	line("claude", r.ClaudeVersion)
	if !r.AgentRunning {
		line("agent", "not running")
		return
	}
	agent := "running, pid " + r.AgentPID
	if a := r.Agent; a != nil && a.Version != "" {
		agent += ", version " + a.Version
	}
	line("agent", agent)
	if a := r.Agent; a != nil {
		line("agent watch", a.Watch)
		if a.LastEvent != nil {
			line("last file event", when(*a.LastEvent, now)+" "+a.LastEventReason)
		}
		if a.LastBackup != nil {
			line("agent backup", fmt.Sprintf("%s v%d, %.1f ms after the change (%d this run)", when(*a.LastBackup, now), a.LastBackupVer, a.LastBackupLagMs, a.Backups))
		}
		switch {
		case a.NextCheck != nil:
			line("next check", when(*a.NextCheck, now)+"; "+a.NextCheckWhy)
		case a.NextCheckWhy != "":
			line("next check", a.NextCheckWhy)
		}
		if a.NextRefresh != nil {
			line("next refresh", fmt.Sprintf("%s (%d refreshes this run)", when(*a.NextRefresh, now), a.Refreshes))
		}
		if a.Pending {
			p := "yes"
			if a.PendingSince != nil {
				p += ", since " + when(*a.PendingSince, now)
			}
			line("backup pending", fmt.Sprintf("%s (%d retries)", p, a.Retries))
		}
		if a.VaultDownSince != nil {
			line("vault down", "since "+when(*a.VaultDownSince, now))
		}
	}
}

func when(t time.Time, now time.Time) string {
	d := t.Sub(now)
	// Sub saturates about 292 years out; the saturated value is no distance.
	switch d {
	case math.MaxInt64:
		return t.Local().Format(time.RFC3339) + " (in more than 292 years)"
	case math.MinInt64:
		return t.Local().Format(time.RFC3339) + " (more than 292 years ago)"
	}
	d = d.Round(time.Second)
	rel := "in " + d.String()
	if t.Before(now) {
		// Decided before rounding: a moment ago is "0s ago", not "in 0s".
		rel = strings.TrimPrefix((-d).String(), "-") + " ago"
	}
	return t.Local().Format(time.RFC3339) + " (" + rel + ")"
}
