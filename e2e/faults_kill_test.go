package e2e_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// killLoop is the state of a kill -9 loop over one world.
type killLoop struct {
	t    *testing.T
	w    *world
	hist *vaultHistory

	mu            sync.Mutex
	lastPresented time.Time // when the fake last saw a refresh request
	onRefresh     func()    // armed by an iteration that kills inside a refresh

	stats map[string]int
}

func newKillLoop(t *testing.T, w *world) *killLoop {
	k := &killLoop{t: t, w: w, stats: map[string]int{}}
	// Before the fake serves anything.
	w.fake.ExpiresIn = 2 * time.Second
	w.fake.BeforeRefresh = func(string, string) {
		k.mu.Lock()
		k.lastPresented = time.Now()
		f := k.onRefresh
		k.onRefresh = nil
		k.mu.Unlock()
		if f != nil {
			f()
		}
	}
	k.hist = newVaultHistory(t, vsrv.Root(), w.user.Path)
	return k
}

// liveRefreshToken is the newest refresh token the fake minted: the one that
// must never be lost (every older one is spent).
func (k *killLoop) liveRefreshToken() string {
	iss := k.w.fake.Issued()
	for i := len(iss) - 1; i >= 0; i-- {
		if strings.HasPrefix(iss[i], "sk-ant-ort01-") {
			return iss[i]
		}
	}
	return ""
}

// durable says where the live refresh token is kept on disk: the credentials
// file, or the saved refresh response the next refresh or start applies.
func (k *killLoop) durable(live string) (inFile, inPending bool) {
	if b, err := os.ReadFile(k.w.creds); err == nil {
		var f struct {
			O struct {
				RT string `json:"refreshToken"`
			} `json:"claudeAiOauth"`
		}
		if json.Unmarshal(b, &f) == nil && f.O.RT == live {
			inFile = true
		}
	}
	if b, err := os.ReadFile(filepath.Join(k.w.state, "pending-refresh")); err == nil && strings.Contains(string(b), live) {
		inPending = true
	}
	return
}

// strayTemps counts temp files a killed writer left behind.
func (k *killLoop) strayTemps() int {
	n := 0
	for _, dir := range []string{filepath.Dir(k.w.creds), k.w.state} {
		m, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
		n += len(m)
	}
	return n
}

// checkAfter checks every invariant after a kill or a recovery step.
func (k *killLoop) checkAfter(what, mode string, killAt time.Time, clobbered bool) {
	t := k.t
	t.Helper()
	o, problem := credsInvariant(t, k.w.creds, -1)
	if problem != "" && !(clobbered && o != nil && o["refreshToken"] == "") {
		t.Fatalf("%s: %s", what, problem)
	}
	live := k.liveRefreshToken()
	inFile, inPending := k.durable(live)
	switch {
	case inFile:
		k.stats["live token in the file"]++
	case inPending:
		k.stats["live token only in pending-refresh"]++
	case clobbered && k.w.vaultRefresh() == live:
		k.stats["live token only in vault (file clobbered by the test)"]++
	default:
		k.mu.Lock()
		presented := k.lastPresented
		k.mu.Unlock()
		t.Fatalf("%s (%s): the live refresh token is neither in the credentials file nor in pending-refresh (last refresh request %s before the kill)",
			what, mode, killAt.Sub(presented).Round(time.Millisecond))
	}
	k.hist.check(t, issueOrder(k.w.fake))
}

// Kill -9 of the agent at random points while it refreshes every second and
// backs each refresh up, with the next step taken at random by a restarted
// agent, `refresh`, `exec` or `sync`. After every kill and every step: the
// credentials file is valid JSON, mode 0600, keeps its other keys and never
// holds refreshToken ""; the newest refresh token the token endpoint minted is
// in the file or in pending-refresh (so the next refresh succeeds); Vault's
// version history never goes from a newer login to an older one; the token
// endpoint never answers invalid_grant.
//
// A third of the kills land just after the agent's token request reached the
// endpoint: the window in which the answer exists only in the memory of the
// process that asked. The agent's refreshes run in a child process that
// outlives it, so no kill may lose the login; any loss fails the test.
func TestFaultKill9AgentDuringRefreshes(t *testing.T) {
	n := faultIterations(t, 40, 1)
	w := newWorld(t)
	k := newKillLoop(t, w)
	w.login()
	agentKills, recoveries := 0, map[string]int{}
	clobbered := false // the test clobbered the file and nothing restored it yet
	for i := 0; i < n; i++ {
		itStart := time.Now()
		if os.Getenv("FAULT_DEBUG") != "" {
			defer func(i int) {}(i)
		}
		// Half the time the file is clobbered first (as a losing Claude
		// writes it), so the kill can land in the restore; only when Vault
		// already holds the live login, else the test itself would lose it.
		clobber := false
		if rand.IntN(4) == 0 {
			live := k.liveRefreshToken()
			if inFile, _ := k.durable(live); inFile && w.vaultRefresh() == live {
				b, _ := os.ReadFile(w.creds)
				b = regexp.MustCompile(`"refreshToken": *"[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`))
				if err := os.WriteFile(w.creds, b, 0o600); err != nil {
					t.Fatal(err)
				}
				clobber, clobbered = true, true
				k.stats["clobbered before the start"]++
			}
		}
		a := w.startAgentProc(nil, nil)
		var killAtNs atomic.Int64
		kill := func() {
			if killAtNs.CompareAndSwap(0, time.Now().UnixNano()) {
				a.kill9()
			}
		}
		mode := "kill at a random time"
		switch rand.IntN(3) {
		case 0: // inside a refresh: just after the token request reached the fake
			mode = "kill inside a refresh"
			d := time.Duration(rand.Int64N(int64(15 * time.Millisecond)))
			k.mu.Lock()
			k.onRefresh = func() { time.AfterFunc(d, kill) }
			k.mu.Unlock()
			select {
			case <-a.done:
			case <-time.After(4 * time.Second):
			}
			k.mu.Lock()
			k.onRefresh = nil
			k.mu.Unlock()
			k.stats[mode]++
		default: // at a random time of the agent's life
			// The kill's moment is random on purpose: fault timing.
			time.Sleep(time.Duration(rand.Int64N(int64(600 * time.Millisecond))))
			k.stats[mode]++
		}
		kill()
		<-a.done
		killAt := time.Unix(0, killAtNs.Load())
		agentKills++
		_ = clobber
		k.checkAfter("after kill", mode, killAt, clobbered)
		// The next step.
		var r result
		step := []string{"agent", "agent", "refresh", "exec", "sync"}[rand.IntN(5)]
		recoveries[step]++
		switch step {
		case "refresh":
			r = w.runWith(nil, nil, 90*time.Second, "refresh")
		case "exec":
			r = w.runWith(nil, nil, 90*time.Second, "exec", "--", "true")
		case "sync":
			r = w.runWith(nil, nil, 90*time.Second, "sync")
		}
		if step != "agent" {
			if step == "sync" && r.code != 0 && r.code != 75 || step == "refresh" && r.code != 0 && r.code != 75 {
				t.Fatalf("iteration %d: %s after the kill: exit %d\nstdout: %s\nstderr: %s\nsync.log tail: %s", i, step, r.code, r.stdout, r.stderr, tail(w.syncLog(), 10))
			}
			k.checkAfter(step+" after the kill", step, time.Time{}, clobbered && step != "sync" && step != "refresh")
		}
		if o, _ := credsInvariant(t, w.creds, -1); o != nil && o["refreshToken"] != "" {
			clobbered = false
		}
		if os.Getenv("FAULT_DEBUG") != "" {
			t.Logf("iteration %d: %s, step %s, kill after %s", i, time.Since(itStart).Round(time.Millisecond), step, killAt.Sub(itStart).Round(time.Millisecond))
		}
		if c := w.fake.Counters(); c.InvalidGrant != 0 {
			t.Fatalf("iteration %d: the token endpoint answered invalid_grant (%d times): a spent refresh token was used\nsync.log tail: %s", i, c.InvalidGrant, tail(w.syncLog(), 10))
		}
	}
	// The end: one more refresh must succeed at the fake, and Vault gets it.
	before := w.fake.Counters()
	r := w.runWith(nil, nil, 90*time.Second, "refresh")
	w.mustCode(r, 0, "final refresh")
	after := w.fake.Counters()
	if after.Refreshes != before.Refreshes+1 || after.InvalidGrant != before.InvalidGrant {
		t.Errorf("final refresh: fake counters %+v -> %+v; want exactly one more refresh and no invalid_grant", before, after)
	}
	if got := refreshTokenOf(t, w.localOAuthCompact()); got != k.liveRefreshToken() || w.vaultRefresh() != got {
		t.Errorf("after the final refresh the file, the fake and vault disagree on the live login")
	}
	versions := k.hist.check(t, issueOrder(w.fake))
	if strings.Contains(w.syncLog(), " FAIL ") {
		t.Errorf("FAIL lines in sync.log:\n%s", grepLines(w.syncLog(), " FAIL "))
	}
	k.stats["stray temp files left"] = k.strayTemps()
	faultReport(t, "%d agent kills, %d vault versions checked, next steps %v, %v", agentKills, versions, recoveries, k.stats)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A writer killed between creating its temp file and renaming it leaves the
// temp file behind, with a copy of a token in it. The agent removes such
// leftovers (older than a minute) when it starts, and leaves young ones alone
// (a `refresh` may be writing right now).
func TestFaultStaleTempFilesSwept(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	old := time.Now().Add(-10 * time.Minute)
	mk := func(dir, name string, mtime time.Time) string {
		os.MkdirAll(dir, 0o700)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
		return p
	}
	stale := []string{
		mk(filepath.Dir(w.creds), ".credentials.json.tmp-0123456789ab", old),
		mk(w.state, ".pending-refresh.tmp-abcdef012345", old),
		mk(w.state, ".lineage.tmp-00aa11bb22cc", old),
	}
	young := mk(filepath.Dir(w.creds), ".credentials.json.tmp-fedcba987654", time.Now())
	notOurs := mk(filepath.Dir(w.creds), ".credentials.json.tmp-notours", old)
	w.startAgent(nil)
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("a stale temp file survived the agent's start: %s", filepath.Base(p))
		}
	}
	for _, p := range []string{young, notOurs} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(p), err)
		}
	}
}

// A stale pending backup: an agent stopped (or killed) with a login waiting
// in pending-backup.json, then `refresh` rotated that login and backed the new
// one up; then the file was clobbered. The restarted agent must restore the
// newer login from Vault, not the spent pending one (the kill -9 loop found
// the agent restoring the pending one: invalid_grant, a logout until the next
// pass).
func TestFaultStalePendingNotRestored(t *testing.T) {
	rounds := faultIterations(t, 3, 0.02)
	for r := 0; r < rounds; r++ {
		w := newWorld(t)
		proxy := newFaultProxy(t, vsrv.Addr)
		w.withVaultAddr(proxy.srv.URL)
		l := w.login()
		a := w.startAgent(nil)
		eventually(t, 20*time.Second, "initial backup", w.vaultHolds(l))
		proxy.failEvery.Store(1) // vault answers 500
		l = w.rotate(l)
		pending := filepath.Join(w.state, "pending-backup.json")
		eventually(t, 10*time.Second, "the rotated login pending", func() bool {
			b, err := os.ReadFile(pending)
			return err == nil && strings.Contains(string(b), l.RefreshToken)
		})
		a.stop()
		proxy.failEvery.Store(0)
		w.mustCode(w.runWith(nil, nil, time.Minute, "refresh"), 0, "refresh while the agent is down")
		newest := lastMintedRefresh(w)
		if w.vaultRefresh() != newest {
			t.Fatalf("refresh did not back the new login up")
		}
		b := mustRead(t, w.creds)
		os.WriteFile(w.creds, regexp.MustCompile(`"refreshToken": *"[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)), 0o600)
		before := w.fake.Counters()
		started := time.Now()
		w.startAgent(nil)
		eventually(t, 20*time.Second, "the newer login restored", func() bool {
			o, p := credsInvariant(t, w.creds, -1)
			return p == "" && o["refreshToken"] == newest
		})
		// The start-up pass checks the login in the file: a spent login
		// restored there would have met invalid_grant by its end.
		w.passEndedAfter(t, started, "the restarted agent's start-up pass")
		if c := w.fake.Counters(); c.InvalidGrant != before.InvalidGrant {
			t.Fatalf("round %d: invalid_grant after the restart: the spent pending login was restored", r)
		}
		if strings.Contains(w.syncLog(), " FAIL ") {
			t.Fatalf("round %d: FAIL lines:\n%s", r, grepLines(w.syncLog(), " FAIL "))
		}
	}
}

// `refresh` meeting a clobbered file (the kill loop found it FAILing "no
// usable login to refresh"): it restores the latest backup first, as a pass
// would, then refreshes that login; with no file at all it is a logout (exit
// 3, nothing written).
func TestRefreshRestoresAClobberedFileFirst(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.mustCode(w.run(nil, "sync"), 0, "first sync")
	if w.vaultRefresh() != l.RefreshToken {
		t.Fatalf("vault does not hold the login after sync")
	}
	b := mustRead(t, w.creds)
	os.WriteFile(w.creds, regexp.MustCompile(`"refreshToken": *"[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)), 0o600)
	r := w.run(nil, "refresh")
	w.mustCode(r, 0, "refresh on a clobbered file")
	o, problem := credsInvariant(t, w.creds, -1)
	if problem != "" {
		t.Fatalf("after refresh: %s", problem)
	}
	if c := w.fake.Counters(); c.Refreshes != 1 || c.InvalidGrant != 0 || o["refreshToken"] != lastMintedRefresh(w) {
		t.Fatalf("counters %+v; the file should hold the login refreshed from the restored one", c)
	}
	log := w.syncLog()
	if !strings.Contains(log, " RECOVERED ") || strings.Contains(log, " FAIL ") {
		t.Fatalf("want a RECOVERED line and no FAIL:\n%s", log)
	}
	if w.vaultRefresh() != lastMintedRefresh(w) {
		t.Errorf("the refreshed login is not backed up")
	}
	os.Remove(w.creds)
	w.mustCode(w.run(nil, "refresh"), 3, "refresh with no credentials file")
	if _, err := os.Stat(w.creds); !os.IsNotExist(err) {
		t.Errorf("refresh brought a logged-out file back: %v", err)
	}
}
