// Command claude-auth-sync keeps a workstation user's Claude Code login backed up
// in Vault (or a local file), checked by a real inference call, and restored when
// it is lost. main only parses flags and dispatches; the work is in sync/.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) }

// version is set by the build (-ldflags "-X main.version=…").
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "the long-lived agent: back up every change at once, restore a clobbered login, check every 6h", runRun},
		{"sync", "one foreground pass: check the login, back it up, restore it when lost (default)", runSync},
		{"exec", "run a command (start-claude.sh, t3-serve) after waiting for or doing a due refresh", runExec},
		{"refresh", "one brokered refresh now, under Claude's locks, then back it up", runRefresh},
		{"restore", "put the latest backup into the credentials file (after a logout, or on a new home)", runRestore},
		{"status", "show mode, store, expiry, last backup and check, Vault token TTL (never a secret)", runStatus},
		{"provision", "root: reconcile the roster (Vault policies and tokens, token files, per-user units)", runProvision},
		{"version", "print the version", runVersion},
	}
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return runSync(nil, stdout, stderr)
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && name == "help" {
			return Main([]string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	case "--version":
		return runVersion(nil, stdout, stderr)
	}
	if len(name) > 0 && name[0] == '-' {
		// Flags with no subcommand belong to the default command.
		return runSync(args, stdout, stderr)
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "claude-auth-sync: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `claude-auth-sync keeps your Claude Code login alive, backed up and restorable.

Usage:
  claude-auth-sync [command] [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
With no command, runs "sync". Run "claude-auth-sync <command> --help" for its flags.

Backups go to HashiCorp Vault when VAULT_ADDR is set (environment, flag or the
system config `+"/etc/claude-auth-sync/config"+`), else to a local file in the state dir.

Exit codes: 0 OK/SKIP/RECOVERED/setup-token mode, 1 FAIL, 2 usage error,
3 not logged in (no credentials), 4 (run) another agent already runs for this
user, 75 temporary (backup pending or check could
not run; the next pass retries), 78 configuration error.
`)
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stdout, "claude-auth-sync", version)
	return 0
}
