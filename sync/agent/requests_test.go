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

// countingChecker passes every check and counts them. With gate set, a check
// first says it started (on started) and then waits for gate.
type countingChecker struct {
	n       atomic.Int32
	gate    atomic.Pointer[chan struct{}]
	started chan struct{}
}

func (c *countingChecker) Run(context.Context, ...string) check.Result {
	c.n.Add(1)
	if g := c.gate.Load(); g != nil {
		c.started <- struct{}{}
		<-*g
	}
	return check.Result{Kind: check.OK}
}

// startScheduler runs the pass scheduler and the request server on the rig's
// fake clock and waits for the first pass (no check on record, no spread:
// at once).
func (r *rig) startScheduler() (*countingChecker, *liveState) {
	r.t.Helper()
	cc := &countingChecker{started: make(chan struct{}, 1)}
	r.e.Checker = cc
	r.opt.CheckSpread = 0
	l := r.newLogin(30 * 24 * time.Hour)
	r.writeFile(l.json())
	g := r.components()
	live := g.live
	rs := newRequestServer(requestServerConfig{base: base{Log: r.e.Log, Diag: r.e.Diag, Clock: r.clk}, User: r.e.Cfg.User,
		StateDir: r.e.Cfg.StateDir, Listen: listenRequests})
	if rs.ln == nil {
		r.t.Fatal("the agent's request socket was not made")
	}
	r.rs = rs
	g.runRenewer()
	r.run("request server", func(ctx context.Context) error { return rs.Run(ctx, g.requests) })
	g.runScheduler()
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
	rec := r.e.Telemetry.LoadRecord()
	old := rec.LastCheck.At.Add(-7 * time.Hour)
	rec.LastCheck.At = old
	if err := r.e.Telemetry.MergeRecord(rec); err != nil {
		t.Fatal(err)
	}
	if a := r.ask(passrequest.Scheduled); !strings.Contains(a.Message, "inference check passed") || cc.n.Load() != 3 {
		t.Errorf("timer pass after a stale check = %+v, %d checks; want a check (3)", a, cc.n.Load())
	}
}

// Many people (or a script) ask at once while a pass checks: the pass that was
// running answers the first, and one more pass answers all the others, with
// no second check, because the running check passed after they asked. A
// person asking after that check gets a check of their own.
func TestRequestsAtOnceShareOneCheck(t *testing.T) {
	r := newRig(t)
	cc, _ := r.startScheduler()
	r.clk.Set(t0.Add(time.Hour))
	gate := make(chan struct{})
	cc.gate.Store(&gate)

	answers := make(chan passrequest.Answer, 20)
	go func() { answers <- r.ask(passrequest.Full) }()
	<-cc.started // the first request's pass is checking
	for range 19 {
		go func() { answers <- r.ask(passrequest.Full) }()
	}
	// Let the 19 reach the agent (they wait for the scheduler) before the
	// check ends: the fake clock moves on so their time is before its end.
	for deadline := time.Now().Add(bound); r.rs.arrived.Load() < 20; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 20 requests reached the agent within %s", r.rs.arrived.Load(), bound)
		}
	}
	r.clk.Set(t0.Add(time.Hour + time.Second))
	cc.gate.Store(nil)
	close(gate)

	checked, shared := 0, 0
	for range 20 {
		a := <-answers
		switch {
		case a.Status != "OK" || a.Code != 0:
			t.Errorf("answer %+v; want OK", a)
		case strings.Contains(a.Message, "after this pass was asked for"):
			shared++
		case strings.Contains(a.Message, "inference check passed"):
			checked++
		default:
			t.Errorf("answer %+v: neither a check nor a shared one", a)
		}
	}
	if checked != 1 || shared != 19 || cc.n.Load() != 2 {
		t.Errorf("20 requests at once: %d checked, %d answered by that check, %d checks in all; want 1, 19, 2", checked, shared, cc.n.Load())
	}

	r.clk.Set(t0.Add(2 * time.Hour))
	if a := r.ask(passrequest.Full); !strings.Contains(a.Message, "inference check passed") || cc.n.Load() != 3 {
		t.Errorf("a request after that check = %+v, %d checks; want a check of its own (3)", a, cc.n.Load())
	}
}
