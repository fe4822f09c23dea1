package agent

import (
	"context"
	"math/rand/v2"
	"os"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// passScheduler runs the full pass (a pass runs claude and may take a
// minute) off the other components: first when firstCheck says, then every
// CheckInterval (so a spread start keeps its offset), and at once on reload.
type passScheduler struct {
	e    *engine.Engine
	clk  clock.Clock
	opt  Options
	live *liveState
	bw   *backupWriter
	rn   *renewer
}

func newPassScheduler(e *engine.Engine, opt Options, live *liveState, bw *backupWriter, rn *renewer) *passScheduler {
	return &passScheduler{e: e, clk: e.Clock, opt: opt, live: live, bw: bw, rn: rn}
}

// Run schedules passes until ctx ends; reload and requests (the unit
// claude-auth-sync@<user>.service) ask for one now.
func (ps *passScheduler) Run(ctx context.Context, reload <-chan os.Signal, requests <-chan passRequest) error {
	first, why := ps.firstCheck(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if first > 0 {
		ps.e.Diag.Info("first check scheduled", "in", first.Round(time.Second).String(), "why", why)
	}
	ps.setNextCheck(first, why)
	t := ps.clk.NewTimer(first)
	defer t.Stop()
	for {
		var reqs []passRequest
		skip := ""
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-reload:
			ps.e.Diag.Info("reload: running a full pass")
		case r := <-requests:
			var kind passrequest.Kind
			var asked time.Time
			reqs, kind, asked = batch(r, requests)
			ps.e.Diag.Info("a pass was asked for", "kind", string(kind), "requests", len(reqs))
			skip = ps.skipCheck(kind, asked)
		}
		if skip == "" {
			ps.setNextCheck(-1, "running now")
		}
		o := ps.e.Pass(ctx, engine.PassOptions{AwaitRestore: ps.bw.awaitRestore, SkipCheck: skip})
		for _, r := range reqs {
			r.reply <- o
		}
		if ctx.Err() != nil {
			return nil
		}
		at := ps.clk.Now()
		ps.live.update(func(s *telemetry.AgentState) {
			s.LastPass = &telemetry.PassRecord{At: at, Status: o.Status, Message: check.Mask(o.Message)}
		})
		ps.bw.kick.poke() // the pass may have written the file or the store
		if skip != "" {
			continue // the schedule stands: this pass did not check
		}
		ps.bw.metrics.checked(o.Status, check.Mask(o.Message))
		t.Reset(ps.opt.CheckInterval)
		ps.setNextCheck(ps.opt.CheckInterval, "every "+ps.opt.CheckInterval.String())
	}
}

func (ps *passScheduler) setNextCheck(in time.Duration, why string) {
	ps.live.update(func(s *telemetry.AgentState) {
		if in < 0 {
			s.NextCheck, s.NextCheckWhy = nil, why
			return
		}
		at := ps.clk.Now().Add(in)
		s.NextCheck, s.NextCheckWhy = &at, why
	})
	ps.live.save()
}

// firstCheck decides when the agent's first pass runs. Many agents start
// together (a reboot, an upgrade, provision enabling everyone) and each check
// runs claude (~0.5 s, ~200 MB): a start does not check again a login whose
// last check passed within CheckInterval when nothing changed since (the
// file's login, the store's login and setup token), and a start that must
// check waits a random delay within CheckSpread. A login that needs a look
// (not usable in the file, or its last check failed) is checked at once.
func (ps *passScheduler) firstCheck(ctx context.Context) (time.Duration, string) {
	local, err := credentials.Read(ps.e.Cfg.CredentialsFile)
	if err != nil || local.State != credentials.Usable {
		return 0, "the credentials file needs a look"
	}
	lc := ps.e.Telemetry.LoadRecord().LastCheck
	switch {
	case lc == nil || lc.Subject == nil:
		return ps.spread("no check on record")
	case lc.Result != check.OK.String():
		return 0, "the last check did not pass"
	}
	age := ps.clk.Now().Sub(lc.At)
	if age < 0 || age >= ps.opt.CheckInterval {
		return ps.spread("the last check is older than " + ps.opt.CheckInterval.String())
	}
	// The store's side: wait (bounded) for the token renewer's first try.
	ready := false
	t := ps.clk.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case ready = <-ps.rn.first:
	case <-ctx.Done():
		return 0, "stopping"
	case <-t.C():
	}
	sub := telemetry.SubjectOf(local, nil)
	if ready {
		sub = ps.e.Telemetry.CurrentSubject(ctx, true)
	}
	switch {
	case sub.Login != lc.Subject.Login:
		return ps.spread("the login changed since the last check")
	case !sub.DocRead:
		return ps.spread("the backup cannot be read to compare")
	case sub.DocLogin != lc.Subject.DocLogin || sub.SetupToken != lc.Subject.SetupToken:
		return ps.spread("the backup changed since the last check")
	}
	// No relative time in it: `status` prints the next check's own time,
	// and the last check's, each as of when it prints.
	ps.bw.metrics.checked(eventlog.OK, "") // the fleet's verdict stands on it too
	return ps.opt.CheckInterval - age, "the last check passed and nothing changed since"
}

// spread is a random delay within CheckSpread, and why.
func (ps *passScheduler) spread(why string) (time.Duration, string) {
	if ps.opt.CheckSpread <= 0 {
		return 0, why
	}
	return rand.N(ps.opt.CheckSpread), why + "; spread over " + ps.opt.CheckSpread.String()
}
