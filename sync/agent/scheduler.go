package agent

import (
	"context"
	"math/rand/v2"
	"os"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
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
	passSchedulerConfig

	// Owned by Run.
	next *time.Time // the next check, as agent.json shows it (nil: running, or none)
}

// passSchedulerConfig is what the pass scheduler uses.
type passSchedulerConfig struct {
	base
	Engine          passEngine
	CredentialsFile string
	CheckInterval   time.Duration
	CheckSpread     time.Duration
	Settle          time.Duration                 // the writer's settle time: how long a pass waits for a restore
	State           stateFunc                     // the live state: last pass, next check
	Save            func()                        // has agent.json written now
	Checked         func(eventlog.Status, string) // the health: a full check's result
}

// passEngine is what the scheduler asks of the engine.
type passEngine interface {
	Pass(ctx context.Context, opt engine.PassOptions) engine.Outcome
	LoadRecord() *telemetry.Record
	CurrentSubject(ctx context.Context, readStore bool) telemetry.CheckSubject
}

func newPassScheduler(c passSchedulerConfig) *passScheduler {
	return &passScheduler{passSchedulerConfig: c}
}

// Run schedules passes until ctx ends; reload and requests (the unit
// claude-auth-sync@<user>.service) ask for one now. The first check waits
// (bounded) for the renewer's firstTokenVerdict; a pass meeting a clobbered
// file waits for the writer's restore through restoreWaits; after each pass
// the writer looks at the file again (fileChanged). It never fails: a pass's
// failure is its outcome.
func (ps *passScheduler) Run(ctx context.Context, reload <-chan os.Signal, requests <-chan passRequest, firstTokenVerdict <-chan bool,
	restoreWaits chan<- restoreWaiter, fileChanged signal) error {
	first, why := ps.firstCheck(ctx, firstTokenVerdict)
	if ctx.Err() != nil {
		return nil
	}
	if first > 0 {
		ps.Diag.Info("first check scheduled", "in", first.Round(time.Second).String(), "why", why)
	}
	ps.setNextCheck(first, why)
	t := ps.Clock.NewTimer(first)
	defer t.Stop()
	restore := func(ctx context.Context) *credentials.Local {
		return awaitRestore(ctx, ps.Clock, restoreWaits, ps.Settle)
	}
	for {
		var reqs []passRequest
		skip := ""
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-reload:
			ps.Diag.Info("reload: running a full pass")
		case r := <-requests:
			var kind passrequest.Kind
			var asked time.Time
			reqs, kind, asked = batch(r, requests)
			ps.Diag.Info("a pass was asked for", "kind", string(kind), "requests", len(reqs))
			skip = ps.skipCheck(kind, asked)
		}
		if skip == "" {
			ps.setNextCheck(-1, "running now")
		}
		o := ps.Engine.Pass(ctx, engine.PassOptions{AwaitRestore: restore, SkipCheck: skip})
		for _, r := range reqs {
			r.reply <- o
		}
		if ctx.Err() != nil {
			return nil
		}
		at := ps.Clock.Now()
		ps.State(func(s *telemetry.AgentState) {
			s.LastPass = &telemetry.PassRecord{At: at, Status: o.Status, Message: check.Mask(o.Message)}
		})
		fileChanged.poke() // the pass may have written the file or the store
		if skip != "" {
			continue // the schedule stands: this pass did not check
		}
		ps.Checked(o.Status, check.Mask(o.Message))
		t.Reset(ps.CheckInterval)
		ps.setNextCheck(ps.CheckInterval, "every "+ps.CheckInterval.String())
	}
}

func (ps *passScheduler) setNextCheck(in time.Duration, why string) {
	var next *time.Time
	if in >= 0 {
		at := ps.Clock.Now().Add(in)
		next = &at
	}
	ps.next = next
	ps.State(func(s *telemetry.AgentState) { s.NextCheck, s.NextCheckWhy = next, why })
	ps.Save()
}

// firstCheck decides when the agent's first pass runs. Many agents start
// together (a reboot, an upgrade, provision enabling everyone) and each check
// runs claude (~0.5 s, ~200 MB): a start does not check again a login whose
// last check passed within CheckInterval when nothing changed since (the
// file's login, the store's login and setup token), and a start that must
// check waits a random delay within CheckSpread. A login that needs a look
// (not usable in the file, or its last check failed) is checked at once.
func (ps *passScheduler) firstCheck(ctx context.Context, firstTokenVerdict <-chan bool) (time.Duration, string) {
	local, err := credentials.Read(ps.CredentialsFile)
	if err != nil || local.State != credentials.Usable {
		return 0, "the credentials file needs a look"
	}
	lc := ps.Engine.LoadRecord().LastCheck
	switch {
	case lc == nil || lc.Subject == nil:
		return ps.spread("no check on record")
	case lc.Result != check.OK.String():
		return 0, "the last check did not pass"
	}
	age := ps.Clock.Now().Sub(lc.At)
	if age < 0 || age >= ps.CheckInterval {
		return ps.spread("the last check is older than " + ps.CheckInterval.String())
	}
	// The store's side: wait (bounded) for the token renewer's first try.
	ready := false
	t := ps.Clock.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case ready = <-firstTokenVerdict:
	case <-ctx.Done():
		return 0, "stopping"
	case <-t.C():
	}
	sub := telemetry.SubjectOf(local, nil)
	if ready {
		sub = ps.Engine.CurrentSubject(ctx, true)
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
	ps.Checked(eventlog.OK, "") // the fleet's verdict stands on it too
	return ps.CheckInterval - age, "the last check passed and nothing changed since"
}

// spread is a random delay within CheckSpread, and why.
func (ps *passScheduler) spread(why string) (time.Duration, string) {
	if ps.CheckSpread <= 0 {
		return 0, why
	}
	return rand.N(ps.CheckSpread), why + "; spread over " + ps.CheckSpread.String()
}
