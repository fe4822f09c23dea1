package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
)

// passRequest is a pass asked for over the agent's socket (the unit
// claude-auth-sync@<user>.service, `claude-auth-sync sync`): the scheduler
// runs it and sends its outcome to reply (buffered, one value).
type passRequest struct {
	kind  passrequest.Kind
	reply chan engine.Outcome
}

// requestServer answers pass requests on the socket in the state dir by
// handing them to the pass scheduler, one at a time, and waiting for the
// outcome.
type requestServer struct {
	e  *engine.Engine
	ln *passrequest.Listener
	// requests goes to the pass scheduler.
	requests chan passRequest
}

// newRequestServer listens in the state dir. Without a socket the agent still
// runs (a WARN says so): `sync` then runs its pass itself, kept apart from
// the agent's by the sync lock.
func newRequestServer(e *engine.Engine) *requestServer {
	rs := &requestServer{e: e, requests: make(chan passRequest)}
	ln, err := passrequest.Listen(e.Cfg.StateDir)
	if err != nil {
		e.Log.Event(engine.WARN, "%v; `systemctl start claude-auth-sync@%s.service` runs its pass beside the agent instead of asking it", err, e.Cfg.User)
		return rs
	}
	rs.ln = ln
	return rs
}

// Run serves until ctx ends.
func (rs *requestServer) Run(ctx context.Context) error {
	if rs.ln == nil {
		<-ctx.Done()
		return nil
	}
	return rs.ln.Serve(ctx, rs.run, func(uid int, why string) {
		rs.e.Log.Event(engine.WARN, "refused a pass request on %s from uid %d: %s", rs.ln.Path(), uid, why)
	})
}

// run hands one request to the scheduler and waits for its outcome.
func (rs *requestServer) run(ctx context.Context, kind passrequest.Kind) passrequest.Answer {
	req := passRequest{kind: kind, reply: make(chan engine.Outcome, 1)}
	select {
	case rs.requests <- req:
	case <-ctx.Done():
		return passrequest.Answer{Refused: "the agent is stopping"}
	}
	select {
	case o := <-req.reply:
		return passrequest.Answer{Status: string(o.Status), Code: o.Code, Message: check.Mask(o.Message)}
	case <-ctx.Done():
		return passrequest.Answer{Refused: "the agent is stopping"}
	}
}

// skipCheck says why a scheduled pass needs no inference check: the last one
// passed within the interval (the agent checks on its own schedule). "" means
// check.
func (ps *passScheduler) skipCheck(kind passrequest.Kind) string {
	if kind != passrequest.Scheduled {
		return ""
	}
	lc := ps.e.LoadRecord().LastCheck
	if lc == nil || lc.Result != check.OK.String() {
		return ""
	}
	age := ps.clk.Now().Sub(lc.At)
	if age < 0 || age >= ps.opt.CheckInterval {
		return ""
	}
	next := ps.live.snapshot().NextCheck
	msg := fmt.Sprintf("no second inference check: the agent's check passed %s ago", age.Round(time.Second))
	if next != nil {
		msg += fmt.Sprintf(", its next is in %s", next.Sub(ps.clk.Now()).Round(time.Second))
	}
	return msg
}
