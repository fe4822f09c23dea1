package main

import (
	"fmt"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

const helpHelp = `Usage: claude-auth-sync help [COMMAND] | help --man

Show the program's usage, or a command's help (the same as
claude-auth-sync COMMAND --help). --man prints the manual page in roff, made
from the same command table as --help; the packages install it as
claude-auth-sync(1).
`

func helpFlags(fs *flagSet) action {
	man := fs.Bool("man", false, "print the man page (roff) on stdout")
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parseOnly(fs, args, stdout, stderr, helpHelp); !ok {
			return code
		}
		switch {
		case *man && fs.NArg() == 0:
			writeMan(stdout)
			return 0
		case *man:
			fmt.Fprintf(stderr, "claude-auth-sync help: --man takes no command (the page covers them all)\n")
			return exitUsage
		case fs.NArg() == 0:
			usage(stdout)
			return 0
		case fs.NArg() > 1:
			fmt.Fprintf(stderr, "claude-auth-sync help: unexpected argument %q (see claude-auth-sync help --help)\n", fs.Arg(1))
			return exitUsage
		}
		return Main([]string{fs.Arg(0), "--help"}, stdout, stderr)
	}
}

// helpParts splits a command's help into its synopsis (the Usage line,
// without "Usage: ") and the text after it.
func helpParts(help string) (synopsis, text string) {
	first, rest, _ := strings.Cut(help, "\n")
	return strings.TrimPrefix(first, "Usage: "), strings.TrimLeft(rest, "\n")
}

// settings are the environment variables and config-file keys, for the man
// page. The README's configuration table says the same.
var settings = []struct{ name, meaning string }{
	{"CLAUDE_AUTH_USER", "the OS user whose login this is (default: the current user)"},
	{"CLAUDE_CONFIG_DIR", "Claude's config dir (default: ~/.claude); the credentials file is .credentials.json in it"},
	{"CLAUDE_CREDENTIALS_FILE", "the credentials file itself"},
	{"CLAUDE_AUTH_SYSTEM_CONFIG", "the system config file (default: /etc/claude-auth-sync/config)"},
	{"CLAUDE_AUTH_CONFIG_DIR", "the per-user config dir (default: ~/.config/claude-auth-sync)"},
	{"CLAUDE_AUTH_VAULT_TOKEN_FILE", "the scoped Vault token file, mode 0600 (default: <config dir>/vault-token)"},
	{"CLAUDE_AUTH_TOKEN_ENV_FILE", "the setup-token env file (default: <config dir>/claude-oauth.env)"},
	{"CLAUDE_AUTH_STATE_DIR", "sync.log, locks, lineage, state.json (default: ~/.local/state/claude-auth-sync)"},
	{"CLAUDE_AUTH_LOCAL_STORE", "the local backup file when no Vault is configured (default: <state dir>/backup.json)"},
	{"CLAUDE_AUTH_STORE", "auto, vault or file (default: auto, which is vault when VAULT_ADDR is set)"},
	{"CLAUDE_AUTH_VAULT_MOUNT", "the KV v2 mount (default: secret)"},
	{"CLAUDE_AUTH_VAULT_PATH", "the user's KV path (default: secret/workstation/claude-users/{user})"},
	{"CLAUDE_AUTH_CLAUDE_BIN", "the claude CLI (default: claude on PATH)"},
	{"CLAUDE_AUTH_CHECK_TIMEOUT", "timeout of the inference check (default: 90s)"},
	{"CLAUDE_AUTH_CHECK_INTERVAL", "the agent's full pass with the inference check (default: 6h)"},
	{"CLAUDE_AUTH_CHECK_SPREAD", "an agent start with no fresh check waits a random delay up to this (default: 5m; 0 = at once)"},
	{"CLAUDE_AUTH_REFRESH_LEAD", "how long before expiresAt the agent refreshes (default: 15m, at most half a token's lifetime)"},
	{"CLAUDE_AUTH_OAUTH_TOKEN_URL", "Claude's OAuth token endpoint (default: Claude's)"},
	{"CLAUDE_AUTH_OAUTH_CLIENT_ID", "the OAuth client id (default: Claude's)"},
	{"CLAUDE_AUTH_OAUTH_USER_AGENT", "the user agent of a refresh (default: Claude's)"},
	{"CLAUDE_AUTH_OAUTH_SCOPES", "scopes asked for in every refresh, replacing the login's own"},
	{"CLAUDE_AUTH_MCP", "on: the agent and exec refresh MCP server logins (mcpOAuth) ahead of Claude; off leaves them to Claude (default: on)"},
	{"CLAUDE_AUTH_MCP_LEAD", "how long before an MCP token's expiresAt it is refreshed (default: 15m; never under 10m, twice Claude's own 300 s)"},
	{"CLAUDE_AUTH_MCP_SKIP", "MCP server names, comma separated, whose logins are left to Claude (default: none)"},
	{"CLAUDE_AUTH_METRICS_DIR", "root's metrics dir: each agent writes <dir>/<user>/claude_auth_sync.prom, publish-metrics publishes them (default: none)"},
	{"CLAUDE_AUTH_HOST_ID", "this workstation's identity in Vault, so one user's logins on several hosts never cross (default: /etc/machine-id)"},
	{"CLAUDE_AUTH_HOST_LABEL", "this workstation's readable name in fleet and status (default: the hostname)"},
	{"CLAUDE_AUTH_JOURNAL_SOCKET", "the journal's socket (default: /run/systemd/journal/socket; off = none)"},
	{"VAULT_ADDR", "the Vault server; without it backups go to the local file store"},
	{"VAULT_TOKEN", "ignored by the login commands (only the scoped token file is used); provision's admin token; fleet's token when --token-file is not given"},
}

var files = []struct{ path, meaning string }{
	{"/etc/claude-auth-sync/config", "the fleet's settings, KEY=value lines (the keys of ENVIRONMENT); unknown keys are errors"},
	{"/etc/claude-auth-sync/roster.yaml", "the users provision reconciles"},
	{"/var/lib/claude-auth-sync/", "which users provision manages"},
	{"/var/lib/claude-auth-sync/metrics/<user>/claude_auth_sync.prom", "a user's metrics, written by the user's agent into the user's own directory (with CLAUDE_AUTH_METRICS_DIR set so)"},
	{"/var/lib/prometheus/node-exporter/claude_auth_sync.prom", "every user's metrics, published by publish-metrics for the node exporter"},
	{"~/.claude/.credentials.json", "Claude Code's login (claudeAiOauth), the file that is backed up and restored"},
	{"~/.config/claude-auth-sync/vault-token", "the user's scoped Vault token, mode 0600"},
	{"~/.config/claude-auth-sync/claude-oauth.env", "the setup-token env file, mode 0600"},
	{"~/.local/state/claude-auth-sync/", "sync.log, locks, lineage, state.json, pending-backup.json, backup.json (the local store)"},
}

// writeMan writes the manual page, claude-auth-sync(1), from the command
// table: the same text and flags as --help.
func writeMan(w io.Writer) {
	date := ""
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		date = time.Unix(s, 0).UTC().Format("2006-01-02")
	}
	fmt.Fprintf(w, ".\\\" Made by \"claude-auth-sync help --man\" from the command table; do not edit.\n")
	fmt.Fprintf(w, ".TH CLAUDE\\-AUTH\\-SYNC 1 %q %q \"User Commands\"\n", date, "claude-auth-sync "+version)
	fmt.Fprintln(w, ".nh\n.ad l")
	fmt.Fprintln(w, ".SH NAME")
	fmt.Fprintln(w, "claude\\-auth\\-sync \\- keep Claude Code logins alive, backed up to Vault and restorable")
	fmt.Fprintln(w, ".SH SYNOPSIS")
	fmt.Fprintln(w, ".B claude\\-auth\\-sync")
	fmt.Fprintln(w, ".RI [ flags ] \" \" [ command ] \" \" [ flags ]")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		syn, _ := helpParts(c.help)
		fmt.Fprintln(w, ".br")
		fmt.Fprintln(w, ".B "+roff(syn))
	}
	fmt.Fprintln(w, ".SH DESCRIPTION")
	roffText(w, `claude-auth-sync keeps every user of a shared Linux workstation logged in to
Claude Code with their own identity. It checks each user's login with a real
inference call, backs the rotating OAuth login (claudeAiOauth in
~/.claude/.credentials.json) up to HashiCorp Vault, or to a local file when
VAULT_ADDR is not set, and restores it when a racing writer clobbers it. The
per-user agent (claude-auth-sync run, started by systemd) is the single
refresher of the login.

With no command, claude-auth-sync runs "sync". Flags may come before the
command or after it. -v and --version print the version. No command ever
prints a token.`)
	fmt.Fprintln(w, ".SH \"THE RUNBOOK'S UNITS\"")
	roffText(w, unitsText)
	fmt.Fprintln(w, ".SH COMMANDS")
	for _, c := range commands() {
		if c.hidden {
			continue
		}
		syn, text := helpParts(c.help)
		fmt.Fprintln(w, ".SS "+roff(syn))
		roffText(w, text)
		fs, _ := c.flagSet()
		for _, d := range fs.docs() {
			head := "\\fB\\-\\-" + roff(d.name) + "\\fR"
			if d.value != "" {
				head += " \\fI" + roff(d.value) + "\\fR"
			}
			fmt.Fprintln(w, ".TP")
			fmt.Fprintln(w, head)
			fmt.Fprintln(w, roff(d.usage))
		}
	}
	fmt.Fprintln(w, ".SH \"EXIT STATUS\"")
	for _, e := range exitCodes {
		fmt.Fprintln(w, ".TP")
		fmt.Fprintf(w, ".B %d\n%s\n", e.code, roff(e.meaning))
	}
	fmt.Fprintln(w, ".SH FILES")
	for _, f := range files {
		fmt.Fprintln(w, ".TP")
		fmt.Fprintf(w, ".I %s\n%s\n", roff(f.path), roff(f.meaning))
	}
	fmt.Fprintln(w, ".SH ENVIRONMENT")
	roffText(w, "Later wins: built-in defaults, the system config file, the environment, flags.")
	for _, s := range append(settings, vaultClientSettings()) {
		fmt.Fprintln(w, ".TP")
		fmt.Fprintf(w, ".B %s\n%s\n", roff(s.name), roff(s.meaning))
	}
	fmt.Fprintln(w, ".SH \"SEE ALSO\"")
	fmt.Fprintln(w, ".BR claude (1),")
	fmt.Fprintln(w, ".BR vault (1),")
	fmt.Fprintln(w, ".BR systemctl (1),")
	fmt.Fprintln(w, ".BR systemd.service (5)")
	fmt.Fprintln(w, ".PP")
	fmt.Fprintln(w, roff("/usr/share/doc/claude-auth-sync/README.md, runbook.md (the admin's side: install, alerts, restore, setup-token mode) and provisioning.md (the roster)."))
}

// unitsText is the man page's word on the systemd units: the reference
// runbook's commands first, as its admins type them.
const unitsText = `systemctl start claude-auth-sync@<user>.service runs one full pass for
<user> now (the reference runbook's "sync now") and returns when it ended; its
exit status, systemctl status claude-auth-sync@<user>.service and journalctl -t
claude-auth-sync say how (OK, RECOVERED, SKIP, WARN, FAIL). When the user's agent
runs, the agent runs that pass (the unit asks it and waits). After vault kv patch
-method=rw ... setup_token=..., the same start writes claude-oauth.env before it
returns; setup_token="" and a start remove it.

claude-auth-sync@<user>.timer starts that pass every six hours; systemctl
list-timers 'claude-auth-sync@*' lists every provisioned user. A timer's pass
runs no second inference check when the agent's own passed within the interval.

The agent: claude-auth-sync-agent@<user>.service (system manager, no lingering;
provision enables it with the timer) or the user unit claude-auth-sync.service.
systemctl reload on it runs a full pass too; claude-auth-sync status shows its
live state, claude-auth-sync fleet every user's health.`

var listItem = regexp.MustCompile(`^\s+(-|\d+\.)\s+`)

// roffText writes help text as roff: plain paragraphs are filled, "-" and
// "1." lists become indented paragraphs, other indented blocks (examples)
// stay as written.
func roffText(w io.Writer, text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		lines := strings.Split(para, "\n")
		if strings.HasPrefix(lines[0], " ") && !listItem.MatchString(lines[0]) {
			fmt.Fprintln(w, ".PP\n.RS 4\n.nf")
			for _, l := range lines {
				fmt.Fprintln(w, roff(strings.TrimPrefix(l, "  ")))
			}
			fmt.Fprintln(w, ".fi\n.RE")
			continue
		}
		// Text, then maybe list items, each with the lines that continue it.
		if !listItem.MatchString(lines[0]) {
			fmt.Fprintln(w, ".PP")
		}
		for _, l := range lines {
			if m := listItem.FindString(l); m != "" {
				mark := strings.TrimSpace(m)
				if mark == "-" {
					mark = "\\(bu"
				}
				fmt.Fprintf(w, ".IP %s 4\n", mark)
				l = l[len(m):]
			}
			fmt.Fprintln(w, roff(strings.TrimSpace(l)))
		}
	}
}

// roff escapes one line of text: backslashes, hyphens (so options stay
// minus signs that can be copied), a leading control character, non-ASCII.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	// Non-ASCII as groff's named Unicode characters: the page reads the
	// same whether or not man runs it through preconv.
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, `\[u%04X]`, r)
		}
	}
	return b.String()
}

// vaultClientSettings is one entry naming every VAULT_* key the config takes
// besides VAULT_ADDR (the Vault client's own settings), from the code's list.
func vaultClientSettings() struct{ name, meaning string } {
	var keys []string
	for _, k := range config.Keys() {
		if strings.HasPrefix(k, "VAULT_") && k != "VAULT_ADDR" {
			keys = append(keys, k)
		}
	}
	return struct{ name, meaning string }{strings.Join(keys, ", "), "read by the Vault client as the vault CLI reads them; the environment wins over the config file"}
}
