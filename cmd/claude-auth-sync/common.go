package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	authsync "github.com/claude-auth-sync/claude-auth-sync/sync"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

const (
	exitUsage  = authsync.ExitUsage
	exitConfig = authsync.ExitConfig
)

// commonFlags are the settings every command takes.
type commonFlags struct {
	cfg     config.Flags
	verbose bool
	quiet   bool // warnings and errors only
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.cfg.SystemConfig, "config", "", "system config file (default "+config.SystemFile+", env CLAUDE_AUTH_SYSTEM_CONFIG)")
	fs.StringVar(&c.cfg.CredentialsFile, "credentials", "", "Claude's credentials file (env CLAUDE_CREDENTIALS_FILE; default $CLAUDE_CONFIG_DIR or ~/.claude, /.credentials.json)")
	fs.StringVar(&c.cfg.StateDir, "state-dir", "", "state dir for sync.log, locks, lineage (env CLAUDE_AUTH_STATE_DIR; default ~/.local/state/claude-auth-sync)")
	fs.StringVar(&c.cfg.Store, "store", "", "where backups go: auto, vault or file (env CLAUDE_AUTH_STORE; auto = vault when VAULT_ADDR is set)")
	fs.StringVar(&c.cfg.VaultAddr, "vault-addr", "", "Vault address (env VAULT_ADDR)")
	fs.StringVar(&c.cfg.VaultPath, "vault-path", "", "KV path as \"vault kv\" takes it (env CLAUDE_AUTH_VAULT_PATH; default secret/workstation/claude-users/{user})")
	fs.StringVar(&c.cfg.VaultTokenFile, "token-file", "", "scoped Vault token file, mode 0600 (env CLAUDE_AUTH_VAULT_TOKEN_FILE; default ~/.config/claude-auth-sync/vault-token)")
	fs.StringVar(&c.cfg.ClaudeBin, "claude", "", "claude CLI used for the inference check (env CLAUDE_AUTH_CLAUDE_BIN; default claude on PATH)")
	fs.DurationVar(&c.cfg.CheckTimeout, "check-timeout", 0, "timeout of the inference check (env CLAUDE_AUTH_CHECK_TIMEOUT; default 90s)")
	fs.StringVar(&c.cfg.User, "user", "", "OS user whose login this is (env CLAUDE_AUTH_USER; default the current user)")
	fs.BoolVar(&c.verbose, "v", false, "verbose diagnostics")
}

// args gives back the settings as flags, for a child process of ours that
// must see the same config (none of them is a secret).
func (c *commonFlags) args() []string {
	var out []string
	for _, f := range []struct{ name, val string }{
		{"config", c.cfg.SystemConfig}, {"credentials", c.cfg.CredentialsFile}, {"state-dir", c.cfg.StateDir},
		{"store", c.cfg.Store}, {"vault-addr", c.cfg.VaultAddr}, {"vault-path", c.cfg.VaultPath},
		{"token-file", c.cfg.VaultTokenFile}, {"claude", c.cfg.ClaudeBin}, {"user", c.cfg.User},
	} {
		if f.val != "" {
			out = append(out, "--"+f.name+"="+f.val)
		}
	}
	if c.cfg.CheckTimeout != 0 {
		out = append(out, "--check-timeout="+c.cfg.CheckTimeout.String())
	}
	if c.verbose {
		out = append(out, "-v")
	}
	return out
}

// parse parses a command's flags; ok false means the caller returns code.
func parse(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, help string) (code int, ok bool) {
	// Parse errors go to stderr with a pointer to --help; the help itself goes
	// to stdout only when asked for.
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, help)
		fmt.Fprintln(stdout, "\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
		return 0, false
	}
	if err != nil {
		fmt.Fprintf(stderr, "see claude-auth-sync %s --help\n", fs.Name())
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "claude-auth-sync %s: unexpected argument %q (see --help)\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return 0, true
}

// begin parses a command's flags and builds its engine; a nil engine means
// "return code" (help shown, a usage or configuration error).
func begin(fs *flag.FlagSet, c *commonFlags, args []string, stdout, stderr io.Writer, help string) (*authsync.Engine, int) {
	if code, ok := parse(fs, args, stdout, stderr, help); !ok {
		return nil, code
	}
	return setup(c, stderr)
}

// setup loads the config and builds the engine; code != 0 means give up.
func setup(c *commonFlags, stderr io.Writer) (*authsync.Engine, int) {
	cfg, err := config.Load(os.Getenv, c.cfg)
	if err != nil {
		reportConfigError(c, stderr, err)
		return nil, exitConfig
	}
	console, isJournal := newConsole(stderr, c.verbose, c.quiet, cfg.User)
	eng, err := authsync.New(cfg, console, isJournal)
	if err != nil {
		reportConfigError(c, stderr, err)
		return nil, exitConfig
	}
	return eng, 0
}

// reportConfigError tells the person at the terminal, and, when no one is
// (a unit, a timer, cron), leaves a FAIL event in the journal that the fleet's
// alert sees: an agent that cannot start is a login nobody looks after.
func reportConfigError(c *commonFlags, stderr io.Writer, err error) {
	f, isFile := stderr.(*os.File)
	terminal := isFile && isTerminal(f)
	journal := isFile && isJournalStream(f)
	if !journal {
		fmt.Fprintf(stderr, "claude-auth-sync: %v\n", err)
	}
	if terminal {
		return
	}
	user := c.cfg.User
	if user == "" {
		user = os.Getenv("CLAUDE_AUTH_USER")
	}
	if user == "" {
		user = authsync.CurrentUserName()
	}
	socket := os.Getenv("CLAUDE_AUTH_JOURNAL_SOCKET")
	if socket == "" {
		socket = "/run/systemd/journal/socket"
	}
	if socket == "off" {
		socket = ""
	}
	if _, serr := os.Stat(socket); socket == "" || serr != nil {
		if journal { // the journal is there but its socket is not: say it on stderr
			fmt.Fprintf(stderr, "<3>user=%s FAIL %v\n", user, err)
		}
		return
	}
	log := &authsync.EventLog{User: user, JournalSocket: socket}
	log.Event(authsync.FAIL, "%v", err)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// newConsole: on a terminal and on a pipe, "<local time> <STATUS> <message>"
// (the status word of an event, or the level of a diagnostic, once), in colour
// only on a terminal whose user did not set NO_COLOR (https://no-color.org);
// when stderr is the journal, the journal's own line shape (every line
// "user=<user> …", so each one says whose agent wrote it). It also reports
// whether stderr is the journal (then status events are not repeated there).
func newConsole(w io.Writer, verbose, quiet bool, user string) (*slog.Logger, bool) {
	return newConsoleEnv(w, verbose, quiet, user, os.Getenv)
}

func newConsoleEnv(w io.Writer, verbose, quiet bool, user string, getenv func(string) string) (*slog.Logger, bool) {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	} else if quiet {
		level = slog.LevelWarn
	}
	color := false
	if f, ok := w.(*os.File); ok {
		if isJournalStream(f) {
			return slog.New(authsync.NewJournalLineHandler(w, user, level)), true
		}
		color = isTerminal(f) && getenv("NO_COLOR") == ""
	}
	return slog.New(authsync.NewConsoleHandler(w, level, color)), false
}

// isJournalStream: systemd sets JOURNAL_STREAM=<dev>:<ino> of the stream it
// connected to stderr.
func isJournalStream(f *os.File) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// signalContext ends on SIGINT/SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}
