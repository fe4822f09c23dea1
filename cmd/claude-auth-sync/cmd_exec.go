package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
)

const execHelp = `Usage: claude-auth-sync exec [flags] -- COMMAND [ARG...]

The flock-aware launcher for start-claude.sh and t3-serve. Before it becomes
COMMAND it:
  1. waits for a refresh in flight (the agent's, or another exec's);
  2. refreshes the login first if it is inside the refresh lead time, so the new
     process does not race other Claude processes to rotate it (exactly one of
     many concurrent execs refreshes; the others see the new login);
  3. refreshes each MCP server login (mcpOAuth) inside its lead time
     (CLAUDE_AUTH_MCP_LEAD, 15m), under Claude's own per-server lock, unless
     CLAUDE_AUTH_MCP=off, leaving alone the servers the agent found refused
     or skipped;
  4. loads the setup-token env file (CLAUDE_CODE_OAUTH_TOKEN) when present.
Then it replaces itself with COMMAND: same pid, signals and exit status pass
through. Problems in steps 1-4 are reported on stderr and never stop COMMAND.
Your own exec keeps your terminal and your whole environment.

Root with --user USER (or CLAUDE_AUTH_USER) runs COMMAND as USER, and never
with root's terminal: from a terminal (stdin, stdout or stderr) it refuses
(exit 2) and says how to do it from a session of USER's own (machinectl shell
USER@, su - USER, runuser --pty). Without one, it lets go of any controlling
terminal first (COMMAND cannot open /dev/tty) and COMMAND gets only an
allow-listed environment: PATH, HOME, USER, LOGNAME, LANG, LC_*, TZ, the
proxies (without credentials) and CA settings, ANTHROPIC_BASE_URL, CLAUDE_*
and this program's settings; never VAULT_TOKEN, AWS_* or another variable
named like a secret. No descriptor beyond stdin, stdout and stderr passes.
`

func execFlags(fs *flagSet) action {
	var c commonFlags
	c.register(fs)
	wait := fs.Duration("wait", 30*time.Second, "longest wait for a refresh in flight")
	return func(args []string, stdout, stderr io.Writer) int {
		return runExec(fs, &c, wait, args, stdout, stderr)
	}
}

func runExec(fs *flagSet, c *commonFlags, wait *time.Duration, args []string, stdout, stderr io.Writer) int {
	// Everything after "--" is the command.
	var cmdArgs []string
	for i, a := range args {
		if a == "--" {
			args, cmdArgs = args[:i], args[i+1:]
			break
		}
	}
	if code, ok := parse(fs, args, stdout, stderr, execHelp); !ok {
		return code
	}
	if len(cmdArgs) == 0 {
		fmt.Fprintln(stderr, "claude-auth-sync exec: no command given (usage: claude-auth-sync exec -- COMMAND [ARG...])")
		return exitUsage
	}
	forAnother := rootForAnother(c)
	if forAnother && onTerminal() {
		fmt.Fprint(stderr, execTerminalRefusal(c, cmdArgs))
		return exitUsage
	}
	var path string
	if !forAnother {
		// The user's own: the command is looked up as it always was, first.
		var err error
		if path, err = exec.LookPath(cmdArgs[0]); err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync exec: %v\n", err)
			return 127
		}
	}
	eng, code := setupQuiet(c, stderr)
	if code != 0 && forAnother {
		// COMMAND was meant to run as that user: never run it as root instead.
		fmt.Fprintf(stderr, "claude-auth-sync exec: not running %s as root in place of another user\n", cmdArgs[0])
		return code
	}
	env := os.Environ()
	if code == 0 && eng.Cfg.ActFor != nil {
		// Now the user: the command gets no terminal and only the
		// allow-listed environment.
		if err := session.DetachTerminal(); err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync exec: %v\n", err)
			fmt.Fprint(stderr, execTerminalRefusal(c, cmdArgs))
			return exitUsage
		}
		env = eng.Cfg.ChildEnviron()
	}
	if path == "" {
		// For another user: looked up with the user's rights, not root's.
		var err error
		if path, err = exec.LookPath(cmdArgs[0]); err != nil {
			fmt.Fprintf(stderr, "claude-auth-sync exec: %s\n", printable.String(err.Error()))
			return 127
		}
	}
	if code == 0 {
		env = prepareExec(eng, *wait, env)
	}
	err := syscall.Exec(path, cmdArgs, env)
	fmt.Fprintf(stderr, "claude-auth-sync exec: %s: %v\n", cmdArgs[0], err)
	return 126
}

// onTerminal: stdin, stdout or stderr is a terminal.
func onTerminal() bool {
	return session.Terminal(0) || session.Terminal(1) || session.Terminal(2)
}

// execTerminalRefusal says why exec --user does not run COMMAND from a
// terminal, and how to do it safely.
func execTerminalRefusal(c *commonFlags, cmdArgs []string) string {
	u := c.cfg.User
	if u == "" {
		u = os.Getenv("CLAUDE_AUTH_USER")
	}
	cmd := printable.Short(strings.Join(cmdArgs, " "), 80)
	return fmt.Sprintf(`claude-auth-sync exec: not handing root's terminal to %[1]s's command (a program on a terminal can type into root's shell).
Run it in a session of %[1]s's own:
  machinectl shell %[1]s@ /usr/bin/claude-auth-sync exec -- %[2]s
  su - %[1]s, then: claude-auth-sync exec -- %[2]s
  runuser --pty -u %[1]s -- env -i HOME=~%[1]s PATH=/usr/bin:/bin claude-auth-sync exec -- %[2]s
or without a terminal (no controlling terminal, stdin, stdout and stderr redirected):
  claude-auth-sync exec --user %[1]s -- %[2]s </dev/null >LOG 2>&1
`, printable.String(u), cmd)
}

// rootForAnother: root was asked (--user, CLAUDE_AUTH_USER) to act for
// another account.
func rootForAnother(c *commonFlags) bool {
	named := c.cfg.User
	if named == "" {
		named = os.Getenv("CLAUDE_AUTH_USER")
	}
	me, _ := config.CurrentAccount()
	return os.Geteuid() == 0 && named != "" && named != me
}

// setupQuiet is setup with a console that only speaks up for warnings: exec
// sits in front of other programs' output.
func setupQuiet(c *commonFlags, stderr io.Writer) (*engine.Engine, int) {
	if !c.verbose {
		c.quiet = true
	}
	return setup(c, stderr)
}

// prepareExec does steps 1-4 and returns the environment for the command.
func prepareExec(eng *engine.Engine, wait time.Duration, env []string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	cfg := eng.Cfg
	local, err := credentials.Read(cfg.CredentialsFile)
	if err == nil && local.State == credentials.Usable && (!eng.Clock.Now().Before(eng.Refresher.Due(local.OAuth)) || eng.Refresher.Pending()) {
		lin, err := lineage.Load(filepath.Join(cfg.StateDir, "lineage"))
		if err == nil {
			res, err := eng.Refresher.Refresh(ctx, lin, false, "")
			switch {
			case err == nil && res.Refreshed, errors.Is(err, refresh.ErrNotWritten) && res.OAuth != nil:
				if err != nil {
					eng.Diag.Warn("refreshed, but the credentials file cannot be written; backing the new login up", "err", err)
				}
				// Back it up now if the store answers quickly; the agent (or the
				// next pass) does it otherwise.
				bctx, bcancel := context.WithTimeout(context.Background(), 5*time.Second)
				if eng.Vault == nil || eng.Vault.LoadToken() == nil {
					if _, err := eng.Backup(bctx, lin, res.OAuth); err != nil {
						eng.Diag.Warn("refreshed, but the backup waits for the agent or the next pass", "err", err)
					}
				}
				bcancel()
			case err != nil && !errors.Is(err, context.DeadlineExceeded):
				eng.Diag.Warn("could not refresh before starting the command", "err", err)
			}
		}
	} else if err == nil {
		// Not due: still wait for a refresh someone else has in flight, so the
		// command starts with the login that refresh writes.
		if lk, err := lock.Wait(ctx, cfg.StateDir, lock.Refresh); err == nil {
			lk.Unlock()
		}
	}
	if !cfg.MCPOff {
		// The MCP logins near expiry too: the command's Claude sessions
		// then find nothing to refresh.
		mcp.New(mcpConfig(eng)).Pass(ctx)
	}
	if tok := eng.SetupToken(); tok != "" {
		env = setEnv(env, "CLAUDE_CODE_OAUTH_TOKEN", tok.Reveal())
	}
	return env
}

func setEnv(env []string, key, val string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if len(kv) > len(key) && kv[:len(key)+1] == key+"=" {
			continue
		}
		out = append(out, kv)
	}
	return append(out, key+"="+val)
}
