package agent

import (
	"math/rand/v2"
	"time"
)

// backoffPolicy is the agent's one retry policy: capped exponential backoff
// with jitter, reset on success. Each loop that retries holds its own
// sequence of it (a Vault outage does not slow the refresher's next try).
type backoffPolicy struct{ min, max time.Duration }

func (p backoffPolicy) sequence() *backoff { return &backoff{p: p} }

type backoff struct {
	p backoffPolicy
	n int
}

// next is the wait before the next try.
func (b *backoff) next() time.Duration {
	d := b.p.min << min(b.n, 20)
	if d > b.p.max || d <= 0 {
		d = b.p.max
	}
	b.n++
	// Jitter in [d/2, d]: spread retries without ever waiting less than half.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// patient is the wait after a failure that waiting does not mend (a bad
// setting, a refused token, Claude's locks that cannot be taken): the cap,
// unless an event (a new token file) comes first.
func (b *backoff) patient() time.Duration { return max(b.next(), b.p.max) }

func (b *backoff) reset() { b.n = 0 }

// sayOnce keeps a message from being logged again while it is unchanged: a
// condition is reported when it starts or changes, not on every retry.
type sayOnce struct{ last string }

// first reports whether msg differs from the last one said (and remembers it).
func (s *sayOnce) first(msg string) bool {
	if s.last == msg {
		return false
	}
	s.last = msg
	return true
}

// clear forgets the last message: the condition ended.
func (s *sayOnce) clear() (was string) { was, s.last = s.last, ""; return was }
