package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
)

const syncHelp = `Usage: claude-auth-sync sync [flags]

One full pass now: what systemctl start claude-auth-sync@<user>.service runs
(and its six-hourly timer claude-auth-sync@<user>.timer). When the user's agent
runs, the pass is the agent's: sync asks it over the socket agent.sock in the
state dir (the same user only) and waits for the outcome, so one process acts
per user; otherwise sync runs the pass itself:
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

A timer's pass (--trigger names a .timer) runs no second inference check when
the agent's own check passed within the interval; it still reads Vault and
applies setup-token changes. A person's sync gets a check that ended after it
asked: when many ask at once, the agent's running check answers them all.

Exit codes: 0 OK/SKIP/RECOVERED, 1 FAIL, 2 usage, 3 not logged in,
75 backup pending or check could not run, 78 configuration error.
`

func syncFlags(fs *flagSet) action {
	c := commonFlags{unitEvents: true}
	c.register(fs)
	c.registerClaude(fs)
	c.registerCheckTimeout(fs)
	trigger := fs.String("trigger", "", "the `unit` that started this pass (the units pass ${TRIGGER_UNIT}); a .timer makes it the scheduled pass, which the agent runs without a second check when its own is fresh")
	here := fs.Bool("no-agent", false, "run the pass in this process even when the agent runs (the sync lock still keeps passes apart)")
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
		kind := passrequest.Full
		if strings.HasSuffix(*trigger, ".timer") {
			kind = passrequest.Scheduled
		}
		if !*here {
			if code, asked := askAgent(ctx, eng, kind); asked {
				return code
			}
		}
		return eng.Pass(ctx, engine.PassOptions{}).Code
	}
}

// agentPassWait bounds the wait for the agent's pass: two checks (one after a
// restore) and a refresh fit well inside; the units give up later.
const agentPassWait = 8 * time.Minute

// askAgent has the user's running agent run the pass and prints its outcome
// (the agent logged it to sync.log and the journal already; this line puts it
// in the unit's own status). asked is false when no agent answers: the
// caller runs the pass itself.
func askAgent(ctx context.Context, eng *engine.Engine, kind passrequest.Kind) (code int, asked bool) {
	ctx, cancel := context.WithTimeout(ctx, agentPassWait)
	defer cancel()
	a, err := passrequest.Ask(ctx, eng.Cfg.StateDir, kind)
	switch {
	case errors.Is(err, passrequest.ErrNoAgent):
		eng.Diag.Debug("no agent runs for this user: running the pass here")
		return 0, false
	case err != nil && ctx.Err() != nil:
		eng.Log.Echo(eventlog.WARN, fmt.Sprintf("the agent's pass did not end in time (%v); see its lines: journalctl -t claude-auth-sync", err))
		return engine.ExitTempFail, true
	case err != nil:
		eng.Diag.Warn("running the pass here: " + err.Error())
		return 0, false
	}
	eng.Log.Echo(eventlog.Status(a.Status), fmt.Sprintf("%s (the agent's pass, pid %d)", a.Message, a.PID))
	return a.Code, true
}
