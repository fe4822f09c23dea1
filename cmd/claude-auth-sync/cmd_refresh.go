package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

const refreshHelp = `Usage: claude-auth-sync refresh [flags]

One brokered refresh now, the way the agent does it: under our lock and Claude
Code's own lock directories, the refresh response saved durably before the
credentials file is rewritten (compare-and-swap on the refresh token sent), then
backed up at once. Useful after a 401, or to test the setup. A clobbered
credentials file (empty refresh token, broken JSON) is first restored from the
latest backup, as a sync pass would; a missing one is a logout and is left alone.

Exit codes: 0 refreshed (or someone else just did), 1 FAIL (the login is dead:
log in again), 3 no credentials file (logged out), 75 could not refresh now
(token endpoint or Claude's locks unavailable), 78 configuration error.
`

func refreshFlags(fs *flagSet) action {
	var c commonFlags
	c.register(fs)
	// Internal: the agent's refresh child. It takes the refresh asked for on
	// stdin, ignores stop signals until done and reports JSON on stdout (a
	// pipe; it can hold the new login).
	child := fs.Bool("agent-child", false, "for the agent only")
	// An agent of the previous version passes these to its child; a refresh
	// runs no check, so they are accepted and unused.
	c.registerClaude(fs)
	c.registerCheckTimeout(fs)
	fs.hide("agent-child", "claude", "check-timeout")
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parse(fs, args, stdout, stderr, refreshHelp); !ok {
			return code
		}
		if *child {
			return runRefreshChild(&c, stdout, stderr)
		}
		eng, code := setup(&c, stderr)
		if eng == nil {
			return code
		}
		ctx, cancel := signalContext()
		defer cancel()
		return eng.RefreshNow(ctx).Code
	}
}

// runRefreshChild is the agent's refresh, in a process of its own: a kill of
// the agent while the token request is in flight does not lose the answer.
// The work is bounded (lock wait, request timeout), so stop signals wait.
func runRefreshChild(c *commonFlags, stdout, stderr io.Writer) int {
	if f, ok := stdout.(*os.File); ok {
		if isTerminal(f) {
			fmt.Fprintln(stderr, "claude-auth-sync refresh: --agent-child is for the agent; its report can hold a login and never goes to a terminal")
			return exitUsage
		}
	}
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)
	eng, code := setupQuiet(c, stderr)
	if eng == nil {
		return code
	}
	req, err := refresh.ReadChildRequest(os.Stdin)
	switch {
	case err != nil:
	case req.MCPKey != "":
		// An MCP login: no lineage, nothing backed up.
		err = mcpRefresher(eng, req.MCPKey).Serve(context.Background(), req, stdout, refresh.NoWitness{})
	default:
		var lin *lineage.Lineage
		if lin, err = eng.OpenLineage(); err != nil {
			err = fmt.Errorf("lineage: %w", err)
		} else {
			err = eng.Refresher.Serve(context.Background(), req, stdout, lin)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "claude-auth-sync refresh: %v\n", err)
		return engine.ExitFail
	}
	return 0
}

// mcpRefresher is the refresher of the MCP login under key, as the agent's
// MCP manager builds it.
func mcpRefresher(eng *engine.Engine, key string) *refresh.MCP {
	return mcp.Refresher(mcpConfig(eng), key)
}

// mcpConfig is the MCP manager's config from the engine's.
func mcpConfig(eng *engine.Engine) mcp.Config {
	cfg := eng.Cfg
	return mcp.Config{CredentialsFile: cfg.CredentialsFile, ClaudeConfigDir: cfg.ClaudeConfigDir, StateDir: cfg.StateDir,
		Lead: cfg.MCPLead, Skip: cfg.MCPSkip, Clock: eng.Clock, Diag: eng.Diag}
}
