package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/agent"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/sdnotify"
)

const runHelp = `Usage: claude-auth-sync run [flags]

The long-lived per-user agent (systemd --user service, or the system template
claude-auth-sync-agent@<user>.service). One per user: a second one exits saying which
pid holds the agent lock.

  - watches the credentials file (inotify on its directory, no polling) and backs
    every change up at once; a clobbered login is restored at once, a deleted
    file (a logout) is left alone;
  - while Vault is away the newest login waits in the state dir
    (pending-backup.json, 0600) and is written when Vault returns, with capped
    exponential backoff; one WARN per outage;
  - runs the full sync pass every --check-interval (default 6h), on SIGHUP
    (systemctl reload) and when asked by "sync" (systemctl start
    claude-auth-sync@<user>.service) over agent.sock in the state dir, which
    answers only this user; the six-hourly timer's pass runs no second check
    while the agent's own is fresh. A start does not check again a login
    whose last check passed within the interval when nothing changed since
    (the login, the backup's login or setup token): the next check is when it
    is due. A start that must check waits a random delay up to --check-spread
    (default 5m), so a reboot or an upgrade of a machine with many users does
    not start every check at once; a login that needs a look (clobbered,
    missing, its last check failed) is checked at once. Backups, restores and
    refreshes start at once either way;
  - refreshes the login ahead of Claude, as the single refresher, in a child
    process ("refresh --agent-child") that finishes the refresh even if the
    agent is killed while the token request is in flight;
  - refreshes each MCP server login of the credentials file (mcpOAuth) the
    same way, 15 min before it expires (CLAUDE_AUTH_MCP_LEAD, never under
    10 min), under Claude's per-server lock, so concurrent Claude sessions
    never race to rotate it; MCP logins are never backed up (they stay in the
    home). CLAUDE_AUTH_MCP=off turns it off, CLAUDE_AUTH_MCP_SKIP=name,...
    leaves the servers named to Claude;
  - renews the Vault token well before its TTL ends;
  - tells systemd it is ready (Type=notify), pings the watchdog from its main
    loop, and stops cleanly on SIGTERM/SIGINT, flushing a pending backup;
    systemd's watchdog abort (SIGABRT) leaves the goroutines in
    agent-abort.txt in the state dir and one WARN line.

Exit status: 0 stopped by a signal, 1 FAIL, 4 another agent already runs for
this user (the units do not restart on it), 78 configuration error.
`

func runFlags(fs *flagSet) action {
	var c commonFlags
	c.unitEvents = true
	c.register(fs)
	c.registerClaude(fs)
	c.registerCheckTimeout(fs)
	var o agentFlags
	o.interval = fs.Duration("check-interval", 0, "period of the full pass with the inference check (env CLAUDE_AUTH_CHECK_INTERVAL; default: 6h)")
	o.rescan = fs.Duration("rescan", 5*time.Minute, "safety-net rescan period, for file systems that deliver no inotify events")
	o.retryMax = fs.Duration("retry-max", 2*time.Minute, "cap of the backoff between backup retries while Vault is away")
	o.spread = time.Duration(-1) // the config's
	fs.Func("check-spread", "a start with no fresh check waits a random delay up to this `duration` before checking, so many agents starting together do not all run claude at once; 0 = check at once (env CLAUDE_AUTH_CHECK_SPREAD; default: 5m)", func(v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("want a duration like 5m, or 0")
		}
		o.spread = d
		return nil
	})
	return func(args []string, stdout, stderr io.Writer) int {
		return runAgent(fs, &c, &o, args, stdout, stderr)
	}
}

// agentFlags are run's own flags.
type agentFlags struct {
	interval, rescan, retryMax *time.Duration
	spread                     time.Duration
}

func runAgent(fs *flagSet, c *commonFlags, o *agentFlags, args []string, stdout, stderr io.Writer) int {
	eng, code := begin(fs, c, args, stdout, stderr, runHelp)
	if eng == nil {
		return code
	}
	ctx, cancel := signalContext()
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	eng.Diag.Info("store in use", "store", eng.Store.Describe())
	onWatchdogAbort(eng)
	opt := agent.Options{CheckInterval: *o.interval, Rescan: *o.rescan, RetryMax: *o.retryMax, CheckSpread: o.spread, Reload: hup, Notifier: sdnotify.FromEnv(), Version: version}
	// Refreshes run in a child that outlives a kill -9 of the agent.
	if exe, err := os.Executable(); err == nil {
		child := refresh.ChildCommand{Exe: exe, Args: c.args(), ActFor: eng.Cfg.ActFor != nil}
		if child.ActFor {
			child.Env = eng.Cfg.ChildEnviron()
		}
		eng.Refresher.Via = eng.Refresher.InChild(child)
		if !eng.Cfg.MCPOff {
			mc := mcpConfig(eng)
			mc.Child, mc.Publish = &child, true
			opt.MCP = &mc
		}
	} else {
		eng.Diag.Warn("refreshing in-process: cannot find this program's path", "err", err)
		if !eng.Cfg.MCPOff {
			mc := mcpConfig(eng)
			mc.Publish = true
			opt.MCP = &mc
		}
	}
	err := agent.Run(ctx, eng, opt)
	switch {
	case errors.Is(err, agent.ErrAgentRunning):
		// This user's login is looked after; two units for one user is an
		// admin's slip, not a dead login: WARN, and an exit code the units
		// do not restart on.
		eng.Log.Event(eventlog.WARN, "%v; this one exits (run only one of claude-auth-sync.service and claude-auth-sync-agent@%s.service)", err, eng.Cfg.User)
		return engine.ExitAgentRunning
	case err != nil:
		eng.Log.Event(eventlog.FAIL, "the agent stopped: %v", err)
		return engine.ExitFail
	}
	return 0
}

// onWatchdogAbort: systemd's watchdog ends a stuck agent with SIGABRT
// (WatchdogSignal=). Go's default answer is a goroutine dump to stderr, dozens
// of journal lines that name no user; instead the dump goes to the user's
// private state dir (agent-abort.txt, 0600) for whoever debugs the hang, one
// WARN line says what happened, and the agent exits for systemd to restart it.
// All of it is bounded: a hang in the log itself does not delay the exit.
func onWatchdogAbort(eng *engine.Engine) {
	abrt := make(chan os.Signal, 1)
	signal.Notify(abrt, syscall.SIGABRT)
	go func() {
		<-abrt
		done := make(chan struct{})
		go func() {
			defer close(done)
			var dump bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&dump, 2)
			path := filepath.Join(eng.Cfg.StateDir, "agent-abort.txt")
			if _, err := atomicfile.Write(path, dump.Bytes(), 0o600); err != nil {
				path = "(not written: " + err.Error() + ")"
			}
			eng.Log.Event(eventlog.WARN, "the agent stopped answering systemd's watchdog and was aborted; goroutines in %s; systemd restarts it", path)
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
		}
		os.Exit(engine.ExitFail)
	}()
}
