package engine

import (
	"context"
	"fmt"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// Exit codes, decided here once.
const (
	ExitOK        = 0 // OK, SKIP, RECOVERED, setup-token mode
	ExitFail      = 1 // FAIL: unusable login, foreign token, 403
	ExitUsage     = 2 // bad flags or arguments
	ExitLoggedOut = 3 // WARN: no login in the file (logout or new home)
	// ExitAgentRunning: `run` found another agent holding this user's agent
	// lock (a user unit and a template unit for one user). Units list it in
	// RestartPreventExitStatus= so it is not retried every 10 s forever.
	ExitAgentRunning = 4
	ExitTempFail     = 75 // WARN: login fine but backup pending, or check could not run
	ExitConfig       = 78 // bad configuration
)

// Outcome is the end of a command: the status word, the exit code, one line.
type Outcome struct {
	Status  eventlog.Status
	Code    int
	Message string
}

func fail(format string, args ...any) Outcome {
	return Outcome{Status: eventlog.FAIL, Code: ExitFail, Message: fmt.Sprintf(format, args...)}
}

// LoginHint is the way back from a dead login, for the end of a FAIL line.
func LoginHint() string {
	return "log in again with `claude auth login` (or `claude /login`), then run `claude-auth-sync sync`"
}

// finish logs the outcome's event, remembers it and returns it.
func (e *Engine) finish(rec *telemetry.Record, o Outcome) Outcome {
	e.Log.Event(o.Status, "%s", o.Message)
	if rec != nil {
		rec.LastPass = &telemetry.PassRecord{At: e.now(), Status: o.Status, Message: check.Mask(o.Message)}
		if rec.LastCheck != nil {
			sub := e.Telemetry.CurrentSubject(context.Background(), !rec.StoreDown)
			rec.LastCheck.Subject = &sub
		}
		if err := e.Telemetry.MergeRecord(rec); err != nil {
			e.Diag.Warn("cannot save state", "path", e.Telemetry.RecordPath(), "err", err)
		}
		h := e.Telemetry.HealthNow(o.Status)
		if o.Status != eventlog.OK {
			h.Reason = check.Mask(o.Message) // fleet shows why
		}
		e.Telemetry.PublishHealth(context.Background(), h)
	}
	return o
}
