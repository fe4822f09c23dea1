package engine

import (
	"context"
	"errors"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// vaultState is what preparing the store found.
type vaultState struct {
	doc       *store.Doc // nil when the store could not be read
	down      error      // non-nil when the store is unreachable
	tokenInfo *store.TokenInfo
}

// prepare runs step 2 of a pass: the Vault token routine (v; nil with the
// local store) and one read of the document from st.
// A hard failure (token file, foreign token, 403) is returned as an Outcome.
func prepare(ctx context.Context, v *store.Vault, st store.Store) (vaultState, *Outcome) {
	var vs vaultState
	if v != nil {
		info, err := v.Prepare(ctx)
		switch {
		case err == nil:
			vs.tokenInfo = &info
		case errors.Is(err, store.ErrUnreachable):
			vs.down = err
			return vs, nil
		case errors.Is(err, store.ErrMisconfigured):
			o := Outcome{Status: eventlog.FAIL, Code: ExitConfig, Message: err.Error()}
			return vs, &o
		case ctx.Err() != nil:
			return vs, stopped()
		default:
			o := fail("vault token: %v", err)
			return vs, &o
		}
	}
	doc, err := st.Read(ctx)
	switch {
	case err == nil:
		vs.doc = doc
	case errors.Is(err, store.ErrUnreachable):
		vs.down = err
	case ctx.Err() != nil:
		return vs, stopped()
	default:
		o := fail("read backup: %v", err)
		return vs, &o
	}
	return vs, nil
}

// stopped is the outcome of a pass whose process is stopping (SIGTERM, the
// unit's stop) while Vault was asked: nothing is known about the token or the
// store, so no FAIL; the next start or pass asks again.
func stopped() *Outcome {
	return &Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: "stopped before vault answered; the next pass asks again"}
}

// openState loads this user's lineage and prepares the store: how every
// command that may write a login starts. A hard failure is the outcome.
func (e *Engine) openState(ctx context.Context) (*lineage.Lineage, vaultState, *Outcome) {
	lin, err := lineage.Load(e.lineagePath())
	if err != nil {
		o := fail("lineage: %v", err)
		return nil, vaultState{}, &o
	}
	vs, hard := prepare(ctx, e.Vault, e.Store)
	e.Telemetry.NoteDoc(vs.doc)
	return lin, vs, hard
}
