// Package check runs the real inference check: the unmodified `claude` CLI asked
// for an exact one-word reply, and classifies what went wrong when it fails.
package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
)

// Expected is the exact reply the check asks for.
const Expected = "AUTH_OK"

// Prompt and Args are the reference tool's check: one turn, haiku, no session,
// no tools, no slash commands, no setting sources.
const Prompt = "Reply with exactly AUTH_OK and nothing else."

// Args are the arguments passed to the claude command.
func Args() []string {
	return []string{"-p", Prompt, "--model", "haiku", "--max-turns", "1",
		"--no-session-persistence", "--tools", "", "--disable-slash-commands", "--setting-sources", ""}
}

// Kind is the class of a check's outcome.
type Kind int

const (
	OK Kind = iota
	// Auth: the API refused the credential (401/403, revoked, not logged in).
	Auth
	// Dead: the login cannot be refreshed (invalid_grant, login expired).
	Dead
	// Transient: timeout, 5xx, 429, network, claude missing: retry next pass.
	Transient
	// Unexpected: claude answered, but not with AUTH_OK.
	Unexpected
)

func (k Kind) String() string {
	return [...]string{"ok", "auth", "dead", "transient", "unexpected"}[k]
}

// Result is one check.
type Result struct {
	Kind     Kind
	Reason   string // one line for humans; token-shaped strings are masked
	ExitCode int
	Duration time.Duration
}

// Runner runs the check.
type Runner struct {
	Command string // path or name of the claude CLI
	// Locate, when set, finds the CLI at each run (it may be installed while
	// the agent runs): its path, or "" and why not (what was tried).
	Locate  func() (path, notFound string)
	Timeout time.Duration // whole run
	Env     []string      // full environment for the child (config's ChildEnviron)
	Dir     string
}

// Run runs the CLI once. extraEnv is added to r.Env (the setup token goes there,
// never into argv).
func (r *Runner) Run(ctx context.Context, extraEnv ...string) Result {
	start := time.Now()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	command := r.Command
	if r.Locate != nil {
		var notFound string
		if command, notFound = r.Locate(); command == "" {
			return Result{Kind: Transient, Reason: notFound, ExitCode: -1, Duration: time.Since(start)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, command, Args()...)
	cmd.Env = append(append([]string(nil), r.Env...), extraEnv...)
	cmd.Dir = r.Dir
	cmd.Stdin = nil
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &limited{b: &stdout, n: 64 << 10}
	cmd.Stderr = &limited{b: &stderr, n: 64 << 10}
	// A session of its own: no controlling terminal to push keystrokes into
	// (TIOCSTI), and a group to kill whole on timeout (claude may start
	// helpers).
	if err := session.Isolate(cmd); err != nil {
		return Result{Kind: Transient, Reason: "could not run claude: " + err.Error(), ExitCode: -1, Duration: time.Since(start)}
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	res := Result{Duration: time.Since(start), ExitCode: cmd.ProcessState.ExitCode()}
	if ctx.Err() == context.DeadlineExceeded {
		res.Kind, res.Reason = Transient, fmt.Sprintf("claude check timed out after %s", timeout)
		return res
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			res.Kind = Transient
			if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
				res.Reason = fmt.Sprintf("claude CLI not found (%s): %s", command, Mask(err.Error()))
			} else {
				res.Reason = "could not run claude: " + Mask(err.Error())
			}
			return res
		}
	}
	out := strings.TrimSpace(stdout.String())
	if err == nil && out == Expected {
		res.Kind, res.Reason = OK, "inference check answered "+Expected
		return res
	}
	res.Kind, res.Reason = Classify(res.ExitCode, stdout.String(), stderr.String())
	return res
}

var (
	deadRe      = regexp.MustCompile(`(?i)invalid_grant|refresh token (?:not found|expired|invalid)|login (?:has )?expired|session expired`)
	authRe      = regexp.MustCompile(`(?i)\b40[13]\b|authentication_error|permission_error|oauth token has (?:been revoked|expired)|invalid (?:api key|bearer|token)|not logged in|please run /login|unauthori[sz]ed`)
	transientRe = regexp.MustCompile(`(?i)\b(?:429|5\d\d)\b|overloaded|rate.?limit|timed? ?out|timeout|econnrefused|econnreset|enotfound|eai_again|network|connection (?:error|refused|reset)|socket hang up|fetch failed|service unavailable`)
)

// Classify decides what a failed check means from its exit status and output.
// Dead beats Auth beats Transient: a 401 in a retry log after a network error is
// still an auth failure. Unknown failures are Transient: we restore only on a
// clear auth signal.
func Classify(exitCode int, stdout, stderr string) (Kind, string) {
	all := stdout + "\n" + stderr
	line := firstLine(all)
	switch {
	case deadRe.MatchString(all):
		return Dead, "login is dead: " + line
	case authRe.MatchString(all):
		return Auth, "credential refused: " + line
	case transientRe.MatchString(all):
		return Transient, "transient failure: " + line
	case exitCode == 0:
		return Unexpected, "claude answered something other than " + Expected + ": " + line
	}
	return Transient, fmt.Sprintf("claude exited %d: %s", exitCode, line)
}

// firstLine is the first non-empty output line, printable (it is the
// claude CLI's, which the user controls), masked and cut short.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(printable.String(l))
		if l == "" {
			continue
		}
		return printable.Short(Mask(l), 200)
	}
	return "(no output)"
}

var tokenRe = regexp.MustCompile(`sk-ant-[A-Za-z0-9_\-]{4,}|\b(?:hv[sbr]|s)\.[A-Za-z0-9_\-]{20,}|[A-Za-z0-9_+=]{40,}`)

// Mask replaces anything shaped like an Anthropic or Vault token.
func Mask(s string) string { return tokenRe.ReplaceAllString(s, "[redacted]") }

type limited struct {
	b *bytes.Buffer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		if len(p) > room {
			l.b.Write(p[:room])
		} else {
			l.b.Write(p)
		}
	}
	return len(p), nil
}
