package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// backupWriter owns the backup: it reads the credentials file when woken,
// keeps the newest usable login pending (on disk too) until the store holds
// it, retries with backoff, and restores a clobbered login at once.
type backupWriter struct {
	backupWriterConfig

	// In and out, set by Run.
	refreshed    <-chan *credentials.OAuth // each login the refresher made
	backed       latest[string]            // the refresh token's fingerprint the store now holds
	tokenRefused signal                    // a refused backup: have the token looked at now

	// Owned by Run.
	ready      bool // the token checks out (or there is none to check)
	pending    *pendingBackup
	lastBacked *credentials.OAuth
	lastState  credentials.State
	clobber    sayOnce // the FAIL about a broken file last logged
	backupFail sayOnce // the backup failure last logged
	clobberKey string  // size/mtime/inode of the broken file being watched settle
	settle     clock.Timer
	waiters    []restoreWaiter
}

// backupWriterConfig is what the backup writer uses.
type backupWriterConfig struct {
	base
	Engine          backupEngine
	Store           backupStore
	Lineage         *lineage.Lineage
	Backoff         backoffPolicy
	Settle          time.Duration // a broken file stays unchanged this long before a restore
	CredentialsFile string
	StateDir        string // pending-backup.json
	NoToken         bool   // the file store: no Vault token to wait for
	// Accepted says whether the last look at the Vault token accepted it
	// (nil: always): a pass may refuse the token file (an exposed token,
	// `systemctl reload` after a chmod) between the renewer's verdicts.
	Accepted func() bool
	Live     backupLive
	Metrics  backupMetrics
	Outage   *outage
	Flight   *refreshFlight // a refresh of ours is out: its login is the newest
}

// backupEngine is what the writer asks of the engine.
type backupEngine interface {
	ApplyPendingRefresh(ctx context.Context, lin *lineage.Lineage) (refresh.ClaudeResult, error)
	Backup(ctx context.Context, lin *lineage.Lineage, o *credentials.OAuth) (engine.BackupResult, error)
	BackupRecord(res engine.BackupResult, o *credentials.OAuth) *telemetry.BackupRecord
	NoteNewLogin(o *credentials.OAuth)
	RestoreCandidate(lin *lineage.Lineage, doc *store.Doc, local *credentials.Local) (*credentials.OAuth, string)
	SetupToken() credentials.Secret
	TightenLoose(l *credentials.Local)
	WriteLogin(ctx context.Context, lin *lineage.Lineage, o *credentials.OAuth, expect func(*credentials.Local) error) error
}

// backupStore is the store as the writer reads it (a restore) and names it.
type backupStore interface {
	Read(ctx context.Context) (*store.Doc, error)
	Describe() string
}

// backupLive is what the writer tells the live state.
type backupLive interface {
	update(f func(*telemetry.AgentState))
	changed()
	recordBackup(r *telemetry.BackupRecord)
}

// backupMetrics is what the writer tells the metrics writer.
type backupMetrics interface {
	login(o *credentials.OAuth)
	backup(at time.Time, lag time.Duration)
	resolved(prefixes ...string)
}

// restoreWaiter is a pass waiting for a clobbered file to be restored: the
// writer answers on it once (it is buffered), with the usable file or nil.
type restoreWaiter chan *credentials.Local

func newBackupWriter(c backupWriterConfig) *backupWriter {
	return &backupWriter{backupWriterConfig: c, lastState: -1, ready: c.NoToken}
}

// resume runs before the components: the backup a stop left pending, and a
// refresh answer a stop left unapplied (its login is the newest there is).
func (bw *backupWriter) resume(ctx context.Context) {
	bw.loadPending()
	switch res, err := bw.Engine.ApplyPendingRefresh(ctx, bw.Lineage); {
	case errors.Is(err, refresh.ErrNotWritten) && res.OAuth != nil:
		bw.Log.Event(eventlog.WARN, "a refresh saved before the last stop cannot go into the file: %v; the new login is backed up", err)
		bw.setPending(res.OAuth)
	case err != nil:
		bw.Log.Event(eventlog.WARN, "a refresh interrupted at the last stop could not be applied: %v", err)
	case res.Refreshed:
		bw.Log.Event(eventlog.RECOVERED, "applied the refresh response saved before the last stop")
	}
}

// Run is the writer's loop until ctx ends; then one bounded last flush. It
// looks at the file on fileChanged (the watch, the refresher, a pass), takes
// each login the refresher made from refreshed (in the file or not: a racer
// may have clobbered it already), the renewer's verdict from tokenOK and a
// pass waiting for a restore from restoreWaits; it tells the refresher which
// login the store holds (backed) and the renewer that a backup was refused
// (tokenRefused). It never fails: every failure is retried.
func (bw *backupWriter) Run(ctx context.Context, fileChanged <-chan struct{}, refreshed <-chan *credentials.OAuth, tokenOK <-chan bool,
	restoreWaits <-chan restoreWaiter, backed latest[string], tokenRefused signal) error {
	bw.refreshed, bw.backed, bw.tokenRefused = refreshed, backed, tokenRefused
	retry := clock.Stopped(bw.Clock)
	defer retry.Stop()
	bw.settle = clock.Stopped(bw.Clock)
	defer bw.settle.Stop()
	b := bw.Backoff.sequence()
	for {
		select {
		case <-ctx.Done():
			bw.finalFlush()
			bw.answerWaiters(nil)
			return nil
		case <-fileChanged:
		case <-retry.C():
		case <-bw.settle.C():
		case o := <-refreshed:
			bw.adoptRefreshed(o)
		case ok := <-tokenOK:
			if ok == bw.ready {
				continue // no news: a token that checks out again wakes nothing
			}
			bw.ready = ok
		case w := <-restoreWaits:
			bw.waiters = append(bw.waiters, w)
		}
		again := bw.scan(ctx)
		if bw.flush(ctx) {
			again = true
		}
		if err := bw.Lineage.Persist(); err != nil {
			bw.Diag.Warn("cannot record lineage", "err", err)
		}
		if again && ctx.Err() == nil {
			bw.Live.update(func(s *telemetry.AgentState) { s.Retries++ })
			retry.Reset(b.next())
		} else {
			b.reset()
		}
		if len(bw.waiters) > 0 {
			if l, err := credentials.Read(bw.CredentialsFile); err == nil && l.State == credentials.Usable {
				bw.answerWaiters(l)
			}
		}
		bw.Live.changed() // written by the live state, off this loop
	}
}

// awaitRestore is the agent's pass meeting a clobbered file (PassOptions):
// the writer restores it, after settle; wait for the file to be usable,
// bounded.
func awaitRestore(ctx context.Context, clk clock.Clock, restoreWaits chan<- restoreWaiter, settle time.Duration) *credentials.Local {
	reply := make(restoreWaiter, 1)
	select {
	case restoreWaits <- reply:
	case <-ctx.Done():
		return nil
	}
	t := clk.NewTimer(settle + 15*time.Second)
	defer t.Stop()
	select {
	case l := <-reply:
		return l
	case <-t.C():
		return nil
	case <-ctx.Done():
		return nil
	}
}

func (bw *backupWriter) answerWaiters(l *credentials.Local) {
	for _, w := range bw.waiters {
		w <- l // buffered, one answer each
	}
	bw.waiters = nil
}

// scan reads the file and decides: a new usable login becomes pending; a
// clobbered one is restored once it has settled; a deleted one is a logout,
// left alone. It returns true when it needs to run again later (a restore
// that could not reach the store).
func (bw *backupWriter) scan(ctx context.Context) bool {
	local, err := credentials.Read(bw.CredentialsFile)
	if err != nil {
		// Unreadable (mode, owner), a link loop, a directory: Claude cannot
		// use it either, and we cannot keep a copy of it, so nothing is
		// restored over it. Said once, as FAIL: the fleet alerts on FAIL.
		bw.reportClobber(fmt.Sprintf("cannot read the credentials file (%v); Claude cannot use it either: check its owner, mode and type", err))
		return false
	}
	bw.Engine.TightenLoose(local)
	bw.Metrics.login(local.OAuth)
	prev := bw.lastState
	bw.lastState = local.State
	if local.State != credentials.Clobbered {
		bw.clobberKey = ""
	}
	switch local.State {
	case credentials.Usable:
		bw.clobber.clear()
		bw.noteUsable(local.OAuth, prev != -1)
	case credentials.Clobbered:
		// Restore only a file that has stayed broken, unchanged, for Settle.
		if key := fileKey(local.Target); key != bw.clobberKey {
			bw.clobberKey = key
			bw.settle.Reset(bw.Settle)
			return false
		}
		return bw.restoreClobbered(ctx, local)
	case credentials.Missing, credentials.NoLogin:
		bw.clobber.clear()
		if prev == credentials.Usable || prev == credentials.Clobbered {
			bw.Log.Event(eventlog.WARN, "credentials file %s (a logout?); not restoring automatically: `claude auth login`, or `claude-auth-sync restore` to bring back the last backup",
				map[bool]string{true: "was removed", false: "no longer holds a login"}[local.State == credentials.Missing])
		}
	}
	return false
}

// noteUsable makes a usable login in the file pending, unless it is backed
// up, pending, older than the pending one, or a setup-token backfill. born
// says it appeared while we watched (its birth sets the refresh lead).
func (bw *backupWriter) noteUsable(o *credentials.OAuth, born bool) {
	if engine.IsBackfill(o, bw.Engine.SetupToken(), bw.Clock.Now()) {
		return // setup-token mode: no backups
	}
	if err := bw.Lineage.Note(o.RefreshToken()); err != nil { // durable after the backup (Persist)
		bw.Diag.Warn("cannot record lineage", "err", err)
	}
	if bw.supersededBy(o) {
		return
	}
	if born {
		bw.Engine.NoteNewLogin(o)
	}
	bw.setPending(o)
}

// supersededBy says whether o needs no backup: the store holds it, it is
// pending, or a newer login is pending.
func (bw *backupWriter) supersededBy(o *credentials.OAuth) bool {
	if bw.lastBacked != nil && bw.lastBacked.Equal(o) {
		return true
	}
	return bw.pending != nil && (bw.pending.oauth.Equal(o) || bw.Lineage.Order(o.RefreshToken(), bw.pending.oauth.RefreshToken()) < 0)
}

// adoptRefreshed makes a login the refresher made the pending backup (unless
// the store holds it, or a newer one is pending). One the file could not
// take has only Vault and pending-refresh as copies until it does; one the
// file took may be clobbered there before the watch shows it to us.
func (bw *backupWriter) adoptRefreshed(o *credentials.OAuth) {
	if err := bw.Lineage.Observe(o.RefreshToken()); err != nil {
		bw.Diag.Warn("cannot record lineage", "err", err)
	}
	if !bw.supersededBy(o) {
		bw.setPending(o)
	}
}

// markBacked records that the store holds o (backed up, or restored from it)
// and tells the refresher, which may be waiting for exactly that.
func (bw *backupWriter) markBacked(o *credentials.OAuth) {
	bw.lastBacked = o
	bw.backed.put(o.RefreshToken().Fingerprint())
}

// reportClobber logs a FAIL for a broken login once, not on every rescan.
func (bw *backupWriter) reportClobber(msg string) {
	if bw.clobber.first(msg) {
		bw.Log.Event(eventlog.FAIL, "%s", msg)
	}
}

// restoreClobbered restores a broken login: from the pending backup when
// there is one (it is the newest), else from the store. While a refresh of
// ours is out it waits for its login instead: the refresh spent the
// backup's refresh token. True: try again later.
func (bw *backupWriter) restoreClobbered(ctx context.Context, local *credentials.Local) bool {
	select {
	case o := <-bw.refreshed: // made just now: the loop has not taken it yet
		bw.adoptRefreshed(o)
	default:
	}
	if bw.pending == nil && bw.Flight.out() {
		return true
	}
	if bw.pending != nil {
		return bw.restorePending(ctx, local)
	}
	if !bw.ready {
		return true
	}
	doc, err := bw.Store.Read(ctx)
	if errors.Is(err, store.ErrUnreachable) {
		bw.Outage.down(err)
		return true
	}
	if err != nil {
		bw.reportClobber(fmt.Sprintf("credentials file is unusable (%v); the backup cannot be read: %v", local.Problem, err))
		return false
	}
	bw.Outage.up()
	vo, why := bw.Engine.RestoreCandidate(bw.Lineage, doc, local)
	if vo == nil {
		bw.reportClobber(fmt.Sprintf("credentials file is unusable (%v); %s; %s", local.Problem, why, engine.LoginHint()))
		return false
	}
	if err := bw.Engine.WriteLogin(ctx, bw.Lineage, vo, stillBroken); errors.Is(err, refresh.ErrChanged) {
		return false
	} else if err != nil {
		bw.reportClobber(fmt.Sprintf("credentials file is unusable (%v); restore failed: %v", local.Problem, err))
		return false
	}
	bw.markBacked(vo)
	bw.Log.Event(eventlog.RECOVERED, "credentials file was clobbered (%v); restored the login from the backup (v%d)", local.Problem, doc.Version)
	return false
}

// restorePending puts the pending login back over a broken file, or the
// backup's when that is newer.
func (bw *backupWriter) restorePending(ctx context.Context, local *credentials.Local) bool {
	src, from := bw.pending.oauth, "the newest login (not yet in the backup)"
	// The pending login may be stale: left in pending-backup.json by an
	// agent that died, while another process of ours rotated and backed up
	// a newer one. Restoring it would put a spent refresh token in the file
	// (invalid_grant: a logout). Prefer the backup when it is newer; if this
	// host has seen a newer login, wait for the backup.
	_ = bw.Lineage.Reload()
	if !bw.Lineage.Latest(src.RefreshToken()) && !bw.ready {
		return true
	}
	if bw.ready {
		if doc, err := bw.Store.Read(ctx); err == nil {
			if vo, _ := bw.Engine.RestoreCandidate(bw.Lineage, doc, local); vo != nil && !vo.Equal(src) && engine.Newer(bw.Lineage, vo, src) {
				src, from = vo, fmt.Sprintf("the login from the backup (v%d; the pending one was older)", doc.Version)
				bw.clearPending()
			}
		}
	}
	if err := bw.Engine.WriteLogin(ctx, bw.Lineage, src, stillBroken); errors.Is(err, refresh.ErrChanged) {
		return false
	} else if err != nil {
		bw.Log.Event(eventlog.FAIL, "credentials file is unusable (%v); restoring the newest login failed: %v", local.Problem, err)
		return false
	}
	if bw.pending == nil {
		bw.markBacked(src)
	}
	bw.Log.Event(eventlog.RECOVERED, "credentials file was clobbered (%v); restored %s", local.Problem, from)
	return false
}

// stillBroken is a restore's expectation: the file is still not usable.
func stillBroken(cur *credentials.Local) error {
	if cur.State == credentials.Usable {
		return errors.New("the file became usable meanwhile")
	}
	return nil
}

// flush writes the pending login to the store; true means "retry later".
func (bw *backupWriter) flush(ctx context.Context) bool {
	if bw.pending == nil {
		return false
	}
	if !bw.ready || (bw.Accepted != nil && !bw.Accepted()) {
		// No token to write with: the renewer's verdict, or a pass that
		// since refused the token file, and the renewer is told to look again.
		if bw.ready && bw.tokenRefused != nil {
			bw.tokenRefused.poke()
		}
		bw.persistPending()
		return true
	}
	p := bw.pending
	res, err := bw.Engine.Backup(ctx, bw.Lineage, p.oauth)
	if err != nil {
		bw.persistPending() // it waits: on disk until the store has it
	}
	switch {
	case err == nil:
	case errors.Is(err, store.ErrUnreachable):
		bw.Outage.down(err)
		return true
	case ctx.Err() != nil:
		return true
	default:
		// Said once per kind of failure: a refused token refuses the read
		// and the write alike, and a retry's other step is no news.
		key := err.Error()
		if errors.Is(err, store.ErrForbidden) {
			key = "forbidden"
		}
		if bw.backupFail.first(key) {
			bw.Log.Event(eventlog.FAIL, "backup failed, will retry: %v", err)
		}
		if errors.Is(err, store.ErrForbidden) {
			// Revoked or expired, or re-provisioned since: the token
			// renewer re-reads the token file and checks it now.
			bw.tokenRefused.poke()
		}
		return true
	}
	if bw.backupFail.clear() != "" {
		bw.Metrics.resolved("backup failed")
	}
	bw.Outage.up()
	now := bw.Clock.Now()
	lag := now.Sub(p.seenAt)
	bw.clearPending()
	bw.markBacked(p.oauth)
	if !res.Written {
		bw.Diag.Info("no backup needed", "why", res.Message)
		return false
	}
	bw.Live.update(func(s *telemetry.AgentState) {
		s.LastBackup, s.LastBackupVer, s.LastBackupLagMs = &now, res.Version, float64(lag.Microseconds())/1000
		s.Backups++
	})
	bw.Metrics.backup(now, lag)
	what := "the changed login"
	if res.Version == 1 {
		what = "the login" // the document's first: nothing in the store changed
	}
	bw.Log.Event(eventlog.OK, "backed up %s to %s (v%d, %s after the change)", what, bw.Store.Describe(), res.Version, lag.Round(time.Millisecond))
	bw.Live.recordBackup(bw.Engine.BackupRecord(res, p.oauth))
	return false
}

// finalFlush makes one bounded attempt to write a pending backup on stop; what
// it cannot write stays in pending-backup.json for the next start.
func (bw *backupWriter) finalFlush() {
	if bw.pending == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if bw.flush(ctx) {
		bw.Log.Event(eventlog.WARN, "stopping with a backup pending; it is kept in %s and written at the next start", bw.pendingPath())
	}
}

// fileKey names a file's current content cheaply: inode, size and mtime.
func fileKey(path string) string {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return "missing"
	}
	// The mode too: a chmod that opens the token file to others is news.
	return fmt.Sprintf("%d:%d:%d.%d:%o", st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Mode)
}

func (bw *backupWriter) clearPending() {
	if bw.pending == nil {
		return
	}
	if bw.pending.persisted {
		_ = os.Remove(bw.pendingPath())
	}
	bw.pending = nil
	bw.Live.update(func(s *telemetry.AgentState) { s.Pending, s.PendingSince = false, nil })
}
