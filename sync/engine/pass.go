package engine

import (
	"context"
	"errors"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// PassOptions change how a pass meets a clobbered file.
type PassOptions struct {
	// AwaitRestore, in the agent, leaves a clobbered file to the agent's
	// backup worker and waits for it: the worker also knows a newer login
	// not yet in the backup, which a pass's read of the backup does not (two
	// restorers raced, and the pass could put back an older, spent login).
	// It returns the file once usable, nil if it did not become usable.
	AwaitRestore func(ctx context.Context) *credentials.Local
	// SkipCheck, when set, says why this pass runs no inference check (the
	// six-hourly timer's pass while the agent's own check is fresh): the
	// pass still reads the store, applies setup-token changes, repairs a
	// broken file and backs a usable login up; its outcome is the backup's
	// (OK, or WARN 75 while the store is down), with this message.
	SkipCheck string
}

// Pass is one `sync`: lock, prepare Vault, setup-token mode, local state, check,
// then backup or the failure rules. opt is the agent's (zero for `sync`).
func (e *Engine) Pass(ctx context.Context, opt PassOptions) Outcome {
	o, _ := e.runPass(ctx, opt)
	return o
}

// runPass is Pass, also returning the cases of passTable the pass went
// through.
func (e *Engine) runPass(ctx context.Context, opt PassOptions) (Outcome, []passCase) {
	lk, err := lock.Try(e.Cfg.StateDir, lock.Sync)
	if errors.Is(err, lock.ErrHeld) {
		return e.finish(nil, Outcome{Status: eventlog.SKIP, Code: ExitOK, Message: "another sync pass is running: " + err.Error()}), nil
	}
	if err != nil {
		return e.finish(nil, fail("sync lock: %v", err)), nil
	}
	defer lk.Unlock()
	p := e.newPass(opt)
	return e.finish(p.rec, p.run(ctx)), p.trail
}

// pass is one pass under the sync lock: what it has found so far.
type pass struct {
	e   *Engine
	opt PassOptions
	rec *telemetry.Record
	lin *lineage.Lineage
	vs  vaultState

	at    passCase   // where the pass stands: the case of its next row
	trail []passCase // every case it stood in, in order

	local  *credentials.Local // the file as the pass last took it
	login  *credentials.OAuth // the login at hand: to check, and to back up once it works
	newer  *credentials.Local // the file with another login (fileChanged), or as the agent's repair left it
	result check.Result       // the latest check
	first  string             // the reason of the check before it
	err    error              // the latest read, refresh or restore error
	why    string             // why the backup cannot help
	backup string             // what backing up a login the file could not take said
}

func (e *Engine) newPass(opt PassOptions) *pass {
	return &pass{e: e, opt: opt, rec: telemetry.NewRecord(),
		at: passCase{check: checkNone, refresh: refreshNone, restore: restoreNone}}
}

// run is the pass's steps in order; the first to end the pass says how.
func (p *pass) run(ctx context.Context) Outcome {
	for _, step := range []func(context.Context) *Outcome{p.prepareStore, p.setupTokenMode, p.readFile} {
		if o := step(ctx); o != nil {
			return *o
		}
	}
	if p.opt.SkipCheck != "" && p.at.file == fileUsable {
		// No check, but the backup is the pass's as always: a store that
		// answers 500 or cannot be reached ends it WARN pending (75), not OK.
		return p.e.afterGoodCheck(ctx, p.rec, p.lin, p.login, p.vs, p.opt.SkipCheck)
	}
	return *p.follow(ctx, actEnd)
}

// prepareStore: the lineage, the Vault token routine and one read of the
// document. A store that cannot be reached ends nothing: the check runs and
// the backup waits.
func (p *pass) prepareStore(ctx context.Context) *Outcome {
	p.e.Diag.Debug("store", "store", p.e.Store.Describe())
	lin, vs, hard := p.e.openState(ctx)
	if hard != nil {
		return hard
	}
	p.lin, p.vs, p.rec.StoreDown = lin, vs, vs.down != nil
	return nil
}
