package clock

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func fired(tm Timer) bool {
	select {
	case <-tm.C():
		return true
	default:
		return false
	}
}

func TestFakeTimersFireAsTheClockPassesThem(t *testing.T) {
	f := NewFake(t0)
	a, b := f.NewTimer(time.Minute), f.NewTimer(time.Hour)
	if f.Armed() != 2 {
		t.Fatalf("Armed = %d; want 2", f.Armed())
	}
	if next, ok := f.Next(); !ok || !next.Equal(t0.Add(time.Minute)) {
		t.Errorf("Next = %v, %v; want %v", next, ok, t0.Add(time.Minute))
	}
	f.Advance(59 * time.Second)
	if fired(a) || fired(b) {
		t.Fatal("a timer fired before its deadline")
	}
	f.Advance(time.Second)
	if !fired(a) || fired(b) {
		t.Fatal("want only the one-minute timer fired at one minute")
	}
	if f.Armed() != 1 {
		t.Errorf("Armed = %d after one fired; want 1", f.Armed())
	}
	f.Set(t0.Add(2 * time.Hour))
	if !fired(b) {
		t.Error("the hour timer did not fire when the clock was set past it")
	}
}

func TestFakeStopAndReset(t *testing.T) {
	f := NewFake(t0)
	tm := f.NewTimer(time.Minute)
	if !tm.Stop() {
		t.Error("Stop of a running timer = false")
	}
	f.Advance(time.Hour)
	if fired(tm) {
		t.Error("a stopped timer fired")
	}
	tm.Reset(time.Second)
	f.Advance(time.Second)
	// A fired value not received is dropped by Reset, as time.Timer does.
	tm.Reset(time.Minute)
	if fired(tm) {
		t.Error("a stale value was delivered after Reset")
	}
	if st := Stopped(f); st.Stop() || fired(st) {
		t.Error("Stopped returned a running timer")
	}
	if z := f.NewTimer(0); !fired(z) {
		t.Error("a zero timer did not fire at once")
	}
}

func TestFakeWaitArmed(t *testing.T) {
	f := NewFake(t0)
	done := make(chan struct{})
	got := make(chan bool, 1)
	go func() { got <- f.WaitArmed(2, done) }()
	f.NewTimer(time.Minute)
	f.NewTimer(time.Minute)
	if !<-got {
		t.Error("WaitArmed(2) = false with two timers armed")
	}
	go func() { got <- f.WaitArmed(3, done) }()
	close(done)
	if <-got {
		t.Error("WaitArmed(3) = true with two timers and done closed")
	}
}

func TestWithNowShiftsNowNotTimers(t *testing.T) {
	c := WithNow(func() time.Time { return t0 })
	if !c.Now().Equal(t0) {
		t.Errorf("Now = %v; want %v", c.Now(), t0)
	}
	tm := c.NewTimer(time.Millisecond)
	<-tm.C() // a real timer: it fires on its own
	if Since(c, t0.Add(-time.Hour)) != time.Hour {
		t.Errorf("Since = %v; want 1h", Since(c, t0.Add(-time.Hour)))
	}
}
