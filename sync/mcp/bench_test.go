package mcp

import (
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
)

// BenchmarkRefreshLockHold: how long a refresh holds Claude's per-server MCP
// lock (from the mkdir to the rmdir, as inotify sees them): the re-read, the
// token request to a local authorization server (metadata cached after the
// first) and the write. Reported as p50 and p99 over b.N refreshes.
//
//	go test -run '^$' -bench RefreshLockHold -benchtime 300x ./sync/mcp/
func BenchmarkRefreshLockHold(b *testing.B) {
	as := newAuthServer(b)
	h := newHome(b)
	as.issue("rt-0")
	fc := clock.NewFake(time.Now())
	h.write(b, map[string]any{"mcpOAuth": map[string]any{keyA: entry("alpha", as.URL, "rt-0", fc.Now().Add(time.Minute))}})
	w, err := fsnotify.NewWatcher()
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(h.dir); err != nil {
		b.Fatal(err)
	}
	lockName := filepath.Base(lock.MCPRefreshPath(h.dir, keyA))
	var holds []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		var since time.Time
		for ev := range w.Events {
			if filepath.Base(ev.Name) != lockName {
				continue
			}
			switch {
			case ev.Has(fsnotify.Create):
				since = time.Now()
			case ev.Has(fsnotify.Remove) && !since.IsZero():
				holds = append(holds, time.Since(since))
				since = time.Time{}
			}
		}
	}()
	m := New(Config{CredentialsFile: h.file, ClaudeConfigDir: h.dir, StateDir: h.state, Lead: 15 * time.Minute, Clock: fc,
		Diag: slog.New(slog.DiscardHandler), Publish: true})
	b.ResetTimer()
	for range b.N {
		before := as.count()
		m.Pass(context.Background())
		fc.Advance(46 * time.Minute) // the next token (1 h) is due
		if as.count() != before+1 {
			b.Fatalf("pass %d: no refresh", before)
		}
	}
	b.StopTimer()
	time.Sleep(100 * time.Millisecond)
	w.Close()
	<-done
	if len(holds) == 0 {
		b.Fatal("no lock hold seen")
	}
	sort.Slice(holds, func(i, j int) bool { return holds[i] < holds[j] })
	q := func(p float64) time.Duration { return holds[min(len(holds)-1, int(p*float64(len(holds))))] }
	b.ReportMetric(float64(q(0.50).Microseconds())/1000, "hold-p50-ms")
	b.ReportMetric(float64(q(0.99).Microseconds())/1000, "hold-p99-ms")
}
