package e2e_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authsync "github.com/claude-auth-sync/claude-auth-sync/sync"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

// A clock stepped back by hours (injected: the machine's clock is left alone)
// does not stop backups of new rotations: their expiresAt is now earlier than
// the backed-up one's, but lineage, not the clock, says they are newer.
func TestAgentClockSteppedBack(t *testing.T) {
	w := newWorld(t)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	w.fake.Now = now // set before any request reaches the fake

	env := map[string]string{}
	for _, kv := range w.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	cfg, err := config.Load(func(k string) string { return env[k] }, config.Flags{})
	if err != nil {
		t.Fatal(err)
	}
	// The check's child (the stand-in claude) reads these from the process
	// environment: it must check this user's login, not the test runner's.
	t.Setenv("ANTHROPIC_BASE_URL", w.api.URL)
	t.Setenv("HOME", w.home)
	eng, err := authsync.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	eng.Now = now

	l := w.login()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		done <- eng.RunAgent(ctx, authsync.AgentOptions{CheckInterval: time.Hour, RetryMax: time.Second, Started: started})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}()
	<-started
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))

	prevExpiry := l.ExpiresAt
	for i := 1; i <= 3; i++ {
		offset.Add(int64(-5 * time.Hour))
		l = w.rotate(l)
		if !l.ExpiresAt.Before(prevExpiry) {
			t.Fatalf("rotation %d: the stepped clock did not make expiresAt earlier", i)
		}
		prevExpiry = l.ExpiresAt
		eventually(t, 30*time.Second, "rotation backed up despite the clock", w.vaultHolds(l))
	}
}
