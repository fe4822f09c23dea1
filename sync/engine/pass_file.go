package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
)

// loginDeadlineWarning: how long before refreshTokenExpiresAt passes warn.
const loginDeadlineWarning = 7 * 24 * time.Hour

// readFile is the pass's look at the credentials file (its mode set right
// first): where it starts in passTable.
func (p *pass) readFile(context.Context) *Outcome {
	local, err := credentials.Read(p.e.Cfg.CredentialsFile)
	if err != nil {
		p.err, p.at.file = err, fileUnreadable
		return nil
	}
	p.e.TightenLoose(local)
	p.local = local
	switch local.State {
	case credentials.Missing, credentials.NoLogin:
		p.at.file = fileGone
	case credentials.Clobbered:
		p.at.file = fileBroken
	default:
		p.takeLogin(local)
	}
	return nil
}

// settle takes the file as a repair left it: the agent's, or read again.
func (p *pass) settle() {
	l := p.newer
	if l == nil {
		var err error
		if l, err = credentials.Read(p.e.Cfg.CredentialsFile); err != nil {
			p.err, p.at.file = err, fileUnreadable
			return
		}
	}
	if l.State != credentials.Usable {
		p.local, p.at.file = l, fileStillBroken
		return
	}
	p.takeLogin(l)
}

// takeLogin makes the file's usable login the one the pass checks: into the
// lineage, with a WARN when the login itself ends soon.
func (p *pass) takeLogin(l *credentials.Local) {
	p.local, p.login = l, l.OAuth
	p.at.file, p.at.restore = fileUsable, restoreNone
	if err := p.lin.Observe(l.OAuth.RefreshToken()); err != nil {
		p.e.Diag.Warn("cannot record lineage", "err", err)
	}
	now := p.e.now()
	if d := l.OAuth.RefreshTokenExpiresAt(); !d.IsZero() && d.Sub(now) < loginDeadlineWarning {
		p.e.Log.Event(eventlog.WARN, "the login itself ends on %s (in %s): run `claude auth login` before then, then `claude-auth-sync sync`",
			d.Format(time.RFC3339), d.Sub(now).Round(time.Hour))
	}
}

// what says how the file holds no login.
func (p *pass) what() string {
	if p.local.State == credentials.NoLogin {
		return p.local.Path + " holds no claudeAiOauth login"
	}
	return "no credentials file at " + p.local.Path
}

// TightenLoose sets a credentials file other users could read to 0600, with a
// WARN that names it (and says what to do).
func (e *Engine) TightenLoose(l *credentials.Local) {
	old, err := credentials.TightenMode(l)
	msg := ""
	switch {
	case err != nil:
		msg = fmt.Sprintf("credentials file %s is open to other users (mode %04o) and could not be set to 0600: %v", l.Target, l.Mode.Perm(), err)
	case old != 0:
		msg = fmt.Sprintf("credentials file %s was open to other users (mode %04o); set it to 0600. Whoever read it meanwhile holds the login: if that may have happened, log in again (`claude auth login`)", l.Target, old)
	}
	if msg != "" {
		e.Log.Event(eventlog.WARN, "%s", msg)
	}
}
