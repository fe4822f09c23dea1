// Command claude-auth-sync keeps a workstation user's Claude Code login backed up
// in Vault (or a local file), checked by a real inference call, and restored when
// it is lost. main only parses flags and dispatches; the work is in sync/.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
)

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// version is set by the build (-ldflags "-X main.version=…"); a build
// without it says what the Go toolchain recorded (buildVersion).
var version = "dev"

func init() {
	info, ok := debug.ReadBuildInfo()
	version = buildVersion(version, info, ok)
}

// buildVersion is set when the build set it; else the main module's version
// from the build info (a release tag, or the pseudo-version the toolchain
// makes from the VCS commit), else its VCS revision; else set.
func buildVersion(set string, info *debug.BuildInfo, ok bool) string {
	if set != "dev" || !ok || info == nil {
		return set
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return set
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "+dirty"
	}
	return "dev-" + rev
}

// action runs a command once its flags are registered.
type action func(args []string, stdout, stderr io.Writer) int

// command is one entry of the command table. --help, the usage, the man page
// and the shell completions are all made from this table.
type command struct {
	name    string
	summary string
	help    string // "Usage: claude-auth-sync …" line, a blank line, the text
	hidden  bool   // works, but is not listed (help, completion)
	// flags registers the command's flags and returns what runs it.
	flags func(fs *flagSet) action
}

func commands() []command {
	return []command{
		{name: "run", summary: "the long-lived agent: back up every change at once, restore a clobbered login, check every 6h", help: runHelp, flags: runFlags},
		{name: "sync", summary: "one foreground pass: check the login, back it up, restore it when lost (default)", help: syncHelp, flags: syncFlags},
		{name: "exec", summary: "run a command (start-claude.sh, t3-serve) after waiting for or doing a due refresh", help: execHelp, flags: execFlags},
		{name: "refresh", summary: "one brokered refresh now, under Claude's locks, then back it up", help: refreshHelp, flags: refreshFlags},
		{name: "restore", summary: "put the latest backup into the credentials file (after a logout, or on a new home)", help: restoreHelp, flags: restoreFlags},
		{name: "status", summary: "show mode, store, expiry, last backup and check, Vault token TTL (never a secret)", help: statusHelp, flags: statusFlags},
		{name: "fleet", summary: "admins: every user's agents on every workstation, worst first (Vault metadata, never a secret)", help: fleetHelp, flags: fleetFlags},
		{name: "provision", summary: "root: reconcile the roster (Vault policies and tokens, token files, per-user units)", help: provisionHelp, flags: provisionFlags},
		{name: "publish-metrics", summary: "root: publish every user's metrics into the node exporter's textfile dir, labelled by each file's owner", help: publishMetricsHelp, flags: publishMetricsFlags},
		{name: "version", summary: "print the version (also --version, -v)", help: versionHelp, flags: versionFlags},
		{name: "help", summary: "show the help of the program or of a command; --man prints the man page", help: helpHelp, hidden: true, flags: helpFlags},
		{name: "completion", summary: "print a shell completion script (bash, zsh or fish)", help: completionHelp, hidden: true, flags: completionFlags},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// flagSet builds the command's flags (nothing runs).
func (c command) flagSet() (*flagSet, action) {
	fs := newFlagSet(c.name)
	return fs, c.flags(fs)
}

// exitCodes are the program's exit statuses, for the usage and the man page.
var exitCodes = []struct {
	code    int
	meaning string
}{
	{0, "OK, SKIP, RECOVERED, or setup-token mode"},
	{engine.ExitFail, "FAIL: the login is dead or a step failed"},
	{exitUsage, "usage error"},
	{3, "not logged in (no credentials file; a logout is never undone automatically)"},
	{engine.ExitAgentRunning, "(run) another agent already runs for this user"},
	{engine.ExitTempFail, "temporary: backup pending or the check could not run; the next pass retries"},
	{exitNoPerm, "(fleet) permission denied: the token may not read the fleet's metadata"},
	{exitConfig, "configuration error"},
}

// Main runs the command line and returns the exit code.
//
// Flags may come before the command (claude-auth-sync --verbose status) or
// after it; either way the command's own flag set parses them. Before any
// command, -v and --version print the version and -h and --help the usage.
func Main(args []string, stdout, stderr io.Writer) int {
	pre, name, rest := splitCommand(args)
	for _, a := range pre {
		switch a {
		case "-v", "-version", "--version":
			return runVersion(stdout)
		case "-h", "-help", "--help":
			if name == "" {
				usage(stdout)
				return 0
			}
		}
	}
	if name == "" {
		// Flags with no command belong to the default command.
		name = "sync"
	}
	c, ok := lookup(name)
	if !ok {
		msg := fmt.Sprintf("unknown command %q", name)
		if s := suggest(name, visibleCommandNames()); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		fmt.Fprintf(stderr, "claude-auth-sync: %s\nsee claude-auth-sync --help for the commands\n", msg)
		return exitUsage
	}
	_, run := c.flagSet()
	// A new slice: pre shares args' array, and appending to it would write
	// over the caller's arguments.
	all := make([]string, 0, len(pre)+len(rest))
	return run(append(append(all, pre...), rest...), stdout, stderr)
}

// splitCommand finds the command among args: pre are the flags before it
// (with their values), rest what follows it. A flag's value is told from
// the command by asking whether any command's flag of that name takes one.
func splitCommand(args []string) (pre []string, name string, rest []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || a == "-" || !strings.HasPrefix(a, "-") {
			if a == "--" || a == "-" {
				return args, "", nil
			}
			return args[:i], a, args[i+1:]
		}
		flagName := strings.TrimLeft(a, "-")
		if !strings.Contains(flagName, "=") && anyTakesValue(flagName) {
			i++
		}
	}
	return args, "", nil
}

func anyTakesValue(name string) bool {
	for _, c := range commands() {
		if fs, _ := c.flagSet(); fs.takesValue(name) {
			return true
		}
	}
	return false
}

func visibleCommandNames() []string {
	var out []string
	for _, c := range commands() {
		if !c.hidden {
			out = append(out, c.name)
		}
	}
	return append(out, "help")
}

func usage(w io.Writer) {
	fmt.Fprint(w, `claude-auth-sync keeps your Claude Code login alive, backed up and restorable.

Usage:
  claude-auth-sync [flags] [command] [flags]

Commands:
`)
	for _, c := range commands() {
		if !c.hidden {
			fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
With no command, runs "sync". Run "claude-auth-sync <command> --help" for its
flags; they may also come before the command (claude-auth-sync --verbose status).
-v and --version print the version.

Backups go to HashiCorp Vault when VAULT_ADDR is set (environment, flag or the
system config `+"/etc/claude-auth-sync/config"+`), else to a local file in the state dir.

Exit codes:
`)
	for _, e := range exitCodes {
		fmt.Fprintf(w, "  %-3d %s\n", e.code, e.meaning)
	}
}

const versionHelp = `Usage: claude-auth-sync version

Print the program's name and version (the same as claude-auth-sync --version
or -v).
`

func versionFlags(fs *flagSet) action {
	return func(args []string, stdout, stderr io.Writer) int {
		if code, ok := parse(fs, args, stdout, stderr, versionHelp); !ok {
			return code
		}
		return runVersion(stdout)
	}
}

func runVersion(stdout io.Writer) int {
	fmt.Fprintln(stdout, "claude-auth-sync", version)
	return 0
}
