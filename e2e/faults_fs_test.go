package e2e_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// mountTmpfs mounts a small tmpfs at dir (which must exist) for the test.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	faultNeeds(t, os.Geteuid() == 0, "mounting a tmpfs needs root")
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput()
	faultNeeds(t, err == nil, "mount -t tmpfs failed: "+strings.TrimSpace(string(out)))
	t.Cleanup(func() {
		// Whatever still runs in it has been stopped by the cleanups before.
		for i := 0; i < 50; i++ {
			if exec.Command("umount", dir).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // the poll interval of this bounded wait for the last user to go
		}
		t.Errorf("cannot unmount the tmpfs at %s", dir)
	})
}

// fillDisk writes a filler file until the file system is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 512)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	// Small writes until not even one byte fits.
	for {
		if _, err := f.Write(buf[:1]); err != nil {
			break
		}
	}
	return p
}

// refreshTrap holds every token request for a while and says when one came,
// so a test can change the world while a refresh is in flight.
type refreshTrap struct{ seen chan string }

func newRefreshTrap(w *world, hold time.Duration) *refreshTrap {
	r := &refreshTrap{seen: make(chan string, 64)}
	w.fake.TokenDelay = hold
	w.fake.BeforeRefresh = func(rt, _ string) { r.seen <- rt }
	return r
}

func (r *refreshTrap) wait(t *testing.T, limit time.Duration) string {
	t.Helper()
	select {
	case rt := <-r.seen:
		return rt
	case <-time.After(limit):
		t.Fatalf("no refresh request within %s", limit)
		return ""
	}
}

// Disk full on the credentials file system (a 64 KiB tmpfs at ~/.claude), hit
// while the agent's refresh is in flight: the old file stays byte for byte,
// the failure is logged once however often the agent retries, the new login
// goes to Vault, the spent refresh token is never presented again, and when
// space comes back the new login lands in the file.
func TestFaultDiskFullCredentialsFS(t *testing.T) {
	cycles := faultIterations(t, 2, 0.02)
	w := newWorld(t)
	trap := newRefreshTrap(w, 700*time.Millisecond)
	claudeDir := filepath.Dir(w.creds)
	os.MkdirAll(claudeDir, 0o700)
	mountTmpfs(t, claudeDir, "64k")
	agent := w.startAgent(nil, "--verbose")
	defer func() {
		if t.Failed() {
			t.Logf("sync.log:\n%s\nagent:\n%s", w.syncLog(), agent.output())
		}
	}()
	for c := 0; c < cycles; c++ {
		// A login that appears with 2 s to live is refreshed after 1 s (half
		// its lifetime): a refresh the test can catch in flight.
		l := w.loginExpiringIn(2 * time.Second)
		presented := trap.wait(t, 20*time.Second)
		if presented != l.RefreshToken {
			t.Fatalf("cycle %d: the refresh presented another token", c)
		}
		filler := fillDisk(t, claudeDir)
		temps := watchFS(t, claudeDir, syscall.IN_CREATE, tempFilePrefix(w.creds))
		before, _ := os.ReadFile(w.creds)
		// The answer arrives, the write fails; the agent retries (--retry-max 1s).
		eventually(t, 20*time.Second, "the token endpoint answered", func() bool { return w.fake.Counters().Refreshes == c+1 })
		newRT := lastMintedRefresh(w)
		eventually(t, 20*time.Second, "the new login backed up to vault", func() bool { return w.vaultRefresh() == newRT })
		// Several retries: each write of the file starts with a temp file,
		// created (then removed) even on the full disk.
		temps.waitMore(t, temps.count(), 3, fmt.Sprintf("cycle %d: the agent retrying the write on the full disk", c))
		after, _ := os.ReadFile(w.creds)
		if !bytes.Equal(before, after) {
			t.Fatalf("cycle %d: the credentials file changed on a full disk", c)
		}
		if _, p := credsInvariant(t, w.creds, -1); p != "" {
			t.Fatalf("cycle %d: %s", c, p)
		}
		// A temp file seen now may be a retry's, created and about to be
		// removed; one still there 3 s later (three retries on) was left.
		if m, _ := filepath.Glob(filepath.Join(claudeDir, ".*.tmp-*")); len(m) > 0 {
			time.Sleep(3 * time.Second)
			for _, name := range m {
				if _, err := os.Lstat(name); err == nil {
					t.Errorf("cycle %d: temp file left on the full disk: %s", c, name)
				}
			}
		}
		warns := regexp.MustCompile(`(?m)^\S+ WARN refreshed the login, but .*no space left on device`).FindAllString(w.syncLog(), -1)
		if len(warns) != c+1 {
			t.Fatalf("cycle %d: %d WARN lines for the full disk; want one per episode (%d):\n%s", c, len(warns), c+1, w.syncLog())
		}
		if cnt := w.fake.Counters(); cnt.Refreshes != c+1 || cnt.InvalidGrant != 0 {
			t.Fatalf("cycle %d: fake counters %+v; want %d refreshes and no invalid_grant (the spent token presented again)", c, cnt, c+1)
		}
		os.Remove(filler)
		eventually(t, 20*time.Second, "the new login written once space is back", func() bool {
			b, _ := os.ReadFile(w.creds)
			return bytes.Contains(b, []byte(newRT))
		})
		if _, p := credsInvariant(t, w.creds, -1); p != "" {
			t.Fatalf("cycle %d after space came back: %s", c, p)
		}
		eventually(t, 10*time.Second, "pending-refresh removed", func() bool {
			_, err := os.Stat(filepath.Join(w.state, "pending-refresh"))
			return os.IsNotExist(err)
		})
	}
	// The last episode's recovery line follows the write of the file (the
	// refresh child reports it to the agent, which logs it): wait for it.
	eventually(t, 20*time.Second, fmt.Sprintf("%d recovery lines", cycles), func() bool {
		return strings.Count(w.syncLog(), " OK refreshing works again") >= cycles
	})
	if n := strings.Count(w.syncLog(), " OK refreshing works again"); n != cycles {
		t.Errorf("%d recovery lines; want %d:\n%s", n, cycles, w.syncLog())
	}
	faultReport(t, "%d full-disk episodes during a refresh; refreshes %d, invalid_grant %d", cycles, w.fake.Counters().Refreshes, w.fake.Counters().InvalidGrant)
}

// The whole home on a full file system (a home quota): the state dir cannot
// keep pending-refresh or sync.log either. The new login still goes to Vault,
// the failure still reaches the journal once, and it lands in the file when
// space comes back.
func TestFaultDiskFullWholeHome(t *testing.T) {
	w := newWorld(t)
	trap := newRefreshTrap(w, 700*time.Millisecond)
	// Move the home's content (the Vault token) onto a tmpfs mounted over it.
	save := t.TempDir()
	if out, err := exec.Command("cp", "-a", w.home+"/.", save).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	mountTmpfs(t, w.home, "256k")
	if out, err := exec.Command("cp", "-a", save+"/.", w.home).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	w.startAgent(nil)
	l := w.loginExpiringIn(2 * time.Second)
	trap.wait(t, 20*time.Second)
	filler := fillDisk(t, w.home)
	temps := watchFS(t, filepath.Dir(w.creds), syscall.IN_CREATE, tempFilePrefix(w.creds))
	eventually(t, 20*time.Second, "the token endpoint answered", func() bool { return w.fake.Counters().Refreshes == 1 })
	newRT := lastMintedRefresh(w)
	if newRT == l.RefreshToken {
		t.Fatal("no new login minted")
	}
	eventually(t, 20*time.Second, "the new login backed up to vault", func() bool { return w.vaultRefresh() == newRT })
	temps.waitMore(t, temps.count(), 3, "the agent retrying the write on the full disk")
	if cnt := w.fake.Counters(); cnt.Refreshes != 1 || cnt.InvalidGrant != 0 {
		t.Fatalf("fake counters %+v; want 1 refresh and no invalid_grant", cnt)
	}
	warns := 0
	for _, m := range w.journal.journalMessages() {
		if strings.Contains(m, " WARN refreshed the login, but ") {
			warns++
		}
	}
	if warns != 1 {
		t.Errorf("%d journal WARN lines for the full disk; want 1", warns)
	}
	os.Remove(filler)
	eventually(t, 20*time.Second, "the new login written once space is back", func() bool {
		b, _ := os.ReadFile(w.creds)
		return bytes.Contains(b, []byte(newRT))
	})
	if _, p := credsInvariant(t, w.creds, -1); p != "" {
		t.Fatal(p)
	}
	faultReport(t, "whole home full during a refresh: new login kept in memory and vault, written after; refreshes %d", w.fake.Counters().Refreshes)
}

// ~/.claude removed (rm -rf) and recreated, again and again, with the agent
// running: each removal is a logout (one WARN, never restored), each new login
// in the recreated directory is backed up.
func TestFaultCredentialsDirRemovedAndRecreated(t *testing.T) {
	n := faultIterations(t, 5, 0.05)
	w := newWorld(t)
	l := w.login()
	w.startAgent(nil)
	eventually(t, 20*time.Second, "initial backup", w.vaultHolds(l))
	// Let the start-up pass (a real check of the login) finish first: a pass
	// whose check runs while the directory is gone is another test's subject.
	eventually(t, 45*time.Second, "start-up pass done", func() bool { return strings.Contains(w.syncLog(), " OK inference check passed") })
	dir := filepath.Dir(w.creds)
	for i := 0; i < n; i++ {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		// The WARN is the agent's decision on the removal: a logout, left alone.
		eventually(t, 10*time.Second, "the removal seen as a logout", func() bool {
			return strings.Count(w.syncLog(), "WARN credentials file was removed") == i+1
		})
		if _, err := os.Stat(w.creds); !os.IsNotExist(err) {
			t.Fatalf("iteration %d: the agent restored a removed file (a logout)", i)
		}
		l = w.rotate(l) // the user logs back in: a new directory, a new file
		eventually(t, 10*time.Second, "the login in the recreated directory backed up", w.vaultHolds(l))
		// The agent has handled the login after the removal: a restore of
		// the removed file, late or not, would be in the log by now.
		if strings.Contains(w.syncLog(), " RECOVERED ") {
			t.Fatalf("iteration %d: the agent restored a removed file (a logout):\n%s", i, grepLines(w.syncLog(), " RECOVERED "))
		}
	}
	if strings.Contains(w.syncLog(), " FAIL ") {
		t.Errorf("FAIL lines:\n%s", grepLines(w.syncLog(), " FAIL "))
	}
	faultReport(t, "%d removals and recreations of ~/.claude", n)
}

// A logout (the file deleted) while the agent's refresh is in flight: the
// answer must not bring the file back (that would undo the logout), and the
// new login is not lost: it is backed up, so `restore` brings it back.
func TestFaultLogoutDuringRefresh(t *testing.T) {
	w := newWorld(t)
	trap := newRefreshTrap(w, 700*time.Millisecond)
	w.startAgent(nil)
	l := w.loginExpiringIn(2 * time.Second)
	trap.wait(t, 20*time.Second)
	if err := os.Remove(w.creds); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the token endpoint answered", func() bool { return w.fake.Counters().Refreshes == 1 })
	newRT := lastMintedRefresh(w)
	if newRT == l.RefreshToken {
		t.Fatal("no new login minted")
	}
	eventually(t, 20*time.Second, "the refreshed login backed up", func() bool { return w.vaultRefresh() == newRT })
	// The refresher's word that it did not write the answer to the file.
	eventually(t, 20*time.Second, "the refresher reporting the answer not written", func() bool {
		return strings.Contains(w.syncLog(), "WARN refreshed the login, but ")
	})
	if _, err := os.Stat(w.creds); !os.IsNotExist(err) {
		t.Fatalf("the refresh answer recreated the credentials file after a logout")
	}
	r := w.run(nil, "restore")
	w.mustCode(r, 0, "restore after the logout")
	if got := refreshTokenOf(t, w.localOAuthCompact()); got != w.vaultRefresh() {
		t.Errorf("restore did not bring back the refreshed login")
	}
	if c := w.fake.Counters(); c.Refreshes != 1 || c.InvalidGrant != 0 {
		t.Errorf("fake counters %+v", c)
	}
}

// The credentials file replaced by a symlink (dotfiles managers do this): the
// agent reads through it, backs the login up, refreshes by writing the target
// and keeps the link. A dangling link is a logout; a link loop and a link to
// a directory are reported once, never "restored" over.
func TestFaultCredentialsFileReplacedBySymlink(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	a := w.startAgent(nil)
	eventually(t, 20*time.Second, "initial backup", w.vaultHolds(l))

	elsewhere := filepath.Join(w.home, "dotfiles", "claude-credentials.json")
	os.MkdirAll(filepath.Dir(elsewhere), 0o700)
	n, err := w.fake.Rotate(l.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	n.ExpiresAt = time.Now().Add(2 * time.Second) // refreshed through the link a second after it appears
	if err := os.WriteFile(elsewhere, fakeanthropic.CredentialsJSON(n), 0o600); err != nil {
		t.Fatal(err)
	}
	tmpLink := w.creds + ".link"
	if err := os.Symlink(elsewhere, tmpLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmpLink, w.creds); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the agent refreshed through the link", func() bool { return w.fake.Counters().Refreshes == 2 })
	eventually(t, 20*time.Second, "the refreshed login backed up", func() bool {
		b, _ := os.ReadFile(elsewhere)
		v := w.vaultRefresh()
		return v != "" && bytes.Contains(b, []byte(v)) && v != n.RefreshToken
	})
	if fi, err := os.Lstat(w.creds); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced by a regular file")
	}
	if _, p := credsInvariant(t, elsewhere, -1); p != "" {
		t.Fatalf("link target: %s", p)
	}
	if !strings.Contains(a.output(), "symlink") {
		t.Errorf("the agent did not say it wrote through a symlink")
	}

	// A loop and a link to a directory: reported once each, nothing written.
	for i, c := range []struct{ name, target string }{{"loop", w.creds}, {"directory", w.home}} {
		os.Remove(w.creds)
		if err := os.Symlink(c.target, w.creds); err != nil {
			t.Fatal(err)
		}
		// The report is the agent's decision on the link: report, do not write.
		eventually(t, 20*time.Second, c.name+": the unreadable link reported", func() bool {
			return strings.Count(w.syncLog(), "cannot read the credentials file") >= i+1
		})
		if fi, err := os.Lstat(w.creds); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s: the agent replaced the symlink", c.name)
		}
	}
	log := w.syncLog()
	if k := strings.Count(log, "cannot read the credentials file"); k != 2 {
		t.Errorf("%d report lines for the broken link and the link to a directory; want 2 (one each):\n%s", k, log)
	}
	// A dangling link: a logout, not restored.
	os.Remove(w.creds)
	os.Symlink(filepath.Join(w.home, "nowhere.json"), w.creds)
	eventually(t, 10*time.Second, "a dangling link seen as a logout", func() bool {
		return strings.Contains(w.syncLog(), "WARN credentials file was removed")
	})
	if _, err := os.Stat(filepath.Join(w.home, "nowhere.json")); !os.IsNotExist(err) {
		t.Errorf("the agent wrote through a dangling link (restored a logout)")
	}
	// Back to a real file: backed up again.
	os.Remove(w.creds)
	l2 := w.login()
	eventually(t, 10*time.Second, "a real file again, backed up", w.vaultHolds(l2))
	// The agent has handled the file after the links: a late report of a
	// link, or a late write through the dangling one, would be here by now.
	if k := strings.Count(w.syncLog(), "cannot read the credentials file"); k != 2 {
		t.Errorf("%d report lines for the broken link and the link to a directory once a real file is back; want 2:\n%s", k, w.syncLog())
	}
	if _, err := os.Stat(filepath.Join(w.home, "nowhere.json")); !os.IsNotExist(err) {
		t.Errorf("the agent wrote through a dangling link (restored a logout)")
	}
}

// The credentials file made unreadable (mode 000) under an agent running as
// an unprivileged user (root would read it anyway): the failure is reported
// once (FAIL: Claude cannot read it either), the file is not replaced, and
// once readable again it is backed up. The path turned into a directory is the
// same for root.
func TestFaultCredentialsFileUnreadable(t *testing.T) {
	u := newFaultUser(t)
	w := newWorld(t)
	l := w.login()
	u.adopt(t, w)
	a := w.startAgentProc(nil, u.as)
	eventually(t, 20*time.Second, "initial backup as the test user", w.vaultHolds(l))
	if err := os.Chmod(w.creds, 0); err != nil {
		t.Fatal(err)
	}
	l2, err := w.fake.Rotate(l.RefreshToken) // what it would hold, were it readable
	if err != nil {
		t.Fatal(err)
	}
	w.secrets = append(w.secrets, l2.AccessToken, l2.RefreshToken)
	// Touch it so the watcher fires, several times, each taken in by the agent.
	for i := 0; i < 3; i++ {
		w.touchSeen(t, w.creds)
	}
	eventually(t, 20*time.Second, "the unreadable file reported", func() bool {
		return strings.Contains(w.syncLog(), "FAIL cannot read the credentials file")
	})
	w.touchSeen(t, w.creds) // a look after the report
	log := w.syncLog()
	if k := regexp.MustCompile(`(?m)^\S+ FAIL cannot read the credentials file.*permission denied`).FindAllString(log, -1); len(k) != 1 {
		t.Errorf("%d FAIL lines for the unreadable file; want exactly one:\n%s", len(k), log)
	}
	if fi, _ := os.Stat(w.creds); fi.Mode().Perm() != 0 {
		t.Errorf("the unreadable file was replaced or re-moded: %v", fi.Mode())
	}
	// `sync` as the user: FAIL, exit 1, nothing written.
	r := w.runWith(nil, u.as, time.Minute, "sync")
	w.mustCode(r, 1, "sync with an unreadable credentials file")
	// Readable again, with the rotated login: backed up.
	b := fakeanthropic.CredentialsJSON(l2)
	os.Chmod(w.creds, 0o600)
	if err := os.WriteFile(w.creds, b, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "backed up once readable", w.vaultHolds(l2))
	a.stop()

	// The path becomes a directory (root is not stopped by modes; this is).
	w2 := newWorld(t)
	l3 := w2.login()
	w2.startAgent(nil)
	eventually(t, 20*time.Second, "initial backup", w2.vaultHolds(l3))
	os.Remove(w2.creds)
	if err := os.Mkdir(w2.creds, 0o700); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the directory at the credentials path reported", func() bool {
		return strings.Contains(w2.syncLog(), "FAIL cannot read the credentials file")
	})
	// Two more looks at it after the report.
	w2.touchSeen(t, w2.creds)
	w2.touchSeen(t, w2.creds)
	if k := strings.Count(w2.syncLog(), "FAIL cannot read the credentials file"); k != 1 {
		t.Errorf("%d FAIL lines for a directory at the credentials path; want 1:\n%s", k, w2.syncLog())
	}
	if fi, err := os.Stat(w2.creds); err != nil || !fi.IsDir() {
		t.Errorf("the directory at the credentials path was replaced")
	}
}

// inotify exhausted for the user (a helper running as the same test user holds
// every instance of fs.inotify.max_user_instances): the agent says the file
// watch is degraded, falls back to its rescan, still backs every change up, and
// goes back to inotify once instances are free again.
func TestFaultInotifyInstancesExhausted(t *testing.T) {
	u := newFaultUser(t)
	w := newWorld(t)
	l := w.login()
	u.adopt(t, w)
	hog := exec.Command(filepath.Join(binDir, "inotify-hog"))
	u.as(hog)
	stdin, _ := hog.StdinPipe()
	out, _ := hog.StdoutPipe()
	if err := hog.Start(); err != nil {
		t.Fatal(err)
	}
	var freed sync.Once
	t.Cleanup(func() { freed.Do(func() { stdin.Close(); hog.Wait() }) })
	line := make([]byte, 64)
	k, _ := io.ReadAtLeast(out, line, 1)
	got := strings.TrimSpace(string(line[:k]))
	limit, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	held, err := strconv.Atoi(strings.TrimPrefix(got, "holding "))
	faultNeeds(t, err == nil, "inotify-hog: "+got)
	if max, _ := strconv.Atoi(strings.TrimSpace(string(limit))); held != max {
		t.Fatalf("the hog holds %d instances; the per-user limit is %d", held, max)
	}

	a := w.startAgentProc(nil, u.as, "--rescan", "1s")
	eventually(t, 20*time.Second, "initial backup without inotify", w.vaultHolds(l))
	eventually(t, 10*time.Second, "the degraded watch reported", func() bool {
		return strings.Contains(w.syncLog(), "WARN file watch degraded")
	})
	rotate := func(what string) {
		t.Helper()
		n, err := w.fake.Rotate(l.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		l = n
		u.writeLogin(t, w, l)
		eventually(t, 10*time.Second, what, w.vaultHolds(l))
	}
	for i := 0; i < 3; i++ {
		rotate("a change backed up by the rescan")
	}
	if n := strings.Count(w.syncLog(), "WARN file watch degraded"); n != 1 {
		t.Errorf("the degraded watch was reported %d times; want once", n)
	}
	st := w.runWith(nil, u.as, time.Minute, "status", "--json")
	var rep struct {
		Agent struct{ Watch string } `json:"agent"`
	}
	json.Unmarshal([]byte(st.stdout), &rep)
	if !strings.Contains(rep.Agent.Watch, "rescan every 1s") {
		t.Errorf("status shows watch %q; want the rescan fallback", rep.Agent.Watch)
	}

	// The instances come free: the agent goes back to inotify by itself.
	freed.Do(func() { stdin.Close(); hog.Wait() })
	eventually(t, 10*time.Second, "the watch restored", func() bool {
		return strings.Contains(w.syncLog(), "OK file watch restored")
	})
	st = w.runWith(nil, u.as, time.Minute, "status", "--json")
	json.Unmarshal([]byte(st.stdout), &rep)
	if rep.Agent.Watch != "inotify" {
		t.Errorf("status shows watch %q after the instances came free; want inotify", rep.Agent.Watch)
	}
	rotate("a change backed up after the watch came back")
	a.stop()
	faultReport(t, "inotify instances held by the hog: %d (the per-user limit); 3 changes backed up by the rescan; back on inotify once they came free", held)
}

// lastMintedRefresh is the newest refresh token the world's fake minted.
func lastMintedRefresh(w *world) string {
	iss := w.fake.Issued()
	for i := len(iss) - 1; i >= 0; i-- {
		if strings.HasPrefix(iss[i], "sk-ant-ort01-") {
			return iss[i]
		}
	}
	return ""
}
