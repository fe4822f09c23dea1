package provision

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Systemctl runs systemctl for the per-user system units. Path is the binary
// ("systemctl" on PATH by default; CLAUDE_AUTH_SYSTEMCTL points tests at a
// recorder). Only unit names ever reach its argv.
type Systemctl struct {
	Path string
}

// UnitsFor are the per-user units provision enables: the agent, and the
// reference runbook's six-hourly timer (its pass asks the agent, so it adds
// no second check), which `systemctl list-timers 'claude-auth-sync@*'` lists.
func UnitsFor(user string) []string {
	return []string{"claude-auth-sync-agent@" + user + ".service", "claude-auth-sync@" + user + ".timer"}
}

func (s Systemctl) run(ctx context.Context, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	bin := s.Path
	if bin == "" {
		bin = "systemctl"
	}
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return strings.TrimSpace(out.String()), ee.ExitCode(), fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	if err != nil {
		return "", -1, fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(out.String()), 0, nil
}

// UnitState is whether a unit is enabled and running.
type UnitState struct {
	Enabled bool // is-enabled says enabled (or enabled-runtime)
	Active  bool // is-active says active, activating or reloading
}

// State asks systemd about unit. Both queries exit non-zero for "no", so only
// a failure to run systemctl at all is an error.
func (s Systemctl) State(ctx context.Context, unit string) (UnitState, error) {
	var st UnitState
	out, code, err := s.run(ctx, "is-enabled", unit)
	if code < 0 {
		return st, err
	}
	st.Enabled = out == "enabled" || out == "enabled-runtime"
	out, code, err = s.run(ctx, "is-active", unit)
	if code < 0 {
		return st, err
	}
	st.Active = out == "active" || out == "activating" || out == "reloading"
	return st, nil
}

// States asks systemd about each of units: all says every one is enabled
// and running, any that one of them is enabled or running.
func (s Systemctl) States(ctx context.Context, units []string) (all, any bool, err error) {
	all = true
	for _, u := range units {
		st, err := s.State(ctx, u)
		if err != nil {
			return false, false, err
		}
		all = all && st.Enabled && st.Active
		any = any || st.Enabled || st.Active
	}
	return all, any, nil
}

// Enable enables and starts units.
func (s Systemctl) Enable(ctx context.Context, units ...string) error {
	_, _, err := s.run(ctx, append([]string{"enable", "--now"}, units...)...)
	return err
}

// Disable stops and disables units.
func (s Systemctl) Disable(ctx context.Context, units ...string) error {
	_, _, err := s.run(ctx, append([]string{"disable", "--now"}, units...)...)
	return err
}
