package agent

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
)

// countingChecker passes every check and counts them.
type countingChecker struct{ n atomic.Int32 }

func (c *countingChecker) Run(context.Context, ...string) check.Result {
	c.n.Add(1)
	return check.Result{Kind: check.OK}
}

// startScheduler runs the pass scheduler and the request server on the rig's
// fake clock and waits for the first pass (no check on record, no spread:
// at once).
func (r *rig) startScheduler() (*countingChecker, *liveState) {
	r.t.Helper()
	cc := &countingChecker{}
	r.e.Checker = cc
	r.opt.CheckSpread = 0
	l := r.newLogin(30 * 24 * time.Hour)
	r.writeFile(l.json())
	_, _, rn, ps, live := r.components()
	rs := newRequestServer(r.e)
	if rs.ln == nil {
		r.t.Fatal("the agent's request socket was not made")
	}
	r.run("renewer", rn.Run)
	r.run("request server", rs.Run)
	r.run("pass scheduler", func(ctx context.Context) error { return ps.Run(ctx, nil, rs.requests) })
	r.awaitNextCheck(live, t0.Add(r.opt.CheckInterval))
	return cc, live
}

// awaitNextCheck waits until the scheduler has re-armed its timer for at
// (it sets the next check after arming it).
func (r *rig) awaitNextCheck(live *liveState, at time.Time) {
	r.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		if n := live.snapshot().NextCheck; n != nil && n.Equal(at) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the next check was not set to %s within %s (now %v)", at, bound, live.snapshot().NextCheck)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *rig) ask(kind passrequest.Kind) passrequest.Answer {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	a, err := passrequest.Ask(ctx, r.e.Cfg.StateDir, kind)
	if err != nil {
		r.t.Fatalf("Ask(%s): %v", kind, err)
	}
	return a
}

// The agent checks every six hours; the reference's six-hourly timer asks it
// for a pass too (claude-auth-sync@<user>.timer): over 24 h the login is
// checked 4 times, not 8, and every timer pass still ends OK.
func TestTimerPassesDoNotDoubleTheAgentsChecks(t *testing.T) {
	r := newRig(t)
	cc, live := r.startScheduler()
	if got := cc.n.Load(); got != 1 {
		t.Fatalf("checks after the first pass = %d; want 1", got)
	}
	for h := 1; h < 24; h++ {
		r.clk.Set(t0.Add(time.Duration(h) * time.Hour))
		if h%6 == 0 {
			r.awaitNextCheck(live, t0.Add(time.Duration(h+6)*time.Hour))
		}
		if h%6 == 2 { // the timer, two hours off the agent's schedule
			a := r.ask(passrequest.Scheduled)
			if a.Status != "OK" || a.Code != 0 || !strings.Contains(a.Message, "no second inference check: the agent's check passed 2h0m0s ago") {
				t.Errorf("timer pass at +%dh = %+v; want OK without a check", h, a)
			}
		}
	}
	if got := cc.n.Load(); got != 4 {
		t.Errorf("inference checks over 24 h with agent and timer = %d; want 4", got)
	}
	t.Logf("inference checks over a simulated 24 h with the agent and the six-hourly timer: %d", cc.n.Load())
}

// A person's start (`systemctl start claude-auth-sync@<user>.service`) always
// runs the whole pass with the check, and moves the agent's schedule on; a
// timer pass after a check older than the interval checks too.
func TestRequestedPasses(t *testing.T) {
	r := newRig(t)
	cc, live := r.startScheduler()

	r.clk.Set(t0.Add(time.Hour))
	a := r.ask(passrequest.Full)
	if a.Status != "OK" || !strings.Contains(a.Message, "inference check passed") || cc.n.Load() != 2 {
		t.Errorf("a person's pass 1 h after a check = %+v, %d checks; want a check (2)", a, cc.n.Load())
	}
	r.awaitNextCheck(live, t0.Add(7*time.Hour))

	// The agent's next check is due at +7h; at +6h59m a timer's pass skips it.
	r.clk.Set(t0.Add(6*time.Hour + 59*time.Minute))
	if a := r.ask(passrequest.Scheduled); !strings.Contains(a.Message, "no second inference check") || cc.n.Load() != 2 {
		t.Errorf("timer pass 5h59m after a check = %+v, %d checks; want no check", a, cc.n.Load())
	}

	// A check older than the interval (the agent's schedule was stopped here
	// by hand): the timer's pass checks.
	rec := r.e.LoadRecord()
	old := rec.LastCheck.At.Add(-7 * time.Hour)
	rec.LastCheck.At = old
	if err := r.e.MergeRecord(rec); err != nil {
		t.Fatal(err)
	}
	if a := r.ask(passrequest.Scheduled); !strings.Contains(a.Message, "inference check passed") || cc.n.Load() != 3 {
		t.Errorf("timer pass after a stale check = %+v, %d checks; want a check (3)", a, cc.n.Load())
	}
}
