package agent

import (
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
)

// TestHealthVerdict: what the fleet is told, step by step: UNKNOWN until the
// first check, a FAIL no routine OK line hides, resolved by a passing check
// or by its own component, and never a fresh OK as the agent stops.
func TestHealthVerdict(t *testing.T) {
	var h healthVerdict
	want := func(step, status, reason string) {
		t.Helper()
		if v := h.current(); v.status != status || v.reason != reason {
			t.Errorf("%s: %s %q; want %s %q", step, v.status, v.reason, status, reason)
		}
	}
	h.line(eventlog.OK, "agent started")
	want("started", fleet.StatusUnknown, "no check yet since the agent started")
	h.checked(eventlog.OK, "inference check passed")
	want("checked", "OK", "")
	h.line(eventlog.FAIL, "vault token: mode 0644, readable by others")
	h.line(eventlog.OK, "refreshed the login ahead of Claude")
	h.line(eventlog.WARN, "vault unreachable")
	want("FAIL then OK and WARN", "FAIL", "vault token: mode 0644, readable by others")
	h.resolved("vault unreachable")
	want("another component recovers", "FAIL", "vault token: mode 0644, readable by others")
	h.stopped = true
	want("stopped with a FAIL", "FAIL", "vault token: mode 0644, readable by others (the agent has stopped)")
	h.stopped = false
	h.resolved("vault token: ")
	want("its component recovers", "OK", "")
	h.line(eventlog.WARN, "refresh failed: timeout")
	h.checked(eventlog.OK, "inference check passed")
	want("a passing check", "OK", "")
	h.checked(eventlog.FAIL, "inference check refused the login")
	want("a failed check", "FAIL", "inference check refused the login")
	h.line(eventlog.RECOVERED, "restored the login")
	h.checked(eventlog.OK, "")
	h.line(eventlog.OK, "agent stopped")
	h.stopped = true
	want("stopped", StatusStopped, "the agent stopped; the login is not looked after until it starts again")

	var fresh healthVerdict
	fresh.stopped = true
	if v := fresh.current(); v.status != StatusStopped {
		t.Errorf("a misconfigured agent stopping before any check: %s; want %s, never OK", v.status, StatusStopped)
	}
}
