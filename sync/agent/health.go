package agent

import (
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
)

// healthVerdict is what this host tells the fleet about the login, from the
// lines the journal got and the full checks' results. It is not simply the
// last line's status: a routine OK (a backup, a refresh, "agent stopped")
// says nothing about a FAIL before it, so
//
//   - until the first full check (or a start that relies on a recent one)
//     the verdict is UNKNOWN;
//   - a FAIL or WARN line stays the verdict (FAIL over WARN, the newest of a
//     rank) until a full check passes, a RECOVERED line, or the component
//     that failed says it works again (resolved);
//   - once the agent stops it is STOPPED (a FAIL stays FAIL): a restart that
//     cannot reach Vault (a configuration error) never leaves a fresh OK.
type healthVerdict struct {
	check   *verdict // the last full check; nil: none yet
	problem *verdict // a FAIL or WARN not resolved since
	stopped bool
}

type verdict struct {
	status string
	reason string // "" for OK
}

// StatusStopped is the health status an agent leaves as it stops.
const StatusStopped = "STOPPED"

// line notes a status line the journal got.
func (h *healthVerdict) line(st eventlog.Status, msg string) {
	switch st {
	case eventlog.FAIL, eventlog.WARN:
		if h.problem == nil || h.problem.status == string(st) || st == eventlog.FAIL {
			h.problem = &verdict{status: string(st), reason: msg}
		}
	case eventlog.RECOVERED:
		// Mended (a clobbered file restored): the verdict until the next
		// check, once there has been one.
		h.problem = nil
		if h.check != nil {
			h.check = &verdict{status: string(st), reason: msg}
		}
	}
}

// checked notes the end of a full check (a pass that ran the inference
// check): one that did not fail resolves every problem before it.
func (h *healthVerdict) checked(st eventlog.Status, msg string) {
	h.check = &verdict{status: string(st), reason: msg}
	if st != eventlog.FAIL && st != eventlog.WARN {
		h.problem = nil
	}
}

// resolved: a component works again; the problem is over if it is one
// that component reported (its reason starts with one of its prefixes).
func (h *healthVerdict) resolved(prefixes ...string) {
	for _, p := range prefixes {
		if h.problem != nil && strings.HasPrefix(h.problem.reason, p) {
			h.problem = nil
		}
	}
}

// current is the verdict.
func (h *healthVerdict) current() verdict {
	v := h.live()
	if !h.stopped {
		return v
	}
	if v.status == string(eventlog.FAIL) {
		v.reason += " (the agent has stopped)"
		return v
	}
	why := "the agent stopped; the login is not looked after until it starts again"
	if v.status != string(eventlog.OK) {
		why += " (it was " + v.status + ": " + v.reason + ")"
	}
	return verdict{status: StatusStopped, reason: why}
}

// live is the verdict of a running agent.
func (h *healthVerdict) live() verdict {
	p, c := h.problem, h.check
	switch {
	case p != nil && p.status == string(eventlog.FAIL):
		return *p
	case c != nil && c.status == string(eventlog.FAIL):
		return *c
	case p != nil:
		return *p
	case c == nil:
		return verdict{status: fleet.StatusUnknown, reason: "no check yet since the agent started"}
	case c.status == string(eventlog.OK):
		return verdict{status: c.status}
	}
	return *c
}

// line is the health's share of a status line (the agent's
// EventLog.OnEvent): it never blocks on Vault.
func (mw *metricsWriter) line(st eventlog.Status, msg string) {
	mw.verdictChange(func(h *healthVerdict) { h.line(st, msg) })
}

// checked notes the end of a full check.
func (mw *metricsWriter) checked(st eventlog.Status, msg string) {
	mw.verdictChange(func(h *healthVerdict) { h.checked(st, msg) })
}

// resolved: a component says the FAIL or WARN it reported, its line
// starting with one of prefixes, is over.
func (mw *metricsWriter) resolved(prefixes ...string) {
	mw.verdictChange(func(h *healthVerdict) { h.resolved(prefixes...) })
}

// stopping: the agent stops; the last health write says so.
func (mw *metricsWriter) stopping() {
	mw.verdictChange(func(h *healthVerdict) { h.stopped = true })
}

func (mw *metricsWriter) verdictChange(f func(*healthVerdict)) {
	mw.mu.Lock()
	f(&mw.verdict)
	mw.statusAt = mw.Clock.Now()
	mw.mu.Unlock()
	mw.changed.poke()
}
