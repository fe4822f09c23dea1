package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/sdnotify"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
	"github.com/claude-auth-sync/claude-auth-sync/watcher"
)

// liveState owns the agent's live state: agent.json (what `status` shows),
// systemd's STATUS= line and the watchdog. Components change it through
// update and have it written with save (safe from any goroutine, never
// waiting on a write); nothing else touches it.
type liveState struct {
	liveConfig
	status signal // the STATUS= line may have changed
	dirty  signal // agent.json (or the backup record) needs writing

	mu        sync.Mutex
	s         telemetry.AgentState
	watchErrs map[string]bool
	backupRec *telemetry.BackupRecord // for state.json, not yet written

	saveMu sync.Mutex // one agent.json write at a time, in order
}

// liveConfig is what the live state uses.
type liveConfig struct {
	base
	Notifier        *sdnotify.Notifier // systemd; nil = none
	Rescan          time.Duration      // the watch's fallback, named when it degrades
	Version         string
	CredentialsFile string // named in STATUS=
	StateDir        string // agent.json
	// MergeRecord writes into state.json (telemetry.Reporter.MergeRecord): the last backup.
	MergeRecord func(*telemetry.Record) error
}

func newLiveState(c liveConfig) *liveState {
	return &liveState{liveConfig: c, status: newSignal(), dirty: newSignal(), watchErrs: map[string]bool{},
		s: telemetry.AgentState{PID: os.Getpid(), Version: c.Version, Started: c.Clock.Now(), Watch: "inotify"}}
}

// update changes the state under its lock, and has agent.json and the
// STATUS= line brought up to date soon, by Run (off the caller's path).
func (l *liveState) update(f func(*telemetry.AgentState)) {
	l.mu.Lock()
	f(&l.s)
	l.mu.Unlock()
	l.status.poke()
	l.dirty.poke()
}

// event notes a status line as the journal got it (the agent's
// EventLog.OnEvent): agent.json and STATUS= show it at once.
func (l *liveState) event(st eventlog.Status, msg string) {
	at := l.Clock.Now()
	l.update(func(s *telemetry.AgentState) { s.LastStatus, s.LastStatusAt, s.LastMessage = string(st), &at, msg })
}

// fileChanged notes the file watch's last event.
func (l *liveState) fileChanged(ch watcher.Change) {
	at := l.Clock.Now()
	l.update(func(s *telemetry.AgentState) { s.LastEvent, s.LastEventReason = &at, string(ch.Reason) })
}

// snapshot is a copy of the state.
func (l *liveState) snapshot() telemetry.AgentState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.s
}

// changed has agent.json written soon, by Run.
func (l *liveState) changed() { l.dirty.poke() }

// recordBackup has a backup noted in state.json soon, by Run.
func (l *liveState) recordBackup(r *telemetry.BackupRecord) {
	l.mu.Lock()
	l.backupRec = r
	l.mu.Unlock()
	l.dirty.poke()
}

// save writes agent.json (0600) from the current state, and the last
// backup's record into state.json.
func (l *liveState) save() {
	l.saveMu.Lock()
	defer l.saveMu.Unlock()
	l.mu.Lock()
	s, rec := l.s, l.backupRec
	l.backupRec = nil
	l.mu.Unlock()
	if rec != nil {
		if err := l.MergeRecord(&telemetry.Record{LastBackup: rec}); err != nil {
			l.Diag.Warn("cannot save state", "err", err)
		}
	}
	data, err := json.MarshalIndent(s, "", "  ")
	if err == nil {
		_, _ = atomicfile.Write(telemetry.AgentStatePath(l.StateDir), append(data, '\n'), 0o600)
	}
}

// ready tells systemd the agent is up.
func (l *liveState) ready() {
	l.save()
	_ = l.Notifier.Send("READY=1\nSTATUS=" + l.statusLine())
}

// Run keeps the watchdog fed, the STATUS= line current and agent.json
// written until ctx ends. It never fails.
func (l *liveState) Run(ctx context.Context) error {
	wd := sdnotify.WatchdogInterval()
	if wd <= 0 {
		wd = time.Hour
	}
	t := l.Clock.NewTimer(wd)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = l.Notifier.Send("STOPPING=1\nSTATUS=stopping")
			return nil
		case <-l.status:
			_ = l.Notifier.Send("STATUS=" + l.statusLine())
		case <-l.dirty:
			l.save()
		case <-t.C():
			_ = l.Notifier.Send("WATCHDOG=1")
			t.Reset(wd)
		}
	}
}

// statusLine is systemd's STATUS=: the last line the journal got, then
// the last backup and pass, a pending backup and what is watched. Times are
// clock times (systemctl shows the line as it was sent, long after).
func (l *liveState) statusLine() string {
	s := l.snapshot()
	clk := func(t time.Time) string { return t.Local().Format(time.TimeOnly) }
	var parts []string
	if s.LastStatusAt != nil {
		parts = append(parts, fmt.Sprintf("%s at %s: %s", s.LastStatus, clk(*s.LastStatusAt), s.LastMessage))
	}
	if s.LastBackup != nil {
		parts = append(parts, fmt.Sprintf("last backup v%d at %s", s.LastBackupVer, clk(*s.LastBackup)))
	}
	if s.LastPass != nil {
		parts = append(parts, fmt.Sprintf("last pass %s at %s", s.LastPass.Status, clk(s.LastPass.At)))
	}
	if s.Pending {
		pending := "backup pending"
		if s.PendingSince != nil {
			pending += " since " + clk(*s.PendingSince)
		}
		parts = append(parts, pending)
	}
	return strings.Join(append(parts, "watching "+l.CredentialsFile), "; ")
}

// watchError: the watcher degraded (an inotify limit); said once per kind.
func (l *liveState) watchError(err error) {
	l.mu.Lock()
	seen := l.watchErrs[err.Error()]
	l.watchErrs[err.Error()] = true
	l.s.Watch = "rescan every " + l.Rescan.String() + " (" + err.Error() + ")"
	l.mu.Unlock()
	if !seen {
		l.Log.Event(eventlog.WARN, "file watch degraded: %v", err)
	}
}

// watchRecovered: inotify watches again after a degraded spell; a new
// degradation is reported again.
func (l *liveState) watchRecovered() {
	l.mu.Lock()
	was := len(l.watchErrs) > 0
	clear(l.watchErrs)
	l.s.Watch = "inotify"
	l.mu.Unlock()
	if was {
		l.Log.Event(eventlog.OK, "file watch restored: inotify again")
	}
}
