package main

import (
	"io"
	"os"
)

const syncHelp = `Usage: claude-auth-sync sync [flags]

One foreground pass, the same one the six-hourly timer runs:
  1. take the per-user sync lock (if another pass holds it: SKIP, exit 0);
  2. prepare Vault: the token file must exist and be private, the token must be
     this user's (policy workstation-claude-<user>), and it is renewed;
  3. setup-token mode when the admin set one: write the env file, backfill the
     credentials file, check with that token, make no backups;
  4. look at the credentials file: missing = a logout (WARN, never restored by
     itself); broken or an empty refresh token = restored from the backup;
  5. run the real inference check (claude -p …, exact AUTH_OK); on success back
     the login up; on a 401/403 restore the backup and check again; on a timeout,
     5xx or network error WARN and leave everything for the next pass.

Every event goes to ~/.local/state/claude-auth-sync/sync.log and the journal
(identifier claude-auth-sync, "user=<user> <STATUS> <message>").

Exit codes: 0 OK/SKIP/RECOVERED, 1 FAIL, 2 usage, 3 not logged in,
75 backup pending or check could not run, 78 configuration error.
`

func syncFlags(fs *flagSet) action {
	var c commonFlags
	c.register(fs)
	c.registerClaude(fs)
	c.registerCheckTimeout(fs)
	return func(args []string, stdout, stderr io.Writer) int {
		eng, code := begin(fs, &c, args, stdout, stderr, syncHelp)
		if eng == nil {
			return code
		}
		ctx, cancel := signalContext()
		defer cancel()
		eng.Diag.Info("store in use", "store", eng.Store.Describe())
		if f, ok := stderr.(*os.File); ok && isTerminal(f) {
			eng.Interactive = true
		}
		return eng.Pass(ctx).Code
	}
}
