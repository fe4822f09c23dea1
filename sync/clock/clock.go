// Package clock is the one source of time for the engine and the agent: the
// wall clock in production, a clock a test moves by hand (Fake), or the wall
// clock's timers under a shifted "now" (WithNow) for tests that compress a
// login's lifetime. Every "what time is it" and every timer goes through one
// Clock, so a test sets time in one place.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is time.Timer behind an interface: C delivers once when it fires.
type Timer interface {
	C() <-chan time.Time
	// Stop and Reset behave as time.Timer's (Go 1.23+: no stale value is
	// delivered after either).
	Stop() bool
	Reset(d time.Duration) bool
}

// Real is the wall clock.
var Real Clock = realClock{}

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

// WithNow is the wall clock's timers with now as the time: a test that moves
// "now" (a stepped clock, compressed lifetimes) without faking the waits.
func WithNow(now func() time.Time) Clock { return shifted{now} }

type shifted struct{ now func() time.Time }

func (s shifted) Now() time.Time                 { return s.now() }
func (s shifted) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// Since is c's time elapsed since t.
func Since(c Clock, t time.Time) time.Duration { return c.Now().Sub(t) }

// Stopped returns a timer that is not running: Reset starts it.
func Stopped(c Clock) Timer {
	t := c.NewTimer(time.Hour)
	t.Stop()
	return t
}

// Fake is a clock that moves only when told (Advance, Set). Its timers fire,
// in order of their deadline, as it passes them. Waiting reports how many
// timers are armed, so a test can wait until a component has gone to sleep
// before moving time on, instead of sleeping.
type Fake struct {
	mu     sync.Mutex
	cond   *sync.Cond
	now    time.Time
	timers map[*fakeTimer]struct{}
}

// NewFake returns a Fake reading t.
func NewFake(t time.Time) *Fake {
	f := &Fake{now: t, timers: map[*fakeTimer]struct{}{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, c: make(chan time.Time, 1)}
	t.arm(d)
	return t
}

// Advance moves the clock on by d, firing every timer it passes.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (forward or back), firing every timer whose
// deadline is not after t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
	var due []*fakeTimer
	for tm := range f.timers {
		if !tm.at.After(t) {
			due = append(due, tm)
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, tm := range due {
		delete(f.timers, tm)
		select {
		case tm.c <- t:
		default:
		}
	}
	f.cond.Broadcast()
}

// Armed is how many timers are running.
func (f *Fake) Armed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitArmed blocks until at least n timers are running (components that
// went to sleep on the clock) or done is closed; it reports whether n were.
func (f *Fake) WaitArmed(n int, done <-chan struct{}) bool {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-done:
		case <-stop:
			return
		}
		f.mu.Lock()
		f.cond.Broadcast()
		f.mu.Unlock()
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.timers) < n {
		select {
		case <-done:
			return false
		default:
		}
		f.cond.Wait()
	}
	return true
}

// Next is the earliest armed deadline (false when none is armed).
func (f *Fake) Next() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var at time.Time
	for tm := range f.timers {
		if at.IsZero() || tm.at.Before(at) {
			at = tm.at
		}
	}
	return at, !at.IsZero()
}

type fakeTimer struct {
	f  *Fake
	c  chan time.Time
	at time.Time
}

// arm is called with f.mu held.
func (t *fakeTimer) arm(d time.Duration) {
	t.at = t.f.now.Add(d)
	if d <= 0 {
		select {
		case t.c <- t.f.now:
		default:
		}
		return
	}
	t.f.timers[t] = struct{}{}
	t.f.cond.Broadcast()
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	_, armed := t.f.timers[t]
	delete(t.f.timers, t)
	t.drain()
	return armed
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.f.mu.Lock()
	defer t.f.mu.Unlock()
	_, armed := t.f.timers[t]
	delete(t.f.timers, t)
	t.drain()
	t.arm(d)
	return armed
}

// drain drops a fired value not yet received, as time.Timer does since Go 1.23.
func (t *fakeTimer) drain() {
	select {
	case <-t.c:
	default:
	}
}
