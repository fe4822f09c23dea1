package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

// follow goes through passTable from where the pass stands, taking each row's
// step, until a row ends the pass (its outcome) or would take the step until
// (nil: the caller goes on from there; actEnd: never).
func (p *pass) follow(ctx context.Context, until passAction) *Outcome {
	for range 2 * len(passTable) {
		row, ok := rowFor(p.at)
		if !ok {
			break
		}
		p.trail = append(p.trail, p.at)
		if row.act == actEnd {
			return &Outcome{Status: row.status, Code: row.code, Message: p.words(row.say)}
		}
		switch {
		case row.note == "":
		case row.status == "":
			p.e.Diag.Info(p.words(row.note))
		default:
			p.e.Log.Event(row.status, "%s", p.words(row.note))
		}
		if row.act == until {
			return nil
		}
		if o := p.take(ctx, row.passStep); o != nil {
			return o
		}
	}
	o := fail("sync pass: no rule for %s", p.at)
	return &o
}

// take does one step other than actEnd; the backups end the pass.
func (p *pass) take(ctx context.Context, s passStep) *Outcome {
	switch s.act {
	case actCheck:
		p.check(ctx)
	case actLookAgain:
		p.lookAgain()
	case actCheckNew:
		p.local, p.login = p.newer, p.newer.OAuth
		_ = p.lin.Observe(p.login.RefreshToken())
		p.check(ctx)
		p.at.file = fileSame // checked once: no second look
	case actRefresh:
		p.refresh(ctx)
	case actRestore:
		p.restore(ctx)
	case actRepair:
		p.repair(ctx)
	case actSettle:
		p.settle()
	case actBackUp:
		o := p.e.afterGoodCheck(ctx, p.rec, p.lin, p.login, p.vs, p.words(s.say))
		return &o
	case actBackUpAndFail:
		p.backup = p.e.afterGoodCheck(ctx, p.rec, p.lin, p.login, p.vs, "the new login").Message
		return &Outcome{Status: s.status, Code: s.code, Message: p.words(s.say)}
	}
	return nil
}

// words fills a message's placeholders from what the pass found.
func (p *pass) words(msg string) string {
	fills := map[string]func() string{
		"{reason}":  func() string { return p.result.Reason },
		"{first}":   func() string { return p.first },
		"{err}":     func() string { return fmt.Sprint(p.err) },
		"{why}":     func() string { return p.why },
		"{down}":    func() string { return fmt.Sprint(p.vs.down) },
		"{hint}":    LoginHint,
		"{store}":   func() string { return p.e.Store.Describe() },
		"{version}": func() string { return strconv.Itoa(p.vs.doc.Version) },
		"{problem}": func() string { return fmt.Sprint(p.local.Problem) },
		"{what}":    p.what,
		"{backup}":  func() string { return p.backup },
	}
	var pairs []string
	for k, fill := range fills {
		if strings.Contains(msg, k) {
			pairs = append(pairs, k, fill())
		}
	}
	return strings.NewReplacer(pairs...).Replace(msg)
}

func (p *pass) check(ctx context.Context) {
	p.result = p.e.runCheck(ctx, p.rec)
	switch p.result.Kind {
	case check.OK:
		p.at.check = checkOK
	case check.Auth, check.Dead:
		p.at.check = checkRefused
	default:
		p.at.check = checkTransient
	}
}

// lookAgain re-reads the file after a refusal: another login there means
// someone rotated it during the check (each refresh revokes the older access
// tokens), and the refusal says nothing about it. A login that broke or went
// away during the check (a racer's dead login, a logout: claude read that)
// is no verdict on the login checked either: the file as it is now decides,
// as at the start of a pass (restore a broken one, leave a logout).
func (p *pass) lookAgain() {
	p.at.file = fileSame
	cur, err := credentials.Read(p.e.Cfg.CredentialsFile)
	if err != nil {
		return
	}
	switch cur.State {
	case credentials.Missing, credentials.NoLogin:
		p.local, p.at = cur, passCase{fileGone, checkNone, refreshNone, restoreNone}
	case credentials.Clobbered:
		p.local, p.at = cur, passCase{fileBroken, checkNone, refreshNone, restoreNone}
	case credentials.Usable:
		if cur.OAuth.RefreshToken() != p.login.RefreshToken() {
			p.newer, p.at.file = cur, fileChanged
			return
		}
		p.local = cur
	}
}

// refresh is the first remedy for a refused login: a forced refresh by the
// single refresher. A new login is checked next.
func (p *pass) refresh(ctx context.Context) {
	sent := p.local.OAuth.RefreshToken()
	rr, err := p.e.Refresher.Refresh(ctx, p.lin, true, sent)
	p.err = err
	switch {
	case err == nil && rr.OAuth != nil && rr.OAuth.RefreshToken() != sent:
		p.at.refresh = refreshTheirs
		if rr.Refreshed {
			p.at.refresh = refreshOurs
		}
		p.first, p.login = p.result.Reason, rr.OAuth
		p.at.file, p.at.check = fileUsable, checkNone
	case err == nil:
		p.at.refresh = refreshNoNew
	case errors.Is(err, refresh.ErrNotWritten) && rr.OAuth != nil:
		p.at.refresh, p.login = refreshNotWritten, rr.OAuth
	case errors.Is(err, refresh.ErrLoginDead):
		p.at.refresh = refreshDead
	case refresh.TryLater(err):
		p.at.refresh = refreshLater
	default:
		p.e.Diag.Warn("forced refresh failed", "err", err)
		p.at.refresh = refreshFailed
	}
}
