package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// exitNoPerm is EX_NOPERM: fleet's token may not read the fleet's metadata.
const exitNoPerm = 77

const fleetHelp = `Usage: claude-auth-sync fleet [--json] [--within DAYS] [flags]

For admins: every user's agents on every workstation, from the health each
agent leaves in its user's Vault metadata (custom_metadata key
host.<host id> of the user's main document). One line per user and host:
status, user, host (its label and the start of its id), when the host last
reported, its last backup, when the access token expires, the login's
deadline (after it only an interactive login helps; in setup-token mode the
setup token's end), the agent's version and the document the host backs up
to (main, or its own hosts/<host id>; * marks the main document's owner).
Every row that is not OK ends with its reason (REASON; "reason" in --json).
UNKNOWN: no agent of this version reports for the user, or its agent has
not run its first check yet; STOPPED: the agent stopped (nothing has
reported since: a restart that cannot reach Vault looks like this). A FAIL
or WARN stays until a check passes or the agent says it is over. Worst
first: FAIL, WARN, UNKNOWN and STOPPED, then the nearest deadline. --json prints one JSON document instead,
described in docs/fleet.md.

It lists <mount>/metadata/<base> and reads each user's metadata, never a data
path: it reads no login and prints no secret. Its token comes from
--token-file FILE (yours, mode 0600, not a symlink) or VAULT_TOKEN; a
fleet-reader token (provision --fleet-reader-token FILE) is enough. A
periodic token is renewed, so a reader token in regular use never expires.
VAULT_ADDR and the path come from the flags, the environment or the system
config, as for the agents.

Exit status (for a monitoring check):
  0  no FAIL, and no login ends within --within days
  1  some host FAILed, or a login ends within --within days (or has ended)
  2  usage error
  75 Vault unreachable or answered with an error; try again
  77 permission denied: the token may not list or read the metadata
  78 configuration error (no VAULT_ADDR, no token, {user} not last in the path)
`

type fleetOpts struct {
	systemConfig, vaultAddr, vaultPath, tokenFile *string
	asJSON                                        *bool
	within                                        *int
}

func fleetFlags(fs *flagSet) action {
	var o fleetOpts
	o.systemConfig = fs.String("config", "", "system config `file` (env CLAUDE_AUTH_SYSTEM_CONFIG; default: "+config.SystemFile+")")
	o.vaultAddr = fs.String("vault-addr", "", "Vault server `address` (env VAULT_ADDR)")
	o.vaultPath = fs.String("vault-path", "", "the agents' KV `path`, {user} last (env CLAUDE_AUTH_VAULT_PATH; default: "+fleet.DefaultPath+")")
	o.tokenFile = fs.String("token-file", "", "`file` holding a Vault token that may list and read the metadata, mode 0600 (default: $VAULT_TOKEN)")
	o.asJSON = fs.Bool("json", false, "print JSON")
	o.within = fs.Int("within", 7, "exit 1 when a login ends within this many `days`")
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parse(fs, args, stdout, stderr, fleetHelp); !ok {
			return code
		}
		if *o.within < 0 {
			fmt.Fprintf(stderr, "claude-auth-sync fleet: --within %d: want 0 or more days\nsee claude-auth-sync fleet --help\n", *o.within)
			return exitUsage
		}
		ctx, cancel := signalContext()
		defer cancel()
		rep, err := readFleet(ctx, o, os.Getenv)
		if err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync fleet: %v\n", err)
			return fleetErrorCode(err)
		}
		if *o.asJSON {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				fmt.Fprintf(stderr, "claude-auth-sync fleet: cannot write the report as JSON: %v\n", err)
				return engine.ExitFail
			}
			stdout.Write(buf.Bytes())
		} else {
			printFleet(stdout, rep)
		}
		return fleetExitCode(rep)
	}
}

// readFleet gathers the report: settings, token, then Vault.
func readFleet(ctx context.Context, o fleetOpts, getenv func(string) string) (fleet.Report, error) {
	sysPath := cmp.Or(*o.systemConfig, getenv("CLAUDE_AUTH_SYSTEM_CONFIG"), config.SystemFile)
	file, err := config.ReadFile(sysPath)
	// As for the agents: a missing file is an error only when --config named it.
	if err != nil && !(errors.Is(err, os.ErrNotExist) && *o.systemConfig == "") {
		return fleet.Report{}, fmt.Errorf("%w: %v", config.ErrConfig, err)
	}
	setting := func(flag, key string) string { return cmp.Or(flag, getenv(key), file[key]) }
	// The file's VAULT_CACERT & co. reach the Vault client through the
	// environment it reads, as they do for the agents.
	for _, k := range config.VaultClientKeys {
		if v, ok := file[k]; ok && getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	addr := setting(*o.vaultAddr, "VAULT_ADDR")
	if addr == "" {
		return fleet.Report{}, fmt.Errorf("%w: VAULT_ADDR is not set (--vault-addr, the environment or %s)", config.ErrConfig, sysPath)
	}
	mount, base, err := fleet.SplitPath(setting(*o.vaultPath, "CLAUDE_AUTH_VAULT_PATH"), setting("", "CLAUDE_AUTH_VAULT_MOUNT"))
	if err != nil {
		return fleet.Report{}, err
	}
	var tok credentials.Secret
	if *o.tokenFile != "" {
		if tok, err = fleet.ReadTokenFile(*o.tokenFile); err != nil {
			return fleet.Report{}, err
		}
	} else if tok = credentials.Secret(strings.TrimSpace(getenv("VAULT_TOKEN"))); tok == "" {
		return fleet.Report{}, fmt.Errorf("%w: no Vault token: give --token-file FILE or set VAULT_TOKEN (provision --fleet-reader-token FILE mints a read-only one)", config.ErrConfig)
	}
	timeout := time.Duration(0) // VAULT_CLIENT_TIMEOUT, as the client reads it
	if getenv("VAULT_CLIENT_TIMEOUT") == "" {
		timeout = 15 * time.Second
	}
	v, err := store.NewVault(store.VaultConfig{Address: addr, Timeout: timeout})
	if err != nil {
		return fleet.Report{}, err
	}
	c := v.Client()
	c.SetToken(tok.Reveal())
	// Keep a connection per worker (the pool keeps GOMAXPROCS+1 by default,
	// and plain-http HTTP/1.1 would dial again for most reads).
	if tr, ok := c.CloneConfig().HttpClient.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = fleet.DefaultWorkers
	}
	r := &fleet.Reader{Client: c, Mount: mount, Base: base}
	rows, err := r.Read(ctx)
	if err != nil {
		return fleet.Report{}, err
	}
	policies, _ := fleet.RenewIfPeriodic(ctx, c)
	rep := fleet.NewReport(rows, time.Now(), *o.within)
	rep.Vault, rep.Mount, rep.Base = c.Address(), mount, base
	users := []string{}
	for _, row := range rows {
		users = append(users, row.User)
	}
	slices.Sort(users)
	rep.SetPolicies(r.CheckPolicies(ctx, policies, slices.Compact(users)))
	return rep, nil
}

// fleetErrorCode is the exit status of a fleet that could not be read.
func fleetErrorCode(err error) int {
	switch {
	case errors.Is(err, store.ErrForbidden):
		return exitNoPerm
	case errors.Is(err, config.ErrConfig), errors.Is(err, store.ErrMisconfigured):
		return exitConfig
	}
	return engine.ExitTempFail
}

// fleetExitCode is the exit status of a fleet read: 1 when a row alerts.
func fleetExitCode(rep fleet.Report) int {
	if rep.Alerts > 0 {
		return engine.ExitFail
	}
	return 0
}

// printFleet writes the report as an aligned table, then a summary line.
func printFleet(w io.Writer, rep fleet.Report) {
	now := rep.GeneratedAt
	if rep.ReaderPolicy == string(store.PolicyOld) {
		fmt.Fprintf(w, "WARN policy %s is the old one: its glob lets a reader token read any metadata of the mount; run `claude-auth-sync provision` with an admin token (it rewrites it)\n", fleet.ReaderPolicy)
	}
	if len(rep.OldPolicyUsers) > 0 {
		fmt.Fprintf(w, "WARN the policy of %d users is the old one (%s): its glob lets the user's token write outside the user's path; run `claude-auth-sync provision` with an admin token (it rewrites them)\n",
			len(rep.OldPolicyUsers), strings.Join(rep.OldPolicyUsers, ", "))
	}
	var table bytes.Buffer
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tUSER\tHOST\tREPORTED\tBACKUP\tACCESS TOKEN\tDEADLINE\tVERSION\tDOC\tREASON")
	for _, r := range rep.Rows {
		host := "-"
		if r.HostID != "" {
			host = cmp.Or(r.HostLabel, "?") + " (" + r.HostID[:min(8, len(r.HostID))] + ")"
		}
		doc := cmp.Or(r.Doc, "-")
		if r.Owner {
			doc += "*"
		}
		deadline := relTime(r.DueAt, now)
		if r.SetupExpires != nil {
			deadline += " (setup token)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Status, r.User, host, relTime(r.StatusAt, now),
			relTime(r.BackupAt, now), relTime(r.ExpiresAt, now), deadline, cmp.Or(r.AgentVersion, "-"), doc, cmp.Or(r.Reason, r.Note))
	}
	tw.Flush()
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		if line != "" {
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
	}
	// The known statuses worst first, then any a newer agent reported.
	order := []string{"FAIL", "WARN", fleet.StatusUnknown, "RECOVERED", "SKIP", "OK"}
	for _, s := range slices.Sorted(maps.Keys(rep.Counts)) {
		if !slices.Contains(order, s) {
			order = append(order, s)
		}
	}
	var counts []string
	for _, s := range order {
		if n := rep.Counts[s]; n > 0 {
			counts = append(counts, fmt.Sprintf("%d %s", n, s))
		}
	}
	sum := fmt.Sprintf("%d users, %d hosts", rep.Users, rep.Hosts)
	if len(counts) > 0 {
		sum += ": " + strings.Join(counts, ", ")
	}
	if rep.Alerts > 0 {
		sum += fmt.Sprintf("; %d to act on (FAIL, or a login ending within %d d)", rep.Alerts, rep.WithinDays)
	}
	fmt.Fprintln(w, sum)
}

// relTime is how far t is from now in one human unit: "3 h ago",
// "in 27 d"; "-" when unknown. Cut, not rounded: "in 23 h" may be 23h59m.
func relTime(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now)
	if d < 0 {
		return humanUnit(-d) + " ago"
	}
	return "in " + humanUnit(d)
}

func humanUnit(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%d min", d/time.Minute)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", d/time.Hour)
	}
	return fmt.Sprintf("%d d", d/(24*time.Hour))
}
