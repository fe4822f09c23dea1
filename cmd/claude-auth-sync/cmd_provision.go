package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/provision"
	"github.com/claude-auth-sync/claude-auth-sync/sync/tokenfile"
)

const provisionHelp = `Usage: claude-auth-sync provision --roster FILE [--dry-run] [--admin-token-file FILE] [--fleet-reader-token FILE]

Root only. Reconcile the workstation with the roster:

  users:
    alice: {}                      # claude_auth defaults to true
    bob: {parked: true}            # unit stopped, token and Vault data kept
    carol: {claude_auth: false}    # the same; other keys (tier, …) are ignored

For each user with claude_auth on and not parked: write the Vault policy
workstation-claude-<user> (exactly create/read/update on the user's data path
and its per-host documents <path>/hosts/<host id>, read on their metadata,
patch of custom_metadata only on the main document's metadata, lookup-self,
renew-self and capabilities-self; the host is one path segment, "+", with
".", ".." and the empty segment denied, never the glob hosts/* of earlier
versions, which a user's own token could escape with encoded dot segments;
a policy that differs, an older version's included, is rewritten); mint a
periodic (768h) orphan token with only that policy (no default policy) and
display name devvm-claude-auth-<user> when the token file is missing,
empty, expired, revoked or someone else's; install ~/.config/claude-auth-sync
(0700) and the token file (0600) owned by the user, never following a symlink;
enable and start the agent claude-auth-sync-agent@<user>.service and the
six-hourly claude-auth-sync@<user>.timer. Parked, claude_auth: false and users
gone from the roster get both stopped and disabled; their Vault data stays. A second run changes nothing.

--fleet-reader-token FILE also writes the policy claude-auth-sync-fleet-reader
(list of the users, read of each user's metadata, one segment per user;
nothing on any data path) and keeps a periodic token with only that policy in
FILE (root's, 0600, in a directory only root writes, never written through a
link), for claude-auth-sync fleet. A live reader token already there is kept.
One more line says what was done, when something was: "fleet-reader <STATUS> <message>". Without
the flag, an existing reader policy is still rewritten when it differs.

Writing policies and minting tokens need an admin Vault token: VAULT_TOKEN or
--admin-token-file. Without one the run only reports (what it would do, and
what it needs), like --dry-run; a user whose live token still carries the
old policy gets a WARN line saying the policy needs rewriting. VAULT_ADDR and the Vault path come from the
environment or the system config file.

One line per user that changed, would change, needs something or failed,
"user=<name> <STATUS> <message>" (OK, SKIP, WARN, FAIL), then a summary that
also counts the unchanged users (they get no line: the hourly run of a
converged fleet writes the summary only). Exit codes: 0 no FAIL, 1 some user FAILed, 2 usage, 78 bad roster or
configuration, 75 another provision run holds the lock.
`

func provisionFlags(fs *flagSet) action {
	var o provisionOpts
	o.roster = fs.String("roster", "/etc/claude-auth-sync/roster.yaml", "the roster `file`")
	o.dryRun = fs.Bool("dry-run", false, "report what would change; change nothing")
	o.adminFile = fs.String("admin-token-file", "", "`file` holding an admin Vault token, root-only, mode 0600 (default: $VAULT_TOKEN)")
	o.systemConfig = fs.String("config", "", "system config `file` (env CLAUDE_AUTH_SYSTEM_CONFIG; default: "+config.SystemFile+")")
	o.stateDir = fs.String("state-dir", provision.DefaultStateDir, "`dir` where provision remembers the users it manages")
	o.parallel = fs.Int("parallel", 4, "users reconciled at once")
	o.fleetReader = fs.String("fleet-reader-token", "", "`file` to keep a fleet-reader token in (for claude-auth-sync fleet)")
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parse(fs, args, stdout, stderr, provisionHelp); !ok {
			return code
		}
		return runProvision(o, stdout, stderr)
	}
}

type provisionOpts struct {
	roster, adminFile, systemConfig, stateDir, fleetReader *string
	dryRun                                                 *bool
	parallel                                               *int
}

func runProvision(o provisionOpts, stdout, stderr io.Writer) int {
	roster, dryRun, adminFile, systemConfig, stateDir, parallel := o.roster, o.dryRun, o.adminFile, o.systemConfig, o.stateDir, o.parallel
	if os.Geteuid() != 0 && !*dryRun {
		fmt.Fprintln(stderr, "claude-auth-sync provision: must run as root (it writes into users' homes and enables their units); --dry-run works without")
		return exitUsage
	}
	r, err := provision.LoadRoster(*roster)
	if err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync provision: %v\n", err)
		return exitConfig
	}
	admin, err := adminToken(*adminFile)
	if err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync provision: %v\n", err)
		return exitConfig
	}
	readerFile := *o.fleetReader
	if readerFile != "" {
		if readerFile, err = filepath.Abs(readerFile); err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync provision: --fleet-reader-token: %v\n", err)
			return exitUsage
		}
	}
	sysConfig := *systemConfig
	if sysConfig == "" {
		sysConfig = os.Getenv("CLAUDE_AUTH_SYSTEM_CONFIG")
	}
	ctx, cancel := signalContext()
	defer cancel()
	sum, err := provision.Run(ctx, provision.Options{
		Roster:       r,
		DryRun:       *dryRun,
		AdminToken:   admin,
		SystemConfig: sysConfig,
		StateDir:     *stateDir,
		Systemctl:    provision.Systemctl{Path: os.Getenv("CLAUDE_AUTH_SYSTEMCTL")},
		Parallel:     *parallel,
		Out:          stdout,

		FleetReaderToken: readerFile,
	})
	if err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync provision: %v\n", err)
		if errors.Is(err, lock.ErrHeld) {
			return engine.ExitTempFail
		}
		if errors.Is(err, provision.ErrSetup) {
			return exitConfig
		}
		return engine.ExitFail
	}
	fmt.Fprintf(stdout, "provision: %s; %d users (%d active, %d parked, %d claude_auth off), %d removed; %d changed, %d unchanged, %d need an admin token, %d failed\n",
		sum.Mode, sum.Users, sum.Active, sum.Parked, sum.Off, sum.Removed, sum.Changed, sum.Unchanged, sum.NeedAdmin, sum.Failed)
	if sum.Mode == "report-only" {
		fmt.Fprintln(stdout, "provision: no admin token (VAULT_TOKEN or --admin-token-file): nothing was changed and policies were not checked")
	}
	if sum.Failed > 0 {
		return engine.ExitFail
	}
	return 0
}

// adminToken reads the admin token from the file (a private regular file
// of root's, see tokenfile.Read) or VAULT_TOKEN. "" means none: the run only
// reports.
func adminToken(path string) (credentials.Secret, error) {
	if path == "" {
		return credentials.Secret(strings.TrimSpace(os.Getenv("VAULT_TOKEN"))), nil
	}
	tok, err := tokenfile.Read(path, os.Geteuid())
	if err != nil {
		return "", fmt.Errorf("admin token file %v", err)
	}
	return tok, nil
}
