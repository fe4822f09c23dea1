package refresh

import (
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// lifetimes remembers when this process first saw each access token, to know a
// token's lifetime (for the half-lifetime cap on the lead).
type lifetimes struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// born is when the token was issued, if this process saw that (it refreshed it,
// or the agent saw it appear in the file).
func (l *lifetimes) born(tok credentials.Secret) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.seen[tok.Fingerprint()]
	return t, ok
}

func (l *lifetimes) note(tok credentials.Secret, issued time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]time.Time{}
	}
	if len(l.seen) > 64 {
		clear(l.seen)
	}
	l.seen[tok.Fingerprint()] = issued
}

// NoteNewLogin records that a login was just issued (the agent saw it appear).
func (r *Refresher[L]) NoteNewLogin(o L) {
	r.tokens.note(o.AccessToken(), r.now())
}

// Due is when the refresher should rotate o: its expiry minus the lead.
// The default lead (15 min) is capped at half the token's lifetime, so a short
// token is not refreshed the moment it arrives; a lead set explicitly
// (CLAUDE_AUTH_REFRESH_LEAD) is honoured as long as it is shorter than the
// lifetime. A token whose birth this process did not see counts as long-lived
// (for an 8 h token the lead is 15 min either way).
func (r *Refresher[L]) Due(o L) time.Time {
	exp := o.ExpiresAt()
	lead := r.lead
	if born, ok := r.tokens.born(o.AccessToken()); ok && exp.After(born) {
		life := exp.Sub(born)
		if r.leadExplicit {
			lead = min(lead, life-time.Second)
		} else {
			lead = min(lead, life/2)
		}
	}
	return exp.Add(-lead)
}
