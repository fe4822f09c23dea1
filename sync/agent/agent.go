// Package agent is `claude-auth-sync run`: the long-lived per-user agent. It is
// a handful of components, each built from a config of what it uses and run
// as Run(ctx, inputs..., outputs...) error, owning its state:
//
//   - the file watch (watcher) reports that the credentials file may have changed;
//   - the backup writer reads the file, keeps the newest usable login pending
//     until the store holds it, and restores a clobbered login at once;
//   - the refresher refreshes the login ahead of Claude, under Claude's locks;
//   - the token renewer checks and renews the Vault token;
//   - the pass scheduler runs the full pass (the inference check) when due,
//     on SIGHUP, and when the request server hands it a request from the unit
//     claude-auth-sync@<user>.service (sync/passrequest);
//   - the MCP manager refreshes the user's MCP server logins ahead of Claude
//     (sync/mcp), when the file changes or one is due;
//   - the metrics writer and the live state (agent.json, systemd) publish what
//     the others tell them (their methods never block).
//
// Run wires them: the channels between them are made there and passed to
// their Run, so the graph reads in that one function. They run in one
// errgroup: the first to fail stops the rest, and Run returns its error. Every
// wait uses the engine's one clock, and every retry the one backoff policy.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/sdnotify"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
	"github.com/claude-auth-sync/claude-auth-sync/watcher"
)

// Options tune the agent; zero values take the defaults.
type Options struct {
	CheckInterval time.Duration // full pass period (default: the config's, 6 h)
	// CheckSpread bounds the random delay before the first check when the
	// start has no fresh one to rely on (negative: the config's, 5 min; 0: none).
	CheckSpread time.Duration
	Debounce    time.Duration // quiet time after an in-place write (the watcher's default)
	Rescan      time.Duration // safety-net rescan (5 min)
	RetryMin    time.Duration // first backoff step (500 ms)
	RetryMax    time.Duration // backoff cap (2 min)
	// Settle is how long a broken file must stay unchanged before the agent
	// restores it: an in-place writer truncates, then writes, and restoring in
	// between would race it (1 s).
	Settle   time.Duration
	Reload   <-chan os.Signal   // SIGHUP: run a full pass now
	Notifier *sdnotify.Notifier // systemd; nil = none
	// Started, if set, is closed once the agent holds its lock and watches.
	Started chan<- struct{}
	// Version is the running binary's version, shown by `status`.
	Version string
	// MCP, when set, makes the agent the refresher of the user's MCP
	// server logins too (nil: CLAUDE_AUTH_MCP=off).
	MCP *mcp.Config

	// listen opens the request socket (passrequest.Listen; tests fail it).
	listen func(dir string) (requestListener, error)
}

func (o *Options) defaults(e *engine.Engine) {
	if o.CheckInterval <= 0 {
		o.CheckInterval = e.Cfg.CheckInterval
	}
	if o.CheckSpread < 0 {
		o.CheckSpread = e.Cfg.CheckSpread
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 500 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 2 * time.Minute
	}
	if o.Settle <= 0 {
		o.Settle = time.Second
	}
	if o.Rescan <= 0 {
		o.Rescan = 5 * time.Minute
	}
	if o.listen == nil {
		o.listen = listenRequests
	}
}

// ErrAgentRunning: another agent holds this user's agent lock.
var ErrAgentRunning = errors.New("another claude-auth-sync agent is already running")

// Run is `run`: it takes the user's agent lock, starts the components and
// returns when ctx ends (after a last attempt to flush a pending backup) or
// when a component fails (its error).
func Run(ctx context.Context, e *engine.Engine, opt Options) error {
	opt.defaults(e)
	lk, err := lock.TryAgent(e.Cfg.StateDir, e.Cfg.User+"@"+e.Cfg.HostID)
	if err != nil {
		if errors.Is(err, lock.ErrHeld) {
			return fmt.Errorf("%w for %s: %w", ErrAgentRunning, e.Cfg.User, err)
		}
		return err
	}
	defer lk.Unlock()
	lin, err := e.OpenLineage()
	if err != nil {
		return fmt.Errorf("lineage: %w", err)
	}
	sweepTemps(e)

	ev := engineView{e}
	common := base{Log: e.Log, Diag: e.Diag, Clock: e.Clock}
	pol := backoffPolicy{min: opt.RetryMin, max: opt.RetryMax}
	live := newLiveState(liveConfig{base: common, Notifier: opt.Notifier, Rescan: opt.Rescan, Version: opt.Version,
		CredentialsFile: e.Cfg.CredentialsFile, StateDir: e.Cfg.StateDir, MergeRecord: ev.MergeRecord})
	metrics := newMetricsWriter(metricsConfig{Engine: ev, Clock: e.Clock, User: e.Cfg.User, CredentialsFile: e.Cfg.CredentialsFile,
		Prom: e.Cfg.MetricsDir != "", Health: e.Vault != nil && e.Cfg.HostID != ""})
	// The agent's events are counted by its metrics writer (the one-shot
	// commands count and write in the process that logs), and every line the
	// journal gets is at once in agent.json, STATUS= and the fleet's health.
	defer e.Log.SetAfterEvent(metrics.event)()
	defer e.Log.SetOnEvent(func(st eventlog.Status, msg string) { live.event(st, msg); metrics.line(st, msg) })()
	out := newOutage(outageConfig{base: common, State: live.update, Resolved: metrics.resolved})

	credentialsWatch := watcher.New(e.Cfg.CredentialsFile, watcher.Options{Debounce: opt.Debounce, Rescan: opt.Rescan,
		OnError: live.watchError, OnRecover: live.watchRecovered})
	flight := &refreshFlight{}
	bw := newBackupWriter(backupWriterConfig{base: common, Engine: ev, Store: e.Store, Lineage: lin, Backoff: pol, Settle: opt.Settle,
		CredentialsFile: e.Cfg.CredentialsFile, StateDir: e.Cfg.StateDir, NoToken: e.Vault == nil, Accepted: vaultAccepted(e), Live: live, Metrics: metrics, Outage: out,
		Flight: flight})
	rf := newRefresher(refresherConfig{base: common, Engine: ev, Lineage: lin, Backoff: pol, CredentialsFile: e.Cfg.CredentialsFile,
		State: live.update, Resolved: metrics.resolved, Flight: flight})
	rn := newRenewer(renewerConfig{base: common, Token: tokenOf(e), TokenFile: e.Cfg.VaultTokenFile, Backoff: pol, Outage: out,
		State: live.update, Resolved: metrics.resolved, Verdict: metrics.token})
	ps := newPassScheduler(passSchedulerConfig{base: common, Engine: ev, CredentialsFile: e.Cfg.CredentialsFile,
		CheckInterval: opt.CheckInterval, CheckSpread: opt.CheckSpread, Settle: opt.Settle, State: live.update, Save: live.save, Checked: metrics.checked})
	rs := newRequestServer(requestServerConfig{base: common, User: e.Cfg.User, StateDir: e.Cfg.StateDir, Listen: opt.listen})
	bw.resume(ctx)

	fileChanged, refreshCheck, tokenRecheck, mcpCheck := newSignal(), newSignal(), newSignal(), newSignal()
	backed, refreshed := newLatest[string](), newLatest[*credentials.OAuth]()
	tokenOK, firstTokenVerdict := newLatest[bool](), newLatest[bool]()
	restoreWaits, requests := make(chan restoreWaiter), make(chan passRequest)
	var tokenFileChanged <-chan watcher.Change

	g, gctx := errgroup.WithContext(ctx)
	if e.Vault != nil {
		tokenWatch := watcher.New(e.Cfg.VaultTokenFile, watcher.Options{Rescan: opt.Rescan})
		tokenFileChanged = tokenWatch.C()
		g.Go(func() error { return tokenWatch.Run(gctx) })
	}
	g.Go(func() error { return credentialsWatch.Run(gctx) })
	g.Go(func() error {
		return fanOut(gctx, credentialsWatch.C(), live.fileChanged, fileChanged, refreshCheck, mcpCheck)
	})
	g.Go(func() error { return bw.Run(gctx, fileChanged, refreshed, tokenOK, restoreWaits, backed, tokenRecheck) })
	g.Go(func() error { return rf.Run(gctx, refreshCheck, backed, fileChanged, refreshed) })
	g.Go(func() error { return rn.Run(gctx, tokenFileChanged, tokenRecheck, tokenOK, firstTokenVerdict) })
	g.Go(func() error { return ps.Run(gctx, opt.Reload, requests, firstTokenVerdict, restoreWaits, fileChanged) })
	g.Go(func() error { return rs.Run(gctx, requests) })
	g.Go(func() error { return metrics.Run(gctx) })
	g.Go(func() error { return live.Run(gctx) })
	if opt.MCP != nil {
		mc := *opt.MCP
		mc.Changed = metrics.mcpChanged
		mcps := mcp.New(mc)
		g.Go(func() error { return mcps.Run(gctx, mcpCheck) })
	}

	version := opt.Version
	if version == "" {
		version = "unknown version"
	}
	e.Log.Event(eventlog.OK, "agent started (pid %d, %s): watching %s, backing up to %s, full check every %s",
		os.Getpid(), version, e.Cfg.CredentialsFile, e.Store.Describe(), opt.CheckInterval)
	live.ready()
	if opt.Started != nil {
		close(opt.Started)
	}
	err = g.Wait()
	live.save()
	metrics.stopping() // never a fresh OK on the way down
	if err != nil && ctx.Err() == nil {
		metrics.flush()
		return fmt.Errorf("agent: %w", err)
	}
	e.Log.Event(eventlog.OK, "agent stopped (pid %d); the login is not looked after until it starts again", os.Getpid())
	metrics.flush()
	return nil
}

// base is what every component is given: the event log (the status lines),
// the diagnostic log and the one clock.
type base struct {
	Log   eventLog
	Diag  *slog.Logger
	Clock clock.Clock
}

// eventLog is the status-line log (eventlog.EventLog).
type eventLog interface {
	Event(st eventlog.Status, format string, args ...any)
}

// stateFunc changes the live state (liveState.update).
type stateFunc func(func(*telemetry.AgentState))

// fanOut hands each change of the credentials file to the components that
// look at it: the backup writer and the refresher (each holds at most one
// pending wake-up), and noted (the live state's "last event"). It never
// fails.
func fanOut(ctx context.Context, changes <-chan watcher.Change, noted func(watcher.Change), kicks ...signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch := <-changes:
			noted(ch)
			for _, k := range kicks {
				k.poke()
			}
		}
	}
}

// signal is a wake-up that holds at most one pending poke. Any number of
// components may poke it; one receives.
type signal chan struct{}

func newSignal() signal { return make(signal, 1) }

func (s signal) poke() {
	select {
	case s <- struct{}{}:
	default:
	}
}

// latest is a one-slot channel whose newest value wins: a send replaces a
// value not yet received. It has one sender.
type latest[T any] chan T

func newLatest[T any]() latest[T] { return make(latest[T], 1) }

func (l latest[T]) put(v T) {
	for {
		select {
		case l <- v:
			return
		default:
		}
		select {
		case <-l:
		default:
		}
	}
}

// sweepTemps removes temp files a killed writer left in the directories we
// write (each may hold a copy of a token). Only old ones: a `refresh` or
// `sync` running now may be between its create and its rename.
func sweepTemps(e *engine.Engine) {
	dirs := []string{e.Cfg.StateDir, filepath.Dir(e.Cfg.TokenEnvFile), filepath.Dir(e.Cfg.CredentialsFile)}
	if t, err := filepath.EvalSymlinks(e.Cfg.CredentialsFile); err == nil {
		dirs = append(dirs, filepath.Dir(t))
	}
	n := 0
	for _, d := range dirs {
		n += atomicfile.SweepTemps(d, time.Minute)
	}
	if n > 0 {
		e.Diag.Info("removed temp files an interrupted write left behind", "count", n)
	}
}

// vaultAccepted is the Vault store's Accepted, nil with the file store.
func vaultAccepted(e *engine.Engine) func() bool {
	if e.Vault == nil {
		return nil
	}
	return e.Vault.Accepted
}
