package refresh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
	"github.com/claude-auth-sync/claude-auth-sync/sync/session"
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
	// Login is the new login (for the Claude login its claudeAiOauth object)
	// after a refresh, written to the file or not (not_written). The agent
	// backs it up from here, not from the file: a racer may clobber the file
	// the moment it holds the new login, and then this is its only copy.
	Login json.RawMessage `json:"login,omitempty"`
	// Kept is the token endpoint's answer the child kept (not_written): the
	// agent keeps it in memory, as the state dir may not have taken it, and
	// writes it into the file later instead of presenting the spent token.
	Kept json.RawMessage `json:"kept,omitempty"`
}

// childError is an error reported by the child: its text, and the sentinel
// the agent branches on.
type childError struct {
	kind error
	msg  string
}

func (c *childError) Error() string { return c.msg }
func (c *childError) Unwrap() error { return c.kind }

// childKinds are the error classes the child reports by name: the agent
// branches on their sentinels as it would on a refresh of its own.
var childKinds = append([]kind{
	{"not_written", ErrNotWritten},
	{"dead", ErrLoginDead},
}, laterKinds...)

// ChildRequest is what the agent asks of the child, as JSON on its stdin.
type ChildRequest struct {
	Force bool   `json:"force"`
	SawFP string `json:"saw_fingerprint,omitempty"` // Refresh's saw, as a fingerprint
	// MCPKey names the MCP login to refresh (its mcpOAuth key); empty: the
	// Claude login.
	MCPKey string `json:"mcp_key,omitempty"`
}

// ReadChildRequest reads the agent's request from the child's stdin.
func ReadChildRequest(in io.Reader) (ChildRequest, error) {
	var req ChildRequest
	if err := json.NewDecoder(io.LimitReader(in, 1<<16)).Decode(&req); err != nil {
		return req, fmt.Errorf("the agent's request is not readable: %v", err)
	}
	return req, nil
}

// ServeChild is the child's side: the refresh the agent asks for on in,
// reported as JSON on out. w is the child's own witness (the lineage file the
// agent reloads).
func (r *Refresher[L]) ServeChild(ctx context.Context, in io.Reader, out io.Writer, w Witness) error {
	req, err := ReadChildRequest(in)
	if err != nil {
		return err
	}
	return r.Serve(ctx, req, out, w)
}

// Serve is ServeChild for a request already read.
func (r *Refresher[L]) Serve(ctx context.Context, req ChildRequest, out io.Writer, w Witness) error {
	res, err := r.refreshHere(ctx, w, req.Force, req.SawFP)
	rep := reportFor(res, err)
	if rep.Kind == "not_written" {
		if p := r.keptAnswer(); p != nil {
			rep.Kept, _ = json.Marshal(p)
		}
	}
	return jsonEncode(out, rep)
}

// refreshViaChild is Refresh in the agent's refresh child: the answer is
// written there; what the child kept or learnt is taken over here.
func (r *Refresher[L]) refreshViaChild(ctx context.Context, w Witness, force bool, sawFP string) (Result[L], error) {
	var zero L
	res, err := r.Via(ctx, force, sawFP)
	if res.kept != nil {
		r.setKept(res.kept)
	}
	// The child appended to the lineage file.
	if lerr := w.Reload(); lerr != nil {
		r.diag.Warn("cannot reload lineage", "err", lerr)
	}
	if err == nil && res.OAuth == zero {
		if cur, rerr := r.fam.Read(); rerr == nil && cur.State == credentials.Usable {
			res.OAuth = cur.Login
		}
	}
	if err == nil && res.Refreshed && res.OAuth != zero {
		// The child noted the new login's birth in its own memory: note
		// it here too, or the lead of a short-lived login is taken as
		// the full default and it is refreshed again at once.
		r.tokens.note(res.OAuth.AccessToken(), r.now())
	}
	return res, err
}

// reportFor is the child's report of one refresh.
func reportFor[L Login](res Result[L], err error) childReport {
	var zero L
	rep := childReport{Refreshed: res.Refreshed, Message: res.Message}
	if err == nil {
		if res.Refreshed && res.OAuth != zero {
			rep.Login = res.OAuth.Compact()
		}
		return rep
	}
	rep.Kind, rep.Error = "other", err.Error()
	for _, k := range childKinds {
		if errors.Is(err, k.err) {
			rep.Kind = k.name
			break
		}
	}
	if rep.Kind == "not_written" && res.OAuth != zero {
		rep.Login = res.OAuth.Compact()
	}
	return rep
}

func jsonEncode(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }

// decodeChildReport turns the child's report back into Refresh's results.
func decodeChildReport[L Login](b []byte, parse func([]byte) (L, error)) (Result[L], error) {
	var rep childReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return Result[L]{}, fmt.Errorf("the refresh child's report is not readable: %v", err)
	}
	res := Result[L]{Refreshed: rep.Refreshed, Message: rep.Message}
	if len(rep.Kept) > 0 {
		var p kept
		if err := json.Unmarshal(rep.Kept, &p); err != nil {
			return res, fmt.Errorf("the refresh child's kept answer is not readable: %v", err)
		}
		res.kept = &p
	}
	if len(rep.Login) > 0 {
		o, err := parse(rep.Login)
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

// ChildCommand is how the agent starts its refresh child:
// `<Exe> refresh --agent-child <Args...>` (Args select the same config as the
// agent's: flags only, never a secret).
type ChildCommand struct {
	Exe  string
	Args []string
	// ActFor: root acts for a user, whose child gets Env (the allow-listed
	// environment), a session of its own, and its stderr reaches ours line
	// by line, printable (the user may ptrace it).
	ActFor bool
	Env    []string
	// MCPKey: the child refreshes this MCP login (empty: the Claude login).
	MCPKey string
}

// InChild returns a Via that runs each token request in the child c starts.
// For the user's own agent the child's stderr is the agent's.
func (r *Refresher[L]) InChild(c ChildCommand) func(context.Context, bool, string) (Result[L], error) {
	return func(ctx context.Context, force bool, sawFP string) (Result[L], error) {
		req, err := json.Marshal(ChildRequest{Force: force, SawFP: sawFP, MCPKey: c.MCPKey})
		if err != nil {
			return Result[L]{}, err
		}
		cmd := exec.Command(c.Exe, append([]string{"refresh", "--agent-child"}, c.Args...)...)
		cmd.Stdin = bytes.NewReader(req)
		cmd.Stderr = os.Stderr
		var lines *printable.LineWriter
		if c.ActFor {
			cmd.Env = c.Env
			lines = printable.NewLineWriter(os.Stderr)
			cmd.Stderr = lines
			if err := session.Isolate(cmd); err != nil {
				return Result[L]{}, fmt.Errorf("start the refresh child: %w", err)
			}
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return Result[L]{}, err
		}
		if err := cmd.Start(); err != nil {
			return Result[L]{}, fmt.Errorf("start the refresh child: %w", err)
		}
		type outcome struct {
			res Result[L]
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			b, rerr := io.ReadAll(io.LimitReader(out, 1<<20))
			werr := cmd.Wait()
			if lines != nil {
				lines.Close() // an unfinished last line
			}
			if len(b) == 0 {
				if werr == nil {
					werr = rerr
				}
				done <- outcome{err: fmt.Errorf("the refresh child reported nothing: %v", werr)}
				return
			}
			res, err := decodeChildReport(b, r.fam.Parse)
			done <- outcome{res, err}
		}()
		select {
		case o := <-done:
			return o.res, o.err
		case <-ctx.Done():
			// Stopping: the child finishes on its own (it ignores the stop
			// signals); whatever it writes, the next start picks up.
			return Result[L]{}, ctx.Err()
		}
	}
}
