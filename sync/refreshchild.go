package authsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// The agent's refreshes run in a child process (`refresh --agent-child`).
// Between the token endpoint rotating the login and its answer reaching the
// disk, the answer lives only in the memory of the process that asked; a
// kill -9 of the agent there would lose the live refresh token (a logout).
// The child outlives its parent's death, ignores the stop signals (its work
// is bounded by the lock wait and the request timeout), writes the answer
// and only then reports back on a pipe.

// childReport is what the child tells the agent, one JSON document on stdout.
type childReport struct {
	Refreshed bool   `json:"refreshed"`
	Message   string `json:"message,omitempty"`
	// Kind classifies an error: dead, locks, transient, timeout, not_written, other.
	Kind  string `json:"kind,omitempty"`
	Error string `json:"error,omitempty"`
	// Login is the new claudeAiOauth object, only when it could not be
	// written to the file (not_written): the agent backs it up.
	Login json.RawMessage `json:"login,omitempty"`
}

// childError is an error reported by the child: its text, and the sentinel
// the agent branches on.
type childError struct {
	kind error
	msg  string
}

func (c *childError) Error() string { return c.msg }
func (c *childError) Unwrap() error { return c.kind }

var childKinds = []struct {
	name string
	err  error
}{
	{"not_written", ErrNotWritten},
	{"dead", ErrLoginDead},
	{"locks", lock.ErrClaudeLocksUnavailable},
	{"transient", oauth.ErrTransient},
	{"timeout", context.DeadlineExceeded},
}

// AgentChildRefresh is the child's side: one non-forced refresh, as the
// agent's refresher would do it, reported as JSON on w.
func (e *Engine) AgentChildRefresh(ctx context.Context, w io.Writer) error {
	lin, err := LoadLineage(e.lineagePath())
	if err != nil {
		return fmt.Errorf("lineage: %w", err)
	}
	res, err := e.Refresh(ctx, lin, false, "")
	return jsonEncode(w, reportFor(res, err))
}

// reportFor is the child's report of one refresh.
func reportFor(res RefreshResult, err error) childReport {
	rep := childReport{Refreshed: res.Refreshed, Message: res.Message}
	if err == nil {
		return rep
	}
	rep.Kind, rep.Error = "other", err.Error()
	for _, k := range childKinds {
		if errors.Is(err, k.err) {
			rep.Kind = k.name
			break
		}
	}
	if rep.Kind == "not_written" && res.OAuth != nil {
		rep.Login = res.OAuth.Compact()
	}
	return rep
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// decodeChildReport turns the child's report back into Refresh's results.
func decodeChildReport(b []byte) (RefreshResult, error) {
	var rep childReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return RefreshResult{}, fmt.Errorf("the refresh child's report is not readable: %v", err)
	}
	res := RefreshResult{Refreshed: rep.Refreshed, Message: rep.Message}
	if len(rep.Login) > 0 {
		o, err := credentials.ParseOAuth(rep.Login)
		if err != nil {
			return res, fmt.Errorf("the refresh child's login is not readable: %v", err)
		}
		res.OAuth = o
	}
	if rep.Kind == "" {
		return res, nil
	}
	for _, k := range childKinds {
		if k.name == rep.Kind {
			return res, &childError{kind: k.err, msg: rep.Error}
		}
	}
	return res, errors.New(rep.Error)
}

// ChildRefresher returns a refresher for AgentOptions that runs
// `<exe> refresh --agent-child <args...>` (args select the same config as the
// agent's: flags only, never a secret). The child's stderr is the agent's.
func ChildRefresher(exe string, args []string) func(context.Context) (RefreshResult, error) {
	return func(ctx context.Context) (RefreshResult, error) {
		cmd := exec.Command(exe, append([]string{"refresh", "--agent-child"}, args...)...)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			return RefreshResult{}, err
		}
		if err := cmd.Start(); err != nil {
			return RefreshResult{}, fmt.Errorf("start the refresh child: %w", err)
		}
		type outcome struct {
			res RefreshResult
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			b, rerr := io.ReadAll(io.LimitReader(out, 1<<20))
			werr := cmd.Wait()
			if len(b) == 0 {
				if werr == nil {
					werr = rerr
				}
				done <- outcome{err: fmt.Errorf("the refresh child reported nothing: %v", werr)}
				return
			}
			res, err := decodeChildReport(b)
			done <- outcome{res, err}
		}()
		select {
		case o := <-done:
			return o.res, o.err
		case <-ctx.Done():
			// Stopping: the child finishes on its own (it ignores the stop
			// signals); whatever it writes, the next start picks up.
			return RefreshResult{}, ctx.Err()
		}
	}
}
