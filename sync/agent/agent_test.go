package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/mcp"
	"github.com/claude-auth-sync/claude-auth-sync/sync/passrequest"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
	"github.com/claude-auth-sync/claude-auth-sync/watcher"
)

// The components are tested one by one on a fake clock, with the real file
// store in a temp dir behind a switch that can take it "down". Waits are for
// events (a status line, a store write, a timer armed on the fake clock),
// bounded so a component that never gets there fails the test; a claim that
// something did not happen is checked at a point the component is known to
// have reached (asleep on the clock), never after a guessed pause.

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

const bound = 10 * time.Second // the longest any awaited event may take

// switchStore is the real file store with a switch: while down, every call
// fails as an unreachable Vault would. Each write is announced on writes.
type switchStore struct {
	*store.File
	down   atomic.Bool
	writes chan *store.Doc
}

func (s *switchStore) Read(ctx context.Context) (*store.Doc, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("%w: test switch", store.ErrUnreachable)
	}
	return s.File.Read(ctx)
}

func (s *switchStore) Update(ctx context.Context, fn func(cur *store.Doc) (map[string]any, error)) (*store.Doc, error) {
	if s.down.Load() {
		return nil, fmt.Errorf("%w: test switch", store.ErrUnreachable)
	}
	d, err := s.File.Update(ctx, fn)
	if err == nil {
		select {
		case s.writes <- d:
		default:
		}
	}
	return d, err
}

type rig struct {
	t      *testing.T
	clk    *clock.Fake
	e      *engine.Engine
	st     *switchStore
	events chan string // "STATUS message" of each event
	opt    Options
	rs     *requestServer // set by startScheduler
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	state := filepath.Join(home, ".local", "state", "claude-auth-sync")
	for _, d := range []string{filepath.Join(home, ".claude"), state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Config{
		User: "alice", Home: home, ClaudeConfigDir: filepath.Join(home, ".claude"),
		CredentialsFile: filepath.Join(home, ".claude", ".credentials.json"),
		StateDir:        state, LogFile: filepath.Join(state, "sync.log"),
		TokenEnvFile:   filepath.Join(home, ".config", "claude-auth-sync", "claude-oauth.env"),
		LocalStoreFile: filepath.Join(dir, "backup.json"), Store: "file",
		CheckInterval: 6 * time.Hour, RefreshLead: 15 * time.Minute,
		Sources: map[string]string{},
	}
	clk := clock.NewFake(t0)
	st := &switchStore{File: store.NewFile(cfg.LocalStoreFile), writes: make(chan *store.Doc, 16)}
	r := &rig{t: t, clk: clk, st: st, events: make(chan string, 64),
		opt: Options{RetryMin: time.Second, RetryMax: time.Minute, Settle: time.Second, Rescan: time.Hour, CheckInterval: 6 * time.Hour}}
	r.e = &engine.Engine{Cfg: cfg, Store: st, Clock: clk,
		Log:  &eventlog.EventLog{User: cfg.User, LogFile: cfg.LogFile, Clock: clk},
		Diag: slog.New(slog.NewTextHandler(io.Discard, nil)), Checker: passingChecker{}}
	engine.Assemble(r.e, nil)
	r.e.Log.AfterEvent = func(eventlog.Status) {}
	r.watchEvents()
	return r
}

// watchEvents has every status line sent to r.events, from sync.log.
func (r *rig) watchEvents() {
	seen := 0
	var mu sync.Mutex
	r.e.Log.AfterEvent = func(eventlog.Status) {
		mu.Lock()
		defer mu.Unlock()
		data, _ := os.ReadFile(r.e.Cfg.LogFile)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		for ; seen < len(lines); seen++ {
			// "<time> <STATUS> <message>"
			if _, rest, ok := strings.Cut(lines[seen], " "); ok {
				r.events <- rest
			}
		}
	}
}

// await waits for a status line starting with prefix, skipping others.
func (r *rig) await(prefix string) string {
	r.t.Helper()
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for {
		select {
		case ev := <-r.events:
			if strings.HasPrefix(ev, prefix) {
				return ev
			}
		case <-deadline.C:
			r.t.Fatalf("no %q line within %s", prefix, bound)
		}
	}
}

// awaitAll waits for a status line starting with each prefix, in any order
// (components log concurrently).
func (r *rig) awaitAll(prefixes ...string) {
	r.t.Helper()
	left := map[string]bool{}
	for _, p := range prefixes {
		left[p] = true
	}
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	for len(left) > 0 {
		select {
		case ev := <-r.events:
			for p := range left {
				if strings.HasPrefix(ev, p) {
					delete(left, p)
					break
				}
			}
		case <-deadline.C:
			r.t.Fatalf("no %v lines within %s", left, bound)
		}
	}
}

// noEvent fails if a status line was logged (drains what is there).
func (r *rig) noEvent(what string) {
	r.t.Helper()
	select {
	case ev := <-r.events:
		r.t.Fatalf("%s: got %q; want no status line yet", what, ev)
	default:
	}
}

// armed waits until n timers run on the fake clock: the components went to sleep.
func (r *rig) armed(n int) {
	r.t.Helper()
	done := make(chan struct{})
	t := time.AfterFunc(bound, func() { close(done) })
	defer t.Stop()
	if !r.clk.WaitArmed(n, done) {
		r.t.Fatalf("fewer than %d timers armed within %s (%d armed)", n, bound, r.clk.Armed())
	}
}

// awaitWrite waits for a store write.
func (r *rig) awaitWrite() *store.Doc {
	r.t.Helper()
	select {
	case d := <-r.st.writes:
		return d
	case <-time.After(bound):
		r.t.Fatalf("no backup written within %s", bound)
		return nil
	}
}

type login struct {
	access, refresh string
	expires         time.Time
}

func (l login) json() string {
	return fmt.Sprintf(`{"claudeAiOauth":{"accessToken":%q,"refreshToken":%q,"expiresAt":%d,"scopes":["user:inference"],"subscriptionType":"max"}}`,
		l.access, l.refresh, l.expires.UnixMilli())
}

var rotation atomic.Int64

// newLogin is a fresh login valid for life from the fake clock's now.
func (r *rig) newLogin(life time.Duration) login {
	n := rotation.Add(1)
	return login{access: fmt.Sprintf("sk-ant-oat01-test-access-%04d", n), refresh: fmt.Sprintf("sk-ant-ort01-test-refresh-%04d", n),
		expires: r.clk.Now().Add(life)}
}

// writeFile puts content at the credentials file by rename, as Claude does.
func (r *rig) writeFile(content string) {
	r.t.Helper()
	tmp := r.e.Cfg.CredentialsFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.e.Cfg.CredentialsFile); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) fileLogin() *credentials.OAuth {
	r.t.Helper()
	l, err := credentials.Read(r.e.Cfg.CredentialsFile)
	if err != nil || l.State != credentials.Usable {
		r.t.Fatalf("credentials file: %v, %v; want a usable login", l, err)
	}
	return l.OAuth
}

// storeRefresh is the refresh token's fingerprint in the store's backup.
func (r *rig) storeHolds(l login) bool {
	d, err := r.st.File.Read(context.Background())
	if err != nil || !d.Exists {
		return false
	}
	o, err := d.OAuth()
	return err == nil && o != nil && string(o.RefreshToken()) == l.refresh
}

// storeComesToHold waits up to bound for the store's backup to be l.
func (r *rig) storeComesToHold(l login) bool {
	deadline := time.Now().Add(bound)
	for !r.storeHolds(l) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// graph is the agent's parts and the channels between them, built as Run
// builds them, none started: a test starts the ones it looks at and plays
// the others through their channels.
type graph struct {
	r                                       *rig
	bw                                      *backupWriter
	rf                                      *refresher
	rn                                      *renewer
	ps                                      *passScheduler
	live                                    *liveState
	fileChanged, refreshCheck, tokenRecheck signal
	backed                                  latest[string]
	refreshed                               latest[*credentials.OAuth]
	tokenOK, firstTokenVerdict              latest[bool]
	restoreWaits                            chan restoreWaiter
	requests                                chan passRequest
}

// components builds the agent's parts, as Run does, without starting them.
func (r *rig) components() *graph {
	lin, err := r.e.OpenLineage()
	if err != nil {
		r.t.Fatal(err)
	}
	e := engineView{r.e}
	common := base{Log: e.Log, Diag: e.Diag, Clock: e.Clock}
	pol := backoffPolicy{min: r.opt.RetryMin, max: r.opt.RetryMax}
	live := newLiveState(liveConfig{base: common, Rescan: r.opt.Rescan, CredentialsFile: e.Cfg.CredentialsFile, StateDir: e.Cfg.StateDir, MergeRecord: e.MergeRecord})
	m := r.metrics()
	out := newOutage(outageConfig{base: common, State: live.update, Resolved: m.resolved})
	flight := &refreshFlight{}
	return &graph{r: r, live: live,
		bw: newBackupWriter(backupWriterConfig{base: common, Engine: e, Store: e.Store, Lineage: lin, Backoff: pol, Settle: r.opt.Settle,
			CredentialsFile: e.Cfg.CredentialsFile, StateDir: e.Cfg.StateDir, NoToken: e.Vault == nil, Live: live, Metrics: m, Outage: out, Flight: flight}),
		rf: newRefresher(refresherConfig{base: common, Engine: e, Lineage: lin, Backoff: pol, CredentialsFile: e.Cfg.CredentialsFile,
			State: live.update, Resolved: m.resolved, Flight: flight}),
		rn: newRenewer(renewerConfig{base: common, Token: tokenOf(e.Engine), TokenFile: e.Cfg.VaultTokenFile, Backoff: pol, Outage: out,
			State: live.update, Resolved: m.resolved, Verdict: m.token}),
		ps: newPassScheduler(passSchedulerConfig{base: common, Engine: e, CredentialsFile: e.Cfg.CredentialsFile, CheckInterval: r.opt.CheckInterval,
			CheckSpread: r.opt.CheckSpread, Settle: r.opt.Settle, State: live.update, Save: live.save, Checked: m.checked}),
		fileChanged: newSignal(), refreshCheck: newSignal(), tokenRecheck: newSignal(),
		backed: newLatest[string](), refreshed: newLatest[*credentials.OAuth](),
		tokenOK: newLatest[bool](), firstTokenVerdict: newLatest[bool](),
		restoreWaits: make(chan restoreWaiter), requests: make(chan passRequest)}
}

// metrics is a metrics writer for the rig's engine, as Run makes it.
func (r *rig) metrics() *metricsWriter {
	e := engineView{r.e}
	return newMetricsWriter(metricsConfig{Engine: e, Clock: e.Clock, User: e.Cfg.User, CredentialsFile: e.Cfg.CredentialsFile,
		Prom: e.Cfg.MetricsDir != "", Health: e.Vault != nil && e.Cfg.HostID != ""})
}

func (g *graph) runWriter() {
	g.r.run("backup writer", func(ctx context.Context) error {
		return g.bw.Run(ctx, g.fileChanged, g.refreshed, g.tokenOK, g.restoreWaits, g.backed, g.tokenRecheck)
	})
}

func (g *graph) runRefresher() {
	g.r.run("refresher", func(ctx context.Context) error {
		return g.rf.Run(ctx, g.refreshCheck, g.backed, g.fileChanged, g.refreshed)
	})
}

// runRenewer starts the renewer, and the token file's watch with Vault.
func (g *graph) runRenewer() {
	var tokenFileChanged <-chan watcher.Change
	if g.r.e.Vault != nil {
		w := watcher.New(g.r.e.Cfg.VaultTokenFile, watcher.Options{Rescan: g.r.opt.Rescan})
		tokenFileChanged = w.C()
		g.r.run("token file watch", w.Run)
	}
	g.r.run("renewer", func(ctx context.Context) error {
		return g.rn.Run(ctx, tokenFileChanged, g.tokenRecheck, g.tokenOK, g.firstTokenVerdict)
	})
}

func (g *graph) runScheduler() {
	g.r.run("pass scheduler", func(ctx context.Context) error {
		return g.ps.Run(ctx, nil, g.requests, g.firstTokenVerdict, g.restoreWaits, g.fileChanged)
	})
}

// run starts component runs until the test ends, and fails the test if it
// returns an error or does not return once stopped.
func (r *rig) run(name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				r.t.Errorf("%s: %v", name, err)
			}
		case <-time.After(bound):
			r.t.Errorf("%s did not stop within %s of its context ending", name, bound)
		}
	})
}

// fakeRefresh makes the engine's token requests write *next into the file
// by rename, as a refresh does, counting them.
func (r *rig) fakeRefresh(calls *atomic.Int32, next *login) {
	r.e.Refresher.Via = func(ctx context.Context, force bool, sawFP string) (refresh.ClaudeResult, error) {
		calls.Add(1)
		r.writeFile(next.json())
		return refresh.ClaudeResult{Refreshed: true, OAuth: r.fileLogin(), Message: "refreshed"}, nil
	}
}

type passingChecker struct{}

func (passingChecker) Run(context.Context, ...string) check.Result {
	return check.Result{Kind: check.OK}
}

func TestBackupWriterBacksUpEachNewLogin(t *testing.T) {
	r := newRig(t)
	g := r.components()
	g.runWriter()
	for i := 0; i < 3; i++ {
		l := r.newLogin(8 * time.Hour)
		r.writeFile(l.json())
		g.fileChanged.poke()
		r.awaitWrite()
		// The first backup is of the login, not of a change to it.
		want := "OK backed up the changed login"
		if i == 0 {
			want = "OK backed up the login"
		}
		if ev := r.await("OK backed up the "); !strings.HasPrefix(ev, want) || !strings.Contains(ev, fmt.Sprintf("(v%d,", i+1)) {
			t.Errorf("rotation %d: %q; want %q, version %d", i, ev, want, i+1)
		}
		if !r.storeHolds(l) {
			t.Fatalf("rotation %d: the store does not hold the new login", i)
		}
	}
	// The same login again is no backup.
	g.fileChanged.poke()
	g.fileChanged.poke()
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.awaitWrite()
	if d, _ := r.st.File.Read(context.Background()); d.Version != 4 {
		t.Errorf("store at v%d after 4 distinct logins and repeated wake-ups; want v4", d.Version)
	}
}

func TestBackupWriterKeepsTheLoginPendingWhileTheStoreIsDown(t *testing.T) {
	r := newRig(t)
	g := r.components()
	bw, live := g.bw, g.live
	r.st.down.Store(true)
	g.runWriter()
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.await("WARN vault unreachable")
	r.armed(1) // the retry, on the backoff
	if _, err := os.Stat(bw.pendingPath()); err != nil {
		t.Fatalf("pending-backup.json: %v; want the login kept on disk while the store is down", err)
	}
	if s := live.snapshot(); !s.Pending || s.Retries < 1 {
		t.Errorf("live state pending=%v retries=%d; want pending, retried", s.Pending, s.Retries)
	}
	r.st.down.Store(false)
	r.clk.Advance(r.opt.RetryMax)
	r.awaitWrite()
	r.awaitAll("OK vault reachable again", "OK backed up the ")
	if !r.storeHolds(l) {
		t.Fatal("the store does not hold the login after the outage")
	}
	if _, err := os.Stat(bw.pendingPath()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending-backup.json after the backup: %v; want it removed", err)
	}
}

func TestBackupWriterRestoresAClobberedFileOnceItSettles(t *testing.T) {
	r := newRig(t)
	g := r.components()
	g.runWriter()
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.awaitWrite()
	r.await("OK backed up")

	// A racing writer persists an empty refresh token.
	r.writeFile(login{access: l.access, refresh: "", expires: l.expires}.json())
	g.fileChanged.poke()
	r.armed(1) // the settle timer: it waits for the file to stay as it is
	r.noEvent("a clobbered file before it settled")
	if l, _ := credentials.Read(r.e.Cfg.CredentialsFile); l.State != credentials.Clobbered {
		t.Fatalf("file restored before it settled: %v", l.State)
	}
	r.clk.Advance(r.opt.Settle)
	if ev := r.await("RECOVERED credentials file was clobbered"); !strings.Contains(ev, "restored the login from the backup (v1)") &&
		!strings.Contains(ev, "restored the newest login") {
		t.Errorf("restore line %q; want it to say where the login came from", ev)
	}
	if got := r.fileLogin(); string(got.RefreshToken()) != l.refresh {
		t.Error("the restored file does not hold the backed-up login")
	}
}

func TestBackupWriterAnswersAPassWaitingForARestore(t *testing.T) {
	r := newRig(t)
	g := r.components()
	g.runWriter()
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.await("OK backed up")
	r.writeFile(`{"claudeAiOauth":{"accessToken":"","refreshToken":""}}`)

	got := make(chan *credentials.Local, 1)
	go func() { got <- awaitRestore(context.Background(), r.clk, g.restoreWaits, r.opt.Settle) }()
	r.armed(2) // the pass's bound and the writer's settle timer
	select {
	case l := <-got:
		t.Fatalf("the pass got %v before the restore", l)
	default:
	}
	r.clk.Advance(r.opt.Settle)
	select {
	case cur := <-got:
		if cur == nil || cur.State != credentials.Usable || string(cur.OAuth.RefreshToken()) != l.refresh {
			t.Fatalf("the pass got %v; want the restored login", cur)
		}
	case <-time.After(bound):
		t.Fatal("the waiting pass got no answer after the restore")
	}
}

func TestRefresherRefreshesWhenDueAndNotBefore(t *testing.T) {
	r := newRig(t)
	var calls atomic.Int32
	var next login
	r.fakeRefresh(&calls, &next)
	g := r.components()
	g.runWriter()
	g.runRefresher()
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	g.fileChanged.poke()
	g.refreshCheck.poke()
	r.await("OK backed up")
	// Asleep until expiry minus the lead (15 min).
	r.armed(1)
	if at, _ := r.clk.Next(); !at.Equal(l.expires.Add(-15 * time.Minute)) {
		t.Errorf("refresher sleeps until %v; want %v (expiry minus the lead)", at, l.expires.Add(-15*time.Minute))
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d refreshes before the login was due", n)
	}
	next = r.newLogin(8 * time.Hour)
	r.clk.Set(l.expires.Add(-15 * time.Minute))
	r.await("OK refreshed the login ahead of Claude") // logged before the writer is woken
	r.awaitWrite()
	r.await("OK backed up")
	if n := calls.Load(); n != 1 {
		t.Errorf("%d refreshes; want 1", n)
	}
	if !r.storeHolds(next) {
		t.Error("the refreshed login is not in the store")
	}
}

func TestRefresherWaitsForTheBackupBeforeSpendingTheToken(t *testing.T) {
	r := newRig(t)
	var calls atomic.Int32
	var next login
	r.fakeRefresh(&calls, &next)
	g := r.components()
	r.st.down.Store(true) // the backup cannot be written yet
	g.runWriter()
	// Due at once: 14 minutes left, inside the 15-minute lead.
	l := r.newLogin(14 * time.Minute)
	r.writeFile(l.json())
	next = r.newLogin(8 * time.Hour)
	g.runRefresher()
	g.fileChanged.poke()
	r.await("WARN vault unreachable")
	r.armed(2) // the writer's retry and the refresher's wait for the backup
	if n := calls.Load(); n != 0 {
		t.Fatalf("refreshed %d times while the login was not in the store; want none", n)
	}
	r.st.down.Store(false)
	r.clk.Advance(r.opt.RetryMax) // the writer retries, not yet the refresher's limit
	r.awaitAll("OK backed up the ", "OK refreshed the login ahead of Claude")
	if n := calls.Load(); n != 1 {
		t.Errorf("%d refreshes after the backup; want 1", n)
	}
}

// clobberingRefresh makes the engine's token requests do what a refresh
// that loses to a racer does: write *next into the file, then the racer's
// dead login over it (empty tokens) at once; the answer still holds next.
// Before it returns it waits for release (nil: it does not wait).
func (r *rig) clobberingRefresh(calls *atomic.Int32, next *login, clobbered chan<- struct{}, release <-chan struct{}) {
	r.e.Refresher.Via = func(ctx context.Context, force bool, sawFP string) (refresh.ClaudeResult, error) {
		calls.Add(1)
		r.writeFile(next.json())
		o, err := credentials.ParseOAuth([]byte(next.json()[len(`{"claudeAiOauth":`) : len(next.json())-1]))
		if err != nil {
			r.t.Error(err)
		}
		r.writeFile(login{access: "", refresh: "", expires: time.UnixMilli(0)}.json())
		if clobbered != nil {
			clobbered <- struct{}{}
		}
		if release != nil {
			<-release
		}
		return refresh.ClaudeResult{Refreshed: true, OAuth: o, Message: "refreshed"}, nil
	}
}

// A racer clobbers the file the moment our refresh has written the new
// login, before the writer has seen it there: the backup's refresh token is
// spent, so the restore must put back the login the refresh made.
func TestAClobberRightAfterOurRefreshRestoresTheRefreshedLogin(t *testing.T) {
	r := newRig(t)
	var calls atomic.Int32
	var next login
	r.clobberingRefresh(&calls, &next, nil, nil)
	g := r.components()
	g.runWriter()
	l := r.newLogin(14 * time.Minute) // due at once
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.await("OK backed up")
	next = r.newLogin(8 * time.Hour)
	g.runRefresher()
	g.refreshCheck.poke()
	r.await("OK refreshed the login ahead of Claude")
	r.armed(1) // the writer's settle timer on the clobbered file (the refresher sleeps on no timer: no usable login)
	r.clk.Advance(r.opt.Settle)
	// From the pending login, or from the store once the writer has backed
	// it up there (v2): either way, the refreshed login.
	ev := r.await("RECOVERED credentials file was clobbered")
	if strings.Contains(ev, "(v1)") {
		t.Errorf("restore line %q; want the refreshed login restored, not the spent backup", ev)
	}
	if got := r.fileLogin(); string(got.RefreshToken()) != next.refresh {
		t.Error("the file holds the spent login from the backup; want the refreshed one")
	}
	// Restored from the pending login, the writer backs it up next.
	if !r.storeComesToHold(next) {
		t.Errorf("the refreshed login is not in the store within %s", bound)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d refreshes; want 1", n)
	}
}

// The same race, but the writer sees the clobber settle while the refresh's
// answer has not reached the agent yet: it waits for it, and restores it.
func TestAClobberDuringOurRefreshWaitsForItsLogin(t *testing.T) {
	r := newRig(t)
	var calls atomic.Int32
	var next login
	clobbered, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // a failure before the release does not leave the refresh hanging
	r.clobberingRefresh(&calls, &next, clobbered, release)
	g := r.components()
	g.runWriter()
	l := r.newLogin(14 * time.Minute)
	r.writeFile(l.json())
	g.fileChanged.poke()
	r.await("OK backed up")
	next = r.newLogin(8 * time.Hour)
	g.runRefresher()
	g.refreshCheck.poke()
	<-clobbered
	g.fileChanged.poke() // the watch shows the writer the clobbered file
	r.armed(1)           // its settle timer
	r.clk.Advance(r.opt.Settle)
	r.armed(1) // it put the restore off: its retry timer
	if got, _ := credentials.Read(r.e.Cfg.CredentialsFile); got.State != credentials.Clobbered {
		t.Fatalf("the file was restored (%v) while our refresh was out; want it left for the refresh's login", got.State)
	}
	r.noEvent("a restore while our refresh was out")
	free()
	ev := r.await("RECOVERED credentials file was clobbered")
	if !strings.Contains(ev, "restored the newest login") {
		t.Errorf("restore line %q; want the refreshed login restored", ev)
	}
	if got := r.fileLogin(); string(got.RefreshToken()) != next.refresh {
		t.Error("the file does not hold the refreshed login")
	}
}

func TestPassSchedulerFirstCheck(t *testing.T) {
	for _, c := range []struct {
		name   string
		record *telemetry.CheckRecord // nil: none
		same   bool                   // the record's subject is the current one
		spread time.Duration
		want   func(d time.Duration) bool
		why    string
	}{
		{name: "no record, no spread", spread: 0, want: func(d time.Duration) bool { return d == 0 }, why: "no check on record"},
		{name: "no record, spread", spread: time.Minute, want: func(d time.Duration) bool { return d >= 0 && d < time.Minute }, why: "no check on record; spread over 1m0s"},
		{name: "last check failed", record: &telemetry.CheckRecord{At: t0.Add(-time.Hour), Result: check.Auth.String()}, spread: time.Minute,
			want: func(d time.Duration) bool { return d == 0 }, why: "the last check did not pass"},
		{name: "fresh and unchanged", record: &telemetry.CheckRecord{At: t0.Add(-time.Hour), Result: check.OK.String()}, same: true, spread: time.Minute,
			want: func(d time.Duration) bool { return d == 5*time.Hour }, why: "the last check passed and nothing changed since"},
		{name: "fresh but another login", record: &telemetry.CheckRecord{At: t0.Add(-time.Hour), Result: check.OK.String()}, spread: 0,
			want: func(d time.Duration) bool { return d == 0 }, why: "the login changed since the last check"},
		{name: "stale", record: &telemetry.CheckRecord{At: t0.Add(-7 * time.Hour), Result: check.OK.String()}, same: true, spread: 0,
			want: func(d time.Duration) bool { return d == 0 }, why: "the last check is older than 6h0m0s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t)
			r.opt.CheckSpread = c.spread
			l := r.newLogin(8 * time.Hour)
			r.writeFile(l.json())
			if c.record != nil {
				rec := *c.record
				sub := telemetry.CheckSubject{Login: "someone else's"}
				if c.same {
					sub = r.e.Telemetry.CurrentSubject(context.Background(), true)
				}
				rec.Subject = &sub
				if err := r.e.Telemetry.MergeRecord(&telemetry.Record{LastCheck: &rec}); err != nil {
					t.Fatal(err)
				}
			}
			g := r.components()
			g.runRenewer()
			d, why := g.ps.firstCheck(context.Background(), g.firstTokenVerdict)
			if !c.want(d) || why != c.why {
				t.Errorf("firstCheck = %v, %q; want %q", d, why, c.why)
			}
		})
	}
}

func TestMetricsAreWrittenFromMemoryNotReadBack(t *testing.T) {
	r := newRig(t)
	r.e.Cfg.MetricsDir = t.TempDir()
	prom := telemetry.MetricsFile(r.e.Cfg.MetricsDir, "alice")
	if err := os.Mkdir(filepath.Dir(prom), 0o700); err != nil { // provision's part
		t.Fatal(err)
	}
	// Something forged in the name beforehand is replaced, never read.
	if err := os.WriteFile(prom, []byte("claude_auth_sync_failures_total{user=\"alice\"} 999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mw := r.metrics()
	l := r.newLogin(8 * time.Hour)
	o, err := credentials.ParseOAuth(json.RawMessage(strings.TrimSuffix(strings.TrimPrefix(l.json(), `{"claudeAiOauth":`), "}")))
	if err != nil {
		t.Fatal(err)
	}
	mw.login(o)
	mw.event(eventlog.FAIL)
	mw.event(eventlog.WARN) // counts nothing
	mw.backup(t0, 3*time.Millisecond)
	mw.flush()
	data, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`claude_auth_sync_failures_total{user="alice"} 1` + "\n",
		fmt.Sprintf(`claude_auth_sync_credential_expiry_timestamp_seconds{user="alice"} %d`+"\n", l.expires.Unix()),
		fmt.Sprintf(`claude_auth_sync_last_backup_timestamp_seconds{user="alice"} %d`+"\n", t0.Unix()),
		`claude_auth_sync_last_backup_lag_seconds{user="alice"} 0.003` + "\n",
	} {
		if !strings.Contains(string(data), want) {
			t.Errorf("metrics file lacks %q:\n%s", want, data)
		}
	}
	// The count survives a restart through the state dir.
	if c := r.metrics(); c.m.FailuresTotal != 1 {
		t.Errorf("a new metrics writer starts at %d failures; want 1", c.m.FailuresTotal)
	}
}

// The MCP series are mcp.json as it is at each write: all zero without one,
// and what it says once it changed, at the next write (nothing tells the
// writer of the change).
func TestMetricsReadMCPStateAtEachWrite(t *testing.T) {
	r := newRig(t)
	r.e.Cfg.MetricsDir = t.TempDir()
	prom := telemetry.MetricsFile(r.e.Cfg.MetricsDir, "alice")
	if err := os.Mkdir(filepath.Dir(prom), 0o700); err != nil {
		t.Fatal(err)
	}
	mw := r.metrics()
	mw.flush()
	data, _ := os.ReadFile(prom)
	for _, want := range []string{`claude_auth_sync_mcp_refreshes_total{user="alice"} 0` + "\n",
		`claude_auth_sync_mcp_servers{user="alice",state="needs-login"} 0` + "\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("without mcp.json, the metrics file lacks %q:\n%s", want, data)
		}
	}
	st := `{"refreshes_total":5,"failures_total":1,"servers":[{"name":"linear","id":"ab12","state":"needs-login"}]}`
	if err := os.WriteFile(filepath.Join(r.e.Cfg.StateDir, mcp.StateFile), []byte(st), 0o600); err != nil {
		t.Fatal(err)
	}
	mw.event(eventlog.WARN) // any status line writes the file again
	mw.flush()
	data, _ = os.ReadFile(prom)
	for _, want := range []string{`claude_auth_sync_mcp_refreshes_total{user="alice"} 5` + "\n",
		`claude_auth_sync_mcp_refresh_failures_total{user="alice"} 1` + "\n",
		`claude_auth_sync_mcp_servers{user="alice",state="needs-login"} 1` + "\n",
		`claude_auth_sync_mcp_servers{user="alice",state="ok"} 0` + "\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("after mcp.json changed, the metrics file lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), "linear") || strings.Contains(string(data), "ab12") {
		t.Errorf("a server's name or id reached the metrics file:\n%s", data)
	}
}

func TestRunStopsCleanlyAndRefusesASecondAgent(t *testing.T) {
	r := newRig(t)
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	opt := r.opt
	opt.Started = started
	opt.CheckSpread = time.Hour // the first pass waits on the fake clock: the writer backs up
	go func() { done <- Run(ctx, r.e, opt) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
	r.awaitWrite() // the watcher's first look backs the login up

	if err := Run(context.Background(), r.e, r.opt); !errors.Is(err, ErrAgentRunning) {
		t.Errorf("a second agent: %v; want ErrAgentRunning", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent: %v; want a clean stop", err)
		}
	case <-time.After(bound):
		t.Fatal("the agent did not stop within the bound after its context ended")
	}
	data, _ := os.ReadFile(r.e.Cfg.LogFile)
	if !strings.Contains(string(data), " OK agent stopped") {
		t.Errorf("sync.log has no stop line:\n%s", data)
	}
	if s := telemetry.LoadAgentState(r.e.Cfg.StateDir); s == nil || s.Backups != 1 || s.LastBackupVer != 1 {
		t.Errorf("agent.json = %+v; want the one backup", s)
	}
	if rec := r.e.Telemetry.LoadRecord(); rec.LastBackup == nil || rec.LastBackup.Version != 1 {
		t.Errorf("state.json's last backup = %+v; want v1 (written by the live state before the stop)", rec.LastBackup)
	}
	if !r.storeHolds(l) {
		t.Error("the store does not hold the login")
	}
}

// brokenSocket is an agent socket whose accept fails when the test says so.
type brokenSocket struct{ fail chan error }

func (b brokenSocket) Serve(ctx context.Context, _ func(context.Context, passrequest.Kind) passrequest.Answer, _ func(int, string)) error {
	select {
	case err := <-b.fail:
		return fmt.Errorf("pass requests: %w", err)
	case <-ctx.Done():
		return nil
	}
}

func (brokenSocket) Path() string { return "agent.sock" }

// A component's fatal error (here the request server's: its socket stops
// accepting) stops every other component, and Run returns it: the unit
// restarts the agent rather than leaving it up without a part.
func TestAComponentsFailureStopsTheAgent(t *testing.T) {
	r := newRig(t)
	l := r.newLogin(8 * time.Hour)
	r.writeFile(l.json())
	socket := brokenSocket{fail: make(chan error)}
	started := make(chan struct{})
	done := make(chan error, 1)
	opt := r.opt
	opt.Started = started
	opt.CheckSpread = time.Hour // the first pass waits on the fake clock
	opt.listen = func(string) (requestListener, error) { return socket, nil }
	go func() { done <- Run(context.Background(), r.e, opt) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("agent did not start: %v", err)
	}
	r.awaitWrite() // the others run: the writer backs the login up

	accept := errors.New("accept: too many open files")
	socket.fail <- accept
	select {
	case err := <-done:
		if !errors.Is(err, accept) || !strings.HasPrefix(err.Error(), "agent: pass requests: ") {
			t.Errorf("Run = %v; want the request server's error, wrapped", err)
		}
	case <-time.After(bound):
		t.Fatal("the agent did not stop within the bound after a component failed")
	}
	data, _ := os.ReadFile(r.e.Cfg.LogFile)
	if strings.Contains(string(data), " OK agent stopped") {
		t.Errorf("sync.log says the agent stopped cleanly after a failure:\n%s", data)
	}
	// Every component has returned and the lock is free: a new agent starts.
	ctx, cancel := context.WithCancel(context.Background())
	again := make(chan struct{})
	opt.Started, opt.listen = again, nil
	go func() { done <- Run(ctx, r.e, opt) }()
	select {
	case <-again:
	case err := <-done:
		t.Fatalf("an agent after the failed one: %v; want it to start", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("the next agent: %v; want a clean stop", err)
	}
}

func TestBackoffPolicy(t *testing.T) {
	p := backoffPolicy{min: time.Second, max: 10 * time.Second}
	b := p.sequence()
	prevCap := time.Duration(0)
	for i := 0; i < 8; i++ {
		cap := min(time.Second<<i, 10*time.Second)
		d := b.next()
		if d < cap/2 || d > cap {
			t.Errorf("step %d: %v; want within [%v, %v]", i, d, cap/2, cap)
		}
		prevCap = cap
	}
	if prevCap != 10*time.Second {
		t.Fatalf("the sequence never reached the cap")
	}
	if d := b.patient(); d != 10*time.Second {
		t.Errorf("patient = %v; want the cap", d)
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Errorf("after reset: %v; want at most the first step", d)
	}
}

func TestLatestKeepsOnlyTheNewest(t *testing.T) {
	l := newLatest[int]()
	for i := 1; i <= 5; i++ {
		l.put(i)
	}
	if got := <-l; got != 5 {
		t.Errorf("got %d; want the newest, 5", got)
	}
	select {
	case v := <-l:
		t.Errorf("a second value %d; want one slot", v)
	default:
	}
}
