// Package agent is `claude-auth-sync run`: the long-lived per-user agent. It is
// a handful of components, each a Run(ctx) error loop that owns its state:
//
//   - the file watch (watcher) reports that the credentials file may have changed;
//   - the backup writer reads the file, keeps the newest usable login pending
//     until the store holds it, and restores a clobbered login at once;
//   - the refresher refreshes the login ahead of Claude, under Claude's locks;
//   - the token renewer checks and renews the Vault token;
//   - the pass scheduler runs the full pass (the inference check) when due,
//     on SIGHUP, and when the request server hands it a request from the unit
//     claude-auth-sync@<user>.service (sync/passrequest);
//   - the metrics writer and the live state (agent.json, systemd) publish.
//
// They talk through typed channels and run in one errgroup: the first to fail
// stops the rest, and Run returns its error. Every wait uses the engine's one
// clock, and every retry the one backoff policy.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
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

	clk := e.Clock
	live := newLiveState(e, opt)
	metrics := newMetrics(e)
	// The agent's events are counted by its metrics writer (the one-shot
	// commands count and write in the process that logs).
	restoreObserver := e.Log.SetAfterEvent(metrics.event)
	defer restoreObserver()
	// Every line the journal gets is at once in agent.json, systemd's
	// STATUS= and the fleet's health: they say what the journal says.
	restoreOnEvent := e.Log.SetOnEvent(func(st eventlog.Status, msg string) {
		live.event(st, msg)
		metrics.line(st, msg)
	})
	defer restoreOnEvent()

	out := &outage{e: e, live: live, clk: clk, metrics: metrics}
	pol := backoffPolicy{min: opt.RetryMin, max: opt.RetryMax}
	w := watcher.New(e.Cfg.CredentialsFile, watcher.Options{Debounce: opt.Debounce, Rescan: opt.Rescan,
		OnError: live.watchError, OnRecover: live.watchRecovered})
	bw := newBackupWriter(e, opt, lin, pol, live, metrics, out)
	rf := newRefresher(e, lin, pol, live, bw)
	rn := newRenewer(e, opt, pol, live, out, bw)
	ps := newPassScheduler(e, opt, live, bw, rn)
	rs := newRequestServer(e)
	bw.renewKick = rn.kick

	bw.start(ctx)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return fanOut(gctx, w.C(), live, bw.kick, rf.kick) })
	g.Go(func() error { return bw.Run(gctx) })
	g.Go(func() error { return rf.Run(gctx) })
	g.Go(func() error { return rn.Run(gctx) })
	g.Go(func() error { return ps.Run(gctx, opt.Reload, rs.requests) })
	g.Go(func() error { return rs.Run(gctx) })
	g.Go(func() error { return metrics.Run(gctx) })
	g.Go(func() error { return live.Run(gctx) })
	if rn.tokenFile != nil {
		g.Go(func() error { return rn.tokenFile.Run(gctx) })
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

// fanOut hands each change of the credentials file to the components that
// look at it: the backup writer and the refresher (each holds at most one
// pending wake-up), and the live state's "last event".
func fanOut(ctx context.Context, changes <-chan watcher.Change, live *liveState, kicks ...signal) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch := <-changes:
			at := live.e.Clock.Now()
			live.update(func(s *telemetry.AgentState) { s.LastEvent, s.LastEventReason = &at, string(ch.Reason) })
			for _, k := range kicks {
				k.poke()
			}
		}
	}
}

// signal is a wake-up that holds at most one pending poke.
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

// readFile reads the credentials file.
func readFile(e *engine.Engine) (*credentials.Local, error) {
	return credentials.Read(e.Cfg.CredentialsFile)
}
