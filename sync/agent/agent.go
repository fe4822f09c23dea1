package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/sdnotify"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/watcher"
)

// Options tune the agent; zero values take the defaults.
type Options struct {
	CheckInterval time.Duration // full pass period (default: the config's, 6 h)
	// CheckSpread bounds the random delay before the first check when the
	// start has no fresh one to rely on (negative: the config's, 5 min; 0: none).
	CheckSpread time.Duration
	Debounce    time.Duration // quiet time after a file event (10 ms)
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

// ErrAgentRunning: another agent holds this user's agent lock.
var ErrAgentRunning = errors.New("another claude-auth-sync agent is already running")

type pendingBackup struct {
	oauth  *credentials.OAuth
	seenAt time.Time // monotonic, for the lag
}

type agent struct {
	e    *engine.Engine
	opt  Options
	lin  *engine.Lineage
	kick chan struct{}
	// refreshKick wakes the refresher to recompute when the file changed.
	refreshKick chan struct{}
	// refreshed hands the worker a login the refresher got but could not
	// write to the credentials file (a full file system): it is backed up.
	refreshed chan *credentials.OAuth
	// renewKick asks the token routine to check the Vault token now (a
	// backup was refused: revoked or expired, or re-provisioned since).
	renewKick chan struct{}
	// ready: the Vault token passed its drift check (always true for the file store).
	ready atomic.Bool
	// tokenChecked is closed once the token routine has tried the Vault
	// token for the first time (whatever the answer).
	tokenChecked     chan struct{}
	tokenCheckedOnce sync.Once

	// Worker-goroutine state.
	backupFail string // the backup failure last logged (logged once, not per retry)
	pending    *pendingBackup
	lastBacked *credentials.OAuth
	lastState  credentials.State
	clobberMsg string
	clobberKey string      // size/mtime/inode of the broken file being watched settle
	settle     *time.Timer // fires when a broken file has been still for Settle

	mu        sync.Mutex // guards live, the outage flag and backedFP
	live      engine.AgentState
	downSince time.Time
	watchErrs map[string]bool
	// backedFP is the fingerprint of the refresh token the store is known to
	// hold (the worker's last backup or restore): the refresher waits for it.
	backedFP string
}

func (a *agent) pendingPath() string { return filepath.Join(a.e.Cfg.StateDir, "pending-backup.json") }
func (a *agent) livePath() string    { return filepath.Join(a.e.Cfg.StateDir, "agent.json") }

// Run is `run`: the long-lived per-user agent. It watches the credentials
// file and backs up every change at once, restores a clobbered login at once,
// runs a full pass at start, every CheckInterval and on Reload, keeps the Vault
// token renewed, and talks to systemd. It returns when ctx ends, after a last
// attempt to flush a pending backup.
func Run(ctx context.Context, e *engine.Engine, opt Options) error {
	if opt.CheckInterval <= 0 {
		opt.CheckInterval = e.Cfg.CheckInterval
	}
	if opt.CheckSpread < 0 {
		opt.CheckSpread = e.Cfg.CheckSpread
	}
	if opt.RetryMin <= 0 {
		opt.RetryMin = 500 * time.Millisecond
	}
	if opt.RetryMax <= 0 {
		opt.RetryMax = 2 * time.Minute
	}
	if opt.Settle <= 0 {
		opt.Settle = time.Second
	}
	lk, err := lock.Try(e.Cfg.StateDir, lock.Agent)
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
	a := &agent{e: e, opt: opt, lin: lin, kick: make(chan struct{}, 1), refreshKick: make(chan struct{}, 1),
		refreshed: make(chan *credentials.OAuth, 1), renewKick: make(chan struct{}, 1), lastState: -1, watchErrs: map[string]bool{},
		tokenChecked: make(chan struct{})}
	a.sweepTemps()
	a.live = engine.AgentState{PID: os.Getpid(), Version: opt.Version, Started: time.Now(), Watch: "inotify"}
	a.loadPending()
	switch res, err := e.ApplyPendingRefresh(ctx, lin); {
	case errors.Is(err, engine.ErrNotWritten) && res.OAuth != nil:
		e.Log.Event(engine.WARN, "a refresh saved before the last stop cannot go into the file: %v; the new login is backed up", err)
		a.setPending(res.OAuth) // the newest login there is
	case err != nil:
		e.Log.Event(engine.WARN, "a refresh interrupted at the last stop could not be applied: %v", err)
	case res.Refreshed:
		e.Log.Event(engine.RECOVERED, "applied the refresh response saved before the last stop")
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := watcher.New(e.Cfg.CredentialsFile, watcher.Options{Debounce: opt.Debounce, Rescan: opt.Rescan, OnError: a.watchError, OnRecover: a.watchRecovered})
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	passReq := make(chan struct{}, 1)
	passDone := make(chan engine.Outcome, 1)
	wg.Go(func() { a.passLoop(ctx, passReq, passDone) })
	wg.Go(func() { a.renewLoop(ctx) })
	wg.Go(func() { a.refreshLoop(ctx) })
	// Metrics are written by their own goroutine: a slow disk under the
	// metrics dir never holds up a backup, a restore, a stop or the watchdog.
	metricsKick := make(chan struct{}, 1)
	e.MetricsAsync = func() {
		select {
		case metricsKick <- struct{}{}:
		default:
		}
	}
	defer func() { e.MetricsAsync = nil }()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-metricsKick:
				e.WriteMetricsNow()
			}
		}
	})
	workerDone := make(chan struct{})
	go func() { a.worker(ctx); close(workerDone) }()

	version := opt.Version
	if version == "" {
		version = "unknown version"
	}
	e.Log.Event(engine.OK, "agent started (pid %d, %s): watching %s, backing up to %s, full check every %s",
		os.Getpid(), version, e.Cfg.CredentialsFile, e.Store.Describe(), opt.CheckInterval)
	notify := opt.Notifier
	_ = notify.Send("READY=1\nSTATUS=" + a.statusLine())
	if opt.Started != nil {
		close(opt.Started)
	}
	wd := sdnotify.WatchdogInterval()
	if wd <= 0 {
		wd = time.Hour
	}
	watchdog := time.NewTicker(wd)
	defer watchdog.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = notify.Send("STOPPING=1\nSTATUS=stopping")
			<-workerDone
			wg.Wait()
			a.saveLive()
			e.Log.Event(engine.OK, "agent stopped (pid %d); the login is not looked after until it starts again", os.Getpid())
			return nil
		case ch := <-w.C():
			a.mu.Lock()
			t := time.Now()
			a.live.LastEvent, a.live.LastEventReason = &t, string(ch.Reason)
			a.mu.Unlock()
			a.kickWorker()
			a.kickRefresher()
		case <-opt.Reload:
			e.Diag.Info("reload: running a full pass")
			select {
			case passReq <- struct{}{}:
			default:
			}
		case o := <-passDone:
			a.mu.Lock()
			a.live.LastPass = &engine.PassRecord{At: e.Clock.Now(), Status: o.Status, Message: check.Mask(o.Message)}
			a.mu.Unlock()
			a.saveLive()
			_ = notify.Send("STATUS=" + a.statusLine())
		case <-watchdog.C:
			_ = notify.Send("WATCHDOG=1")
		}
	}
}

func (a *agent) kickWorker() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *agent) kickRefresher() {
	select {
	case a.refreshKick <- struct{}{}:
	default:
	}
}

// refreshLoop is the single refresher: it sleeps until the login in the file is
// due (expiresAt minus the lead), refreshes it under the locks, and lets the
// worker back the new login up at once. A file change wakes it to look again.
func (a *agent) refreshLoop(ctx context.Context) {
	b := backoff{min: a.opt.RetryMin, max: a.opt.RetryMax}
	reported := ""
	report := func(st engine.Status, msg string) {
		if reported != msg {
			reported = msg
			a.e.Log.Event(st, "%s", msg)
		}
	}
	var retryAt time.Time
	for {
		wait := time.Duration(-1) // until kicked
		local, err := credentials.Read(a.e.Cfg.CredentialsFile)
		if err == nil && local.State == credentials.Usable && !engine.IsBackfill(local.OAuth, a.e.SetupToken(), a.e.Clock.Now()) {
			due := a.e.RefreshDue(local.OAuth)
			if a.e.RefreshPending() {
				due = a.e.Clock.Now() // an answer waiting to be written: the file's token is spent
			}
			if retryAt.After(due) {
				due = retryAt
			}
			wait = max(due.Sub(a.e.Clock.Now()), 0)
			a.mu.Lock()
			a.live.NextRefresh = &due
			a.mu.Unlock()
		}
		if wait != 0 {
			var t *time.Timer
			var timer <-chan time.Time
			if wait > 0 {
				t = time.NewTimer(wait)
				timer = t.C
			}
			kicked := false
			select {
			case <-ctx.Done():
			case <-a.refreshKick:
				kicked = true
			case <-timer:
			}
			if t != nil {
				t.Stop()
			}
			if ctx.Err() != nil {
				return
			}
			if kicked {
				continue
			}
		}
		// Refresh only a login the store already holds: the refresh spends
		// its refresh token, and until the new one is backed up the store's
		// copy is the only other one. A slow backup (Vault busy) is waited
		// for, bounded by backupWaitLimit.
		if cur, err := credentials.Read(a.e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable &&
			!a.e.RefreshPending() && !a.backedUp(cur.OAuth.RefreshToken()) {
			if lim := a.backupWaitLimit(cur.OAuth); a.e.Clock.Now().Before(lim) {
				a.kickWorker()
				t := time.NewTimer(min(lim.Sub(a.e.Clock.Now()), time.Second))
				select {
				case <-ctx.Done():
				case <-a.refreshKick:
				case <-t.C:
				}
				t.Stop()
				if ctx.Err() != nil {
					return
				}
				continue
			}
		}
		// A login that appeared since the top of the loop has its birth
		// noted by the worker before it is backed up: a short-lived one may
		// not be due yet after all (its lead is half its lifetime).
		if cur, err := credentials.Read(a.e.Cfg.CredentialsFile); err == nil && cur.State == credentials.Usable &&
			!a.e.RefreshPending() && (a.e.Clock.Now().Before(a.e.RefreshDue(cur.OAuth)) || a.e.Clock.Now().Before(retryAt)) {
			continue
		}
		res, err := a.e.Refresh(ctx, a.lin, false, "")
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			retryAt = time.Time{}
			b.reset()
			if res.Refreshed {
				switch {
				case reported != "":
					a.e.Log.Event(engine.OK, "refreshing works again: %s", res.Message)
				case res.OAuth != nil:
					a.e.Log.Event(engine.OK, "refreshed the login ahead of Claude (valid until %s)", res.OAuth.ExpiresAt().Local().Format(time.RFC3339))
				default:
					a.e.Log.Event(engine.OK, "refreshed the login ahead of Claude")
				}
				reported = ""
				a.mu.Lock()
				a.live.Refreshes++
				a.mu.Unlock()
				a.kickWorker() // back it up at once
			}
		case errors.Is(err, engine.ErrNotWritten):
			report(engine.WARN, fmt.Sprintf("refreshed the login, but %v; the new login is backed up", err))
			if res.OAuth != nil {
				select {
				case <-a.refreshed: // an older one, not backed up yet: this one is newer
				default:
				}
				a.refreshed <- res.OAuth
			}
			retryAt = a.e.Clock.Now().Add(b.next())
		case errors.Is(err, engine.ErrLoginDead):
			report(engine.FAIL, fmt.Sprintf("refresh failed: %v; %s", err, engine.LoginHint()))
			retryAt = time.Time{}
			// Nothing to do until the file changes (a new login, a restore).
			select {
			case <-ctx.Done():
				return
			case <-a.refreshKick:
			}
		case errors.Is(err, lock.ErrClaudeLocksUnavailable):
			report(engine.WARN, fmt.Sprintf("not refreshing: %v; backups go on", err))
			retryAt = a.e.Clock.Now().Add(max(b.next(), a.opt.RetryMax))
		default:
			a.e.Diag.Warn("refresh failed; retrying with backoff", "err", err)
			retryAt = a.e.Clock.Now().Add(b.next())
		}
	}
}

func (a *agent) watchError(err error) {
	a.mu.Lock()
	seen := a.watchErrs[err.Error()]
	a.watchErrs[err.Error()] = true
	a.live.Watch = "rescan every " + a.opt.Rescan.String() + " (" + err.Error() + ")"
	a.mu.Unlock()
	if !seen {
		a.e.Log.Event(engine.WARN, "file watch degraded: %v", err)
	}
}

// watchRecovered: inotify watches again after a degraded spell; a new
// degradation is reported again.
func (a *agent) watchRecovered() {
	a.mu.Lock()
	was := len(a.watchErrs) > 0
	clear(a.watchErrs)
	a.live.Watch = "inotify"
	a.mu.Unlock()
	if was {
		a.e.Log.Event(engine.OK, "file watch restored: inotify again")
	}
}

// passLoop runs the full pass off the main loop (a pass runs claude and may
// take a minute): first when firstCheck says, then every CheckInterval (so a
// spread start keeps its offset), and at once on request.
func (a *agent) passLoop(ctx context.Context, req <-chan struct{}, done chan<- engine.Outcome) {
	first, why := a.firstCheck(ctx)
	if ctx.Err() != nil {
		return
	}
	if first > 0 {
		a.e.Diag.Info("first check scheduled", "in", first.Round(time.Second).String(), "why", why)
	}
	a.setNextCheck(first, why)
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-req:
		}
		a.setNextCheck(-1, "running now")
		o := a.e.PassWith(ctx, engine.PassOptions{AwaitRestore: a.awaitRestore})
		if ctx.Err() != nil {
			return
		}
		select {
		case done <- o:
		default:
		}
		a.kickWorker()
		t.Stop()
		t.Reset(a.opt.CheckInterval)
		a.setNextCheck(a.opt.CheckInterval, "every "+a.opt.CheckInterval.String())
	}
}

func (a *agent) setNextCheck(in time.Duration, why string) {
	a.mu.Lock()
	if in < 0 {
		a.live.NextCheck, a.live.NextCheckWhy = nil, why
	} else {
		at := a.e.Clock.Now().Add(in)
		a.live.NextCheck, a.live.NextCheckWhy = &at, why
	}
	a.mu.Unlock()
	a.saveLive()
}

// firstCheck decides when the agent's first pass runs. Many agents start
// together (a reboot, an upgrade, provision enabling everyone) and each check
// runs claude (~0.5 s, ~200 MB): a start does not check again a login whose
// last check passed within CheckInterval when nothing changed since (the
// file's login, the store's login and setup token), and a start that must
// check waits a random delay within CheckSpread. A login that needs a look
// (not usable in the file, or its last check failed) is checked at once.
func (a *agent) firstCheck(ctx context.Context) (time.Duration, string) {
	local, err := credentials.Read(a.e.Cfg.CredentialsFile)
	if err != nil || local.State != credentials.Usable {
		return 0, "the credentials file needs a look"
	}
	rec := a.e.LoadRecord()
	lc := rec.LastCheck
	spread := func(why string) (time.Duration, string) {
		if a.opt.CheckSpread <= 0 {
			return 0, why
		}
		d := rand.N(a.opt.CheckSpread)
		return d, why + "; spread over " + a.opt.CheckSpread.String()
	}
	switch {
	case lc == nil || lc.Subject == nil:
		return spread("no check on record")
	case lc.Result != check.OK.String():
		return 0, "the last check did not pass"
	}
	age := a.e.Clock.Now().Sub(lc.At)
	if age < 0 || age >= a.opt.CheckInterval {
		return spread("the last check is " + age.Round(time.Second).String() + " old")
	}
	// The store's side: wait (bounded) for the token routine's first try.
	select {
	case <-a.tokenChecked:
	case <-ctx.Done():
		return 0, "stopping"
	case <-time.After(30 * time.Second):
	}
	var sub engine.CheckSubject
	if a.ready.Load() {
		sub = a.e.CurrentSubject(ctx, true)
	} else {
		sub = engine.SubjectOf(local, nil)
	}
	switch {
	case sub.Login != lc.Subject.Login:
		return spread("the login changed since the last check")
	case !sub.DocRead:
		return spread("the backup cannot be read to compare")
	case sub.DocLogin != lc.Subject.DocLogin || sub.SetupToken != lc.Subject.SetupToken:
		return spread("the backup changed since the last check")
	}
	return a.opt.CheckInterval - age, "the last check passed " + age.Round(time.Second).String() + " ago and nothing changed"
}

// renewLoop checks and renews the Vault token: at start, then at half its TTL,
// with backoff while Vault is away. It watches the token file too (a cheap
// stat, tokenPoll apart): a token the admin re-provisions is used within a
// second, not when the backoff runs out.
func (a *agent) renewLoop(ctx context.Context) {
	defer a.markTokenChecked()
	if a.e.Vault == nil {
		a.ready.Store(true)
		a.markTokenChecked()
		a.kickWorker()
		return
	}
	b := backoff{min: a.opt.RetryMin, max: a.opt.RetryMax}
	failed := ""
	prevOK := false
	// A re-provisioned token is used as soon as its file changes: inotify on
	// the file's directory (provision renames a new file in), no polling.
	tw := watcher.New(a.e.Cfg.VaultTokenFile, watcher.Options{Debounce: 50 * time.Millisecond})
	twCtx, twStop := context.WithCancel(ctx)
	twDone := make(chan struct{})
	go func() { defer close(twDone); _ = tw.Run(twCtx) }()
	defer func() { twStop(); <-twDone }()
	for {
		tokenKey := fileKey(a.e.Cfg.VaultTokenFile)
		info, err := a.e.Vault.Prepare(ctx)
		var next time.Duration
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			a.ready.Store(true)
			a.vaultUp()
			b.reset()
			if failed != "" {
				a.e.Log.Event(engine.OK, "vault token accepted again")
			}
			failed = ""
			a.mu.Lock()
			a.live.VaultTokenTTL = info.TTL.String()
			a.mu.Unlock()
			if !prevOK {
				// Only news wakes the worker: a refused backup kicks this
				// loop, and a token that checks out must not kick back.
				a.kickWorker()
			}
			next = min(max(info.TTL/2, time.Minute), 12*time.Hour)
			if info.TTL == 0 {
				next = 12 * time.Hour
			}
		case errors.Is(err, store.ErrMisconfigured):
			// Waiting does not mend the settings, but the agent stays: it is
			// still the single refresher (Claude's processes would race on
			// the rotation without it) and keeps the newest login pending on
			// disk. Said once, as FAIL: an admin must fix the config.
			a.ready.Store(false)
			if failed != err.Error() {
				a.e.Log.Event(engine.FAIL, "vault: %v; backups wait until the configuration is fixed (then restart the agent); refreshes go on", err)
				failed = err.Error()
			}
			next = max(b.next(), min(5*time.Minute, a.opt.RetryMax))
		case errors.Is(err, store.ErrUnreachable):
			a.vaultDown(err)
			next = b.next()
		default:
			// Token file, foreign token or 403: stop writing with it.
			a.ready.Store(false)
			if failed != err.Error() {
				a.e.Log.Event(engine.FAIL, "vault token: %v; backups wait until it is fixed", err)
				failed = err.Error()
			}
			next = max(b.next(), min(5*time.Minute, a.opt.RetryMax))
		}
		prevOK = err == nil
		a.markTokenChecked()
		t := time.NewTimer(next)
	wait:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
				break wait
			case <-a.renewKick:
				t.Stop()
				break wait
			case <-tw.C():
				if fileKey(a.e.Cfg.VaultTokenFile) != tokenKey {
					t.Stop()
					break wait
				}
			}
		}
	}
}

func (a *agent) markTokenChecked() { a.tokenCheckedOnce.Do(func() { close(a.tokenChecked) }) }

// vaultDown and vaultUp log an outage once, not once per retry.
func (a *agent) vaultDown(err error) {
	a.mu.Lock()
	first := a.downSince.IsZero()
	if first {
		a.downSince = time.Now()
		t := a.downSince
		a.live.VaultDownSince = &t
	}
	a.mu.Unlock()
	if first {
		a.e.Log.Event(engine.WARN, "vault unreachable; backups pending, retrying with backoff: %v", err)
	}
}

func (a *agent) vaultUp() {
	a.mu.Lock()
	since := a.downSince
	a.downSince = time.Time{}
	a.live.VaultDownSince = nil
	a.mu.Unlock()
	if !since.IsZero() {
		a.e.Log.Event(engine.OK, "vault reachable again after %s", time.Since(since).Round(time.Second))
	}
}

// worker owns the backup: it reads the file when kicked, keeps the newest usable
// login as pending until the store has it, and retries with backoff.
func (a *agent) worker(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	a.settle = time.NewTimer(time.Hour)
	a.settle.Stop()
	b := backoff{min: a.opt.RetryMin, max: a.opt.RetryMax}
	for {
		select {
		case <-ctx.Done():
			a.finalFlush()
			return
		case <-a.kick:
		case <-retry.C:
		case <-a.settle.C:
		case o := <-a.refreshed:
			a.adoptRefreshed(o)
		}
		again := a.scan(ctx)
		if a.flush(ctx) {
			again = true
		}
		if again && ctx.Err() == nil {
			retry.Reset(b.next())
			a.mu.Lock()
			a.live.Retries++
			a.mu.Unlock()
		} else {
			b.reset()
		}
		a.saveLive()
		a.e.ExportMetrics()
	}
}

// scan reads the file and decides: a new usable login becomes pending; a
// clobbered one is restored at once; a deleted one is a logout, left alone.
// It returns true when it needs to run again later (a restore that could not
// reach the store).
func (a *agent) scan(ctx context.Context) bool {
	local, err := credentials.Read(a.e.Cfg.CredentialsFile)
	if err != nil {
		// Unreadable (mode, owner), a link loop, a directory: Claude cannot
		// use it either, and we cannot keep a copy of it, so nothing is
		// restored over it. Said once, as FAIL: the fleet alerts on FAIL.
		a.reportClobber(fmt.Sprintf("cannot read the credentials file (%v); Claude cannot use it either: check its owner, mode and type", err))
		return false
	}
	a.e.TightenLoose(local)
	prev := a.lastState
	a.lastState = local.State
	if local.State != credentials.Clobbered {
		a.clobberKey = ""
	}
	switch local.State {
	case credentials.Usable:
		a.clobberMsg = ""
		o := local.OAuth
		if engine.IsBackfill(o, a.e.SetupToken(), a.e.Clock.Now()) {
			return false // setup-token mode: no backups
		}
		if err := a.lin.Observe(o.RefreshToken()); err != nil {
			a.e.Diag.Warn("cannot record lineage", "err", err)
		}
		if a.lastBacked != nil && a.lastBacked.Equal(o) {
			return false
		}
		if a.pending != nil {
			if a.pending.oauth.Equal(o) {
				return false
			}
			if a.lin.Order(o.RefreshToken(), a.pending.oauth.RefreshToken()) < 0 {
				return false // the file went back to an older login: keep the newer one
			}
		}
		if prev != -1 {
			a.e.NoteNewLogin(o) // seen the moment it appeared: its birth, for the lead
		}
		a.setPending(o)
	case credentials.Clobbered:
		// Restore only a file that has stayed broken, unchanged, for Settle.
		if key := fileKey(local.Target); key != a.clobberKey {
			a.clobberKey = key
			a.settle.Reset(a.opt.Settle)
			return false
		}
		return a.restoreClobberedNow(ctx, local)
	case credentials.Missing, credentials.NoLogin:
		a.clobberMsg = ""
		if prev == credentials.Usable || prev == credentials.Clobbered {
			a.e.Log.Event(engine.WARN, "credentials file %s (a logout?); not restoring automatically: `claude auth login`, or `claude-auth-sync restore` to bring back the last backup",
				map[bool]string{true: "was removed", false: "no longer holds a login"}[local.State == credentials.Missing])
		}
	}
	return false
}

// awaitRestore is the agent's pass meeting a clobbered file: the worker
// restores it (after Settle); wait for that, bounded.
func (a *agent) awaitRestore(ctx context.Context) *credentials.Local {
	a.kickWorker()
	deadline := time.Now().Add(a.opt.Settle + 15*time.Second)
	for {
		if l, err := credentials.Read(a.e.Cfg.CredentialsFile); err == nil && l.State == credentials.Usable {
			return l
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// adoptRefreshed makes a login the refresher could not write to the file the
// pending backup (unless a newer one is pending): until the file takes it,
// Vault and pending-refresh are its only copies.
func (a *agent) adoptRefreshed(o *credentials.OAuth) {
	if err := a.lin.Observe(o.RefreshToken()); err != nil {
		a.e.Diag.Warn("cannot record lineage", "err", err)
	}
	if a.lastBacked != nil && a.lastBacked.Equal(o) {
		return
	}
	if a.pending != nil && (a.pending.oauth.Equal(o) || a.lin.Order(o.RefreshToken(), a.pending.oauth.RefreshToken()) < 0) {
		return
	}
	a.setPending(o)
}

// markBacked records that the store holds o (backed up, or restored from it)
// and wakes the refresher, which may be waiting for exactly that.
func (a *agent) markBacked(o *credentials.OAuth) {
	a.lastBacked = o
	a.mu.Lock()
	a.backedFP = o.RefreshToken().Fingerprint()
	a.mu.Unlock()
	a.kickRefresher()
}

// backedUp says whether the store is known to hold the refresh token tok.
func (a *agent) backedUp(tok credentials.Secret) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.backedFP == tok.Fingerprint()
}

// backupWaitLimit is how long the refresher may wait for the backup of o
// before refreshing anyway: until a minute before Claude's own refresh point
// (five minutes before expiry), or half-way to it for short lifetimes. Past it,
// refreshing ahead of Claude (one refresher) matters more than the order.
func (a *agent) backupWaitLimit(o *credentials.OAuth) time.Time {
	claudeAt := o.ExpiresAt().Add(-5 * time.Minute)
	due := a.e.RefreshDue(o)
	margin := min(time.Minute, max(claudeAt.Sub(due)/2, 0))
	return claudeAt.Add(-margin)
}

// sweepTemps removes temp files a killed writer left in the directories we
// write (each may hold a copy of a token). Only old ones: a `refresh` or
// `sync` running now may be between its create and its rename.
func (a *agent) sweepTemps() {
	dirs := []string{a.e.Cfg.StateDir, filepath.Dir(a.e.Cfg.TokenEnvFile), filepath.Dir(a.e.Cfg.CredentialsFile)}
	if t, err := filepath.EvalSymlinks(a.e.Cfg.CredentialsFile); err == nil {
		dirs = append(dirs, filepath.Dir(t))
	}
	n := 0
	for _, d := range dirs {
		n += atomicfile.SweepTemps(d, time.Minute)
	}
	if n > 0 {
		a.e.Diag.Info("removed temp files an interrupted write left behind", "count", n)
	}
}

// restoreClobberedNow restores a broken login: from the pending backup when
// there is one (it is the newest), else from the store.
func (a *agent) restoreClobberedNow(ctx context.Context, local *credentials.Local) bool {
	expect := func(cur *credentials.Local) error {
		if cur.State == credentials.Usable {
			return errors.New("the file became usable meanwhile")
		}
		return nil
	}
	if a.pending != nil {
		src, from := a.pending.oauth, "the newest login (not yet in the backup)"
		// The pending login may be stale: left in pending-backup.json by an
		// agent that died, while another process of ours rotated and backed
		// up a newer one. Restoring it would put a spent refresh token in the
		// file (invalid_grant: a logout). Prefer the backup when it is newer;
		// if this host has seen a newer login, wait for the backup.
		_ = a.lin.Reload()
		if !a.lin.Latest(src.RefreshToken()) && !a.ready.Load() {
			return true
		}
		if a.ready.Load() {
			if doc, err := a.e.Store.Read(ctx); err == nil {
				if vo, _ := a.e.RestoreCandidate(a.lin, doc, local); vo != nil && !vo.Equal(src) && engine.Newer(a.lin, vo, src) {
					src, from = vo, fmt.Sprintf("the login from the backup (v%d; the pending one was older)", doc.Version)
					a.pending = nil
					_ = os.Remove(a.pendingPath())
				}
			}
		}
		if err := a.e.WriteLogin(ctx, a.lin, src, expect); errors.Is(err, engine.ErrChanged) {
			return false
		} else if err != nil {
			a.e.Log.Event(engine.FAIL, "credentials file is unusable (%v); restoring the newest login failed: %v", local.Problem, err)
			return false
		}
		if a.pending == nil {
			a.markBacked(src)
		}
		a.e.Log.Event(engine.RECOVERED, "credentials file was clobbered (%v); restored %s", local.Problem, from)
		return false
	}
	if !a.ready.Load() {
		return true
	}
	doc, err := a.e.Store.Read(ctx)
	if errors.Is(err, store.ErrUnreachable) {
		a.vaultDown(err)
		return true
	}
	if err != nil {
		a.reportClobber(fmt.Sprintf("credentials file is unusable (%v); the backup cannot be read: %v", local.Problem, err))
		return false
	}
	a.vaultUp()
	vo, why := a.e.RestoreCandidate(a.lin, doc, local)
	if vo == nil {
		a.reportClobber(fmt.Sprintf("credentials file is unusable (%v); %s; %s", local.Problem, why, engine.LoginHint()))
		return false
	}
	if err := a.e.WriteLogin(ctx, a.lin, vo, expect); errors.Is(err, engine.ErrChanged) {
		return false
	} else if err != nil {
		a.reportClobber(fmt.Sprintf("credentials file is unusable (%v); restore failed: %v", local.Problem, err))
		return false
	}
	a.markBacked(vo)
	a.e.Log.Event(engine.RECOVERED, "credentials file was clobbered (%v); restored the login from the backup (v%d)", local.Problem, doc.Version)
	return false
}

// reportClobber logs a FAIL for a broken login once, not on every rescan.
func (a *agent) reportClobber(msg string) {
	if a.clobberMsg == msg {
		return
	}
	a.clobberMsg = msg
	a.e.Log.Event(engine.FAIL, "%s", msg)
}

// flush writes the pending login to the store; true means "retry later".
func (a *agent) flush(ctx context.Context) bool {
	if a.pending == nil {
		return false
	}
	if !a.ready.Load() {
		return true
	}
	p := a.pending
	res, err := a.e.Backup(ctx, a.lin, p.oauth)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrUnreachable):
		a.vaultDown(err)
		return true
	case ctx.Err() != nil:
		return true
	default:
		if msg := fmt.Sprintf("backup failed, will retry: %v", err); msg != a.backupFail {
			a.backupFail = msg
			a.e.Log.Event(engine.FAIL, "%s", msg)
		}
		if errors.Is(err, store.ErrForbidden) {
			// Revoked or expired, or re-provisioned since: the token
			// routine re-reads the token file and checks it now.
			select {
			case a.renewKick <- struct{}{}:
			default:
			}
		}
		return true
	}
	a.backupFail = ""
	a.vaultUp()
	lag := time.Since(p.seenAt)
	if a.pending == p {
		a.pending = nil
		_ = os.Remove(a.pendingPath())
	}
	a.markBacked(p.oauth)
	a.mu.Lock()
	a.live.Pending, a.live.PendingSince = false, nil
	if res.Written {
		t := time.Now()
		a.live.LastBackup, a.live.LastBackupVer, a.live.LastBackupLagMs = &t, res.Version, float64(lag.Microseconds())/1000
		a.live.Backups++
	}
	a.mu.Unlock()
	if res.Written {
		a.e.Log.Event(engine.OK, "backed up the changed login to %s (v%d, %s after the change)", a.e.Store.Describe(), res.Version, lag.Round(time.Millisecond))
		if err := a.e.MergeRecord(&engine.Record{LastBackup: &engine.BackupRecord{At: a.e.Clock.Now(), Version: res.Version, Store: a.e.Store.Describe(), Fingerprint: p.oauth.RefreshToken().Short()}}); err != nil {
			a.e.Diag.Warn("cannot save state", "err", err)
		}
	} else {
		a.e.Diag.Info("no backup needed", "why", res.Message)
	}
	return false
}

// finalFlush makes one bounded attempt to write a pending backup on stop; what
// it cannot write stays in pending-backup.json for the next start.
func (a *agent) finalFlush() {
	if a.pending == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if a.flush(ctx) {
		a.e.Log.Event(engine.WARN, "stopping with a backup pending; it is kept in %s and written at the next start", a.pendingPath())
	}
}

// fileKey names a file's current content cheaply: inode, size and mtime.
func fileKey(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "missing"
	}
	return fmt.Sprintf("%d:%d:%d.%d", st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec)
}

type pendingFile struct {
	OAuth  json.RawMessage `json:"claudeAiOauth"`
	SeenAt time.Time       `json:"seen_at"`
}

// setPending makes o the login to back up and persists it (0600), so a restart
// or a crash before the backup loses nothing.
func (a *agent) setPending(o *credentials.OAuth) {
	a.pending = &pendingBackup{oauth: o, seenAt: time.Now()}
	data, _ := json.Marshal(pendingFile{OAuth: o.Compact(), SeenAt: a.e.Clock.Now()})
	if _, err := atomicfile.Write(a.pendingPath(), data, 0o600); err != nil {
		a.e.Diag.Warn("cannot persist the pending backup", "err", err)
	}
	a.mu.Lock()
	t := time.Now()
	a.live.Pending, a.live.PendingSince = true, &t
	a.mu.Unlock()
}

func (a *agent) loadPending() {
	data, err := os.ReadFile(a.pendingPath())
	if err != nil {
		return
	}
	var pf pendingFile
	if json.Unmarshal(data, &pf) != nil {
		return
	}
	o, err := credentials.ParseOAuth(pf.OAuth)
	if err != nil || o.Usable() != nil {
		return
	}
	a.pending = &pendingBackup{oauth: o, seenAt: time.Now()}
	a.e.Diag.Info("a backup was pending at the last stop; it is written first")
}

func (a *agent) saveLive() {
	a.mu.Lock()
	data, err := json.MarshalIndent(a.live, "", "  ")
	a.mu.Unlock()
	if err == nil {
		_, _ = atomicfile.Write(a.livePath(), append(data, '\n'), 0o600)
	}
}

func (a *agent) statusLine() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := "watching " + a.e.Cfg.CredentialsFile
	if a.live.LastBackup != nil {
		s += fmt.Sprintf("; last backup v%d at %s", a.live.LastBackupVer, a.live.LastBackup.Format(time.TimeOnly))
	}
	if a.live.LastPass != nil {
		s += fmt.Sprintf("; last pass %s at %s", a.live.LastPass.Status, a.live.LastPass.At.Format(time.TimeOnly))
	}
	if a.live.Pending {
		s += "; backup pending"
	}
	return s
}

// backoff is capped exponential backoff with full jitter, the one retry layer.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 20)
	if d > b.max || d <= 0 {
		d = b.max
	}
	b.n++
	// Jitter in [d/2, d): spread retries without ever waiting less than half.
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func (b *backoff) reset() { b.n = 0 }
