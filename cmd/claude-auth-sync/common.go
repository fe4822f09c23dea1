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
	"regexp"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
)

const (
	exitUsage  = engine.ExitUsage
	exitConfig = engine.ExitConfig
)

// commonFlags are the settings the commands that look after a login share.
// Each command registers only the ones it uses.
type commonFlags struct {
	cfg     config.Flags
	verbose bool
	quiet   bool // warnings and errors only
	// unitEvents: the command is the agent (run) or the pass (sync), whose
	// configuration error under its unit is a FAIL event in the journal.
	unitEvents bool
}

// register adds the flags every login command takes: where the files are,
// which store, whose login, --verbose.
func (c *commonFlags) register(fs *flagSet) {
	fs.StringVar(&c.cfg.SystemConfig, "config", "", "system config `file` (env CLAUDE_AUTH_SYSTEM_CONFIG; default: "+config.SystemFile+")")
	fs.StringVar(&c.cfg.CredentialsFile, "credentials", "", "Claude's credentials `file` (env CLAUDE_CREDENTIALS_FILE; default: $CLAUDE_CONFIG_DIR/.credentials.json, else ~/.claude/.credentials.json)")
	fs.StringVar(&c.cfg.StateDir, "state-dir", "", "`dir` for sync.log, locks, lineage (env CLAUDE_AUTH_STATE_DIR; default: ~/.local/state/claude-auth-sync)")
	fs.StringVar(&c.cfg.Store, "store", "", "backup `store`: auto, vault or file (env CLAUDE_AUTH_STORE; default: auto, which is vault when VAULT_ADDR is set, else file)")
	fs.choices["store"] = []string{"auto", "vault", "file"}
	fs.StringVar(&c.cfg.VaultAddr, "vault-addr", "", "Vault server `address` (env VAULT_ADDR)")
	fs.StringVar(&c.cfg.VaultPath, "vault-path", "", "KV `path` as \"vault kv\" takes it (env CLAUDE_AUTH_VAULT_PATH; default: secret/workstation/claude-users/{user})")
	fs.StringVar(&c.cfg.VaultTokenFile, "token-file", "", "scoped Vault token `file`, mode 0600 (env CLAUDE_AUTH_VAULT_TOKEN_FILE; default: ~/.config/claude-auth-sync/vault-token)")
	fs.StringVar(&c.cfg.User, "user", "", "OS `user` whose login this is (env CLAUDE_AUTH_USER; default: the current user)")
	fs.BoolVar(&c.verbose, "verbose", false, "verbose diagnostics (debug lines on stderr)")
	// The old spelling, after a command only (before one, -v is --version):
	// unit drop-ins and scripts that say "run -v", and an agent of the
	// previous version starting its refresh child, keep working.
	fs.BoolVar(&c.verbose, "v", false, "old spelling of --verbose")
	fs.hide("v")
}

// registerClaude adds --claude: the commands that run the claude CLI (the
// inference check, or status asking its version).
func (c *commonFlags) registerClaude(fs *flagSet) {
	fs.StringVar(&c.cfg.ClaudeBin, "claude", "", "the claude CLI `program` (env CLAUDE_AUTH_CLAUDE_BIN; default: claude on PATH)")
}

// registerCheckTimeout adds --check-timeout: the commands that run the check.
func (c *commonFlags) registerCheckTimeout(fs *flagSet) {
	fs.DurationVar(&c.cfg.CheckTimeout, "check-timeout", 0, "timeout of the inference check (env CLAUDE_AUTH_CHECK_TIMEOUT; default: 90s)")
}

// args gives back the settings as flags, for the agent's refresh child
// (refresh --agent-child), which must see the same config; none of them is
// a secret. The child runs no check, so --claude and --check-timeout stay out.
func (c *commonFlags) args() []string {
	var out []string
	for _, f := range []struct{ name, val string }{
		{"config", c.cfg.SystemConfig}, {"credentials", c.cfg.CredentialsFile}, {"state-dir", c.cfg.StateDir},
		{"store", c.cfg.Store}, {"vault-addr", c.cfg.VaultAddr}, {"vault-path", c.cfg.VaultPath},
		{"token-file", c.cfg.VaultTokenFile}, {"user", c.cfg.User},
	} {
		if f.val != "" {
			out = append(out, "--"+f.name+"="+f.val)
		}
	}
	if c.verbose {
		out = append(out, "--verbose")
	}
	return out
}

// parse parses a command's flags; ok false means the caller returns code.
// Parse errors go to stderr in one shape, with a guess at what was meant and
// a pointer to --help; the help itself goes to stdout only when asked for.
func parse(fs *flagSet, args []string, stdout, stderr io.Writer, help string) (code int, ok bool) {
	if code, ok := parseOnly(fs, args, stdout, stderr, help); !ok {
		return code, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "claude-auth-sync %s: unexpected argument %q (see claude-auth-sync %s --help)\n", fs.Name(), fs.Arg(0), fs.Name())
		return exitUsage, false
	}
	return 0, true
}

// parseOnly is parse for commands that take arguments after their flags.
func parseOnly(fs *flagSet, args []string, stdout, stderr io.Writer, help string) (code int, ok bool) {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, help)
		fs.printFlags(stdout)
		return 0, false
	}
	if err != nil {
		usageError(stderr, fs, err)
		return exitUsage, false
	}
	return 0, true
}

// usageError says what was wrong with the flags, in the CLI's one voice.
func usageError(w io.Writer, fs *flagSet, err error) {
	msg := err.Error()
	if name, ok := errUnknownFlag(err); ok {
		var names []string
		for _, d := range fs.docs() {
			names = append(names, d.name)
		}
		msg = "unknown flag " + dashes(name)
		if s := suggest(strings.TrimLeft(name, "-"), names); s != "" {
			msg += "; did you mean --" + s + "?"
		}
	}
	fmt.Fprintf(w, "claude-auth-sync %s: %s\nsee claude-auth-sync %s --help\n", fs.Name(), flagNames.ReplaceAllString(msg, "$1--$2"), fs.Name())
}

// flagNames finds flag's own "-name" in its messages ("invalid value … for
// flag -name", "flag needs an argument: -name"), to spell it as the help does.
var flagNames = regexp.MustCompile(`(flag |for |argument: )-([a-z][a-z-]+)`)

// dashes spells a flag name as the help does: --name (a lone letter: -x).
func dashes(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// begin parses a command's flags and builds its engine; a nil engine means
// "return code" (help shown, a usage or configuration error).
func begin(fs *flagSet, c *commonFlags, args []string, stdout, stderr io.Writer, help string) (*engine.Engine, int) {
	if code, ok := parse(fs, args, stdout, stderr, help); !ok {
		return nil, code
	}
	return setup(c, stderr)
}

// setup loads the config and builds the engine; code != 0 means give up.
func setup(c *commonFlags, stderr io.Writer) (*engine.Engine, int) {
	cfg, err := config.Load(os.Getenv, c.cfg)
	if err != nil {
		reportConfigError(c, stderr, err)
		return nil, exitConfig
	}
	console, isJournal := newConsole(stderr, c.verbose, c.quiet, cfg.User)
	eng, err := engine.New(cfg, console, isJournal)
	if err != nil {
		reportConfigError(c, stderr, err)
		return nil, exitConfig
	}
	eng.Telemetry.Version = version
	return eng, 0
}

// reportConfigError says what is wrong with the settings on stderr, with
// exit 78 from the caller. It is a journal FAIL line (which the fleet's alert
// sees: an agent that cannot start is a login nobody looks after) only for the
// agent and the pass run by their units (stderr is the journal, the command
// is one that writes journal events for its user), and only for the caller's
// own account or by root: a person's typo, a wrong --user or a read-only
// command is never another user's alert, nor this user's.
func reportConfigError(c *commonFlags, stderr io.Writer, err error) {
	f, isFile := stderr.(*os.File)
	user := c.cfg.User
	if user == "" {
		user = os.Getenv("CLAUDE_AUTH_USER")
	}
	if user == "" {
		user, _ = config.CurrentAccount()
	}
	if !c.unitEvents || !isFile || !isJournalStream(f) || !mayName(user) {
		fmt.Fprintf(stderr, "claude-auth-sync: %s\n", printable.String(err.Error()))
		return
	}
	socket := os.Getenv("CLAUDE_AUTH_JOURNAL_SOCKET")
	if socket == "" {
		socket = "/run/systemd/journal/socket"
	}
	if socket == "off" {
		socket = ""
	}
	if _, serr := os.Stat(socket); socket == "" || serr != nil {
		// The journal is there but its socket is not: say it on stderr.
		fmt.Fprintf(stderr, "<3>user=%s FAIL %s\n", user, printable.String(err.Error()))
		return
	}
	log := &eventlog.EventLog{User: user, JournalSocket: socket}
	log.Event(eventlog.FAIL, "%v", err)
}

// mayName: a line that names user may come from this process, root or
// user's own account (any of its names).
func mayName(user string) bool {
	euid := os.Geteuid()
	if euid == 0 {
		return true
	}
	if user == "" {
		return false
	}
	a, err := config.LookupAccount(user)
	return err == nil && a.UID == euid
}

func isTerminal(f *os.File) bool { return session.Terminal(int(f.Fd())) }

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
			return slog.New(eventlog.NewJournalLineHandler(w, user, level)), true
		}
		color = isTerminal(f) && getenv("NO_COLOR") == ""
	}
	return slog.New(eventlog.NewConsoleHandler(w, level, color)), false
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
