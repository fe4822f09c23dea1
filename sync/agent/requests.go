package agent

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
)

// passRequest is a pass asked for over the agent's socket (the unit
// claude-auth-sync@<user>.service, `claude-auth-sync sync`): the scheduler
// runs it and sends its outcome to reply (buffered, one value).
type passRequest struct {
	kind  passrequest.Kind
	reply chan engine.Outcome
	// at is when the request reached the agent: a check that passed after
	// it answers it (see skipCheck).
	at time.Time
}

// requestServer answers pass requests on the socket in the state dir by
// handing them to the pass scheduler, one at a time, and waiting for the
// outcome.
type requestServer struct {
	requestServerConfig
	ln requestListener // nil: no socket
	// arrived counts the requests taken (tests wait on it).
	arrived atomic.Int64
}

// requestServerConfig is what the request server uses.
type requestServerConfig struct {
	base
	User     string
	StateDir string
	Listen   func(dir string) (requestListener, error)
}

// requestListener is the agent's socket (passrequest.Listener).
type requestListener interface {
	Serve(ctx context.Context, run func(context.Context, passrequest.Kind) passrequest.Answer, refused func(uid int, why string)) error
	Path() string
}

// listenRequests is passrequest.Listen as the request server takes it.
func listenRequests(dir string) (requestListener, error) {
	ln, err := passrequest.Listen(dir)
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// newRequestServer listens in the state dir. Without a socket the agent still
// runs (a WARN says so): `sync` then runs its pass itself, kept apart from
// the agent's by the sync lock.
func newRequestServer(c requestServerConfig) *requestServer {
	rs := &requestServer{requestServerConfig: c}
	ln, err := c.Listen(c.StateDir)
	if err != nil {
		c.Log.Event(eventlog.WARN, "%v; `systemctl start claude-auth-sync@%s.service` runs its pass beside the agent instead of asking it", err, c.User)
		return rs
	}
	rs.ln = ln
	return rs
}

// Run serves until ctx ends, handing each request to the scheduler
// (requests). It fails when the socket stops accepting connections.
func (rs *requestServer) Run(ctx context.Context, requests chan<- passRequest) error {
	if rs.ln == nil {
		<-ctx.Done()
		return nil
	}
	run := func(ctx context.Context, kind passrequest.Kind) passrequest.Answer {
		return rs.ask(ctx, kind, requests)
	}
	return rs.ln.Serve(ctx, run, func(uid int, why string) {
		rs.Log.Event(eventlog.WARN, "refused a pass request on %s from uid %d: %s", rs.ln.Path(), uid, why)
	})
}

// ask hands one request to the scheduler and waits for its outcome.
func (rs *requestServer) ask(ctx context.Context, kind passrequest.Kind, requests chan<- passRequest) passrequest.Answer {
	rs.arrived.Add(1)
	req := passRequest{kind: kind, reply: make(chan engine.Outcome, 1), at: rs.Clock.Now()}
	select {
	case requests <- req:
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

// skipCheck says why the pass for a batch of requests needs no inference
// check ("" means check). A person's request (Full) is answered by a check
// that passed after it reached the agent: when many ask at once (a script
// over `systemctl start`, 20 processes running `sync`), the pass that was
// running then checked for all of them, and a second check of the same login
// moments later would only cost a claude run (and, when that login's access
// token ends meanwhile, a second refresh). The six-hourly timer's request
// (Scheduled) is answered by any check that passed within the interval. The
// pass itself still runs: it reads the store and applies setup-token changes.
func (ps *passScheduler) skipCheck(kind passrequest.Kind, asked time.Time) string {
	lc := ps.Engine.LoadRecord().LastCheck
	if lc == nil || lc.Result != check.OK.String() {
		return ""
	}
	now := ps.Clock.Now()
	age := now.Sub(lc.At)
	if kind != passrequest.Scheduled {
		if asked.IsZero() || lc.At.Before(asked) || age < 0 {
			return ""
		}
		return fmt.Sprintf("no second inference check: the agent's check passed %s ago, after this pass was asked for", age.Round(time.Millisecond))
	}
	if age < 0 || age >= ps.CheckInterval {
		return ""
	}
	next := ps.next
	msg := fmt.Sprintf("no second inference check: the agent's check passed %s ago", age.Round(time.Second))
	if next != nil {
		msg += fmt.Sprintf(", its next is in %s", next.Sub(now).Round(time.Second))
	}
	return msg
}

// batch takes every request waiting besides first: one pass answers them all.
// Its kind is Full when any is (a person's request is never answered by the
// timer's rule), its time the earliest.
func batch(first passRequest, requests <-chan passRequest) (all []passRequest, kind passrequest.Kind, asked time.Time) {
	all, kind, asked = []passRequest{first}, first.kind, first.at
	for {
		select {
		case r := <-requests:
			all = append(all, r)
			if r.kind != passrequest.Scheduled {
				kind = r.kind
			}
			if r.at.Before(asked) {
				asked = r.at
			}
		default:
			return all, kind, asked
		}
	}
}
