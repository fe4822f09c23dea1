package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

// TestUserFlagActsAsAccount: root's `--user NAME` (or CLAUDE_AUTH_USER) works
// on NAME's login with NAME's home and identity, never root's own: status
// shows NAME's credentials, sync backs NAME's login up and leaves every file
// it makes owned by NAME. Anyone else naming another user, and anyone naming
// an unknown user, gets a configuration error (78).
func TestUserFlagActsAsAccount(t *testing.T) {
	w, ou, rootHome, rootLogin, userLogin := newActForWorld(t, "casu")
	name, uid, gid := ou.name, ou.uid, ou.gid
	u := &user.User{HomeDir: ou.home}

	st := w.run(nil, "status", "--json", "--user", name)
	w.mustCode(st, 0, "status --user as root")
	var rep struct {
		User            string `json:"user"`
		Usable          bool   `json:"usable"`
		CredentialsFile string `json:"credentials_file"`
		Login           string `json:"login"`
		VaultTokenTTL   *int64 `json:"vault_token_ttl"`
		VaultError      string `json:"vault_error"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st.stdout)
	}
	if rep.User != name || rep.CredentialsFile != w.creds || rep.Login != "usable" || !rep.Usable || rep.VaultTokenTTL == nil {
		t.Errorf("status --user %s = %+v; want the user's own file %s, usable, its Vault token", name, rep, w.creds)
	}

	for _, how := range []struct {
		what  string
		extra []string
		args  []string
	}{
		{"--user", nil, []string{"sync", "--user", name}},
		{"CLAUDE_AUTH_USER", []string{"CLAUDE_AUTH_USER=" + name}, []string{"sync"}},
	} {
		r := w.run(how.extra, how.args...)
		w.mustCode(r, 0, "sync as root with "+how.what)
		doc, _ := w.vaultDoc()
		got, _ := doc["claude_ai_oauth_json"].(string)
		if !strings.Contains(got, userLogin.RefreshToken) || strings.Contains(got, rootLogin.RefreshToken) {
			t.Errorf("sync with %s: the backup at %s is not the user's login", how.what, w.user.Path)
		}
	}
	// Everything sync made in the user's home is the user's.
	if err := filepath.Walk(u.HomeDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if s := fi.Sys().(*syscall.Stat_t); int(s.Uid) != uid {
			t.Errorf("%s is owned by uid %d; want the user's %d", p, s.Uid, uid)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(w.state, "sync.log")); err != nil {
		t.Errorf("no sync.log in the user's state dir: %v", err)
	}
	for _, p := range []string{filepath.Join(rootHome, "xdg-state"), filepath.Join(rootHome, ".local")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("acting for %s wrote into root's %s", name, p)
		}
	}
	b, _ := os.ReadFile(filepath.Join(rootHome, ".claude", ".credentials.json"))
	if !strings.Contains(string(b), rootLogin.RefreshToken) {
		t.Errorf("root's own credentials file changed")
	}

	// exec runs the command as the user, in the user's environment.
	r := w.run(nil, "exec", "--user", name, "--", "sh", "-c", `echo "$(id -u) $HOME"`)
	w.mustCode(r, 0, "exec --user as root")
	if got, want := strings.TrimSpace(r.stdout), fmt.Sprintf("%d %s", uid, u.HomeDir); got != want {
		t.Errorf("exec --user %s ran as %q; want %q", name, got, want)
	}

	// Refusals: a non-root caller naming another user, anyone naming an
	// unknown one.
	asUser := func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		cmd.Dir = "/"
	}
	userEnv := []string{"HOME=" + u.HomeDir, "CLAUDE_AUTH_SYSTEM_CONFIG=/nonexistent/cas-config"}
	for _, tc := range []struct {
		what string
		mod  func(*exec.Cmd)
		env  []string
		args []string
		want string
	}{
		{"a user naming root", asUser, userEnv, []string{"status", "--user", "root"}, "only root can act for another user"},
		{"a user naming root by env", asUser, append(userEnv, "CLAUDE_AUTH_USER=root"), []string{"sync"}, "only root can act for another user"},
		{"root naming an unknown user", nil, nil, []string{"sync", "--user", "no-such-user-cas"}, "no such user"},
		{"exec for an unknown user", nil, nil, []string{"exec", "--user", "no-such-user-cas", "--", "true"}, "not running true as root in place of another user"},
	} {
		r := w.runWith(tc.env, tc.mod, 2*60e9, tc.args...)
		if r.code != 78 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 78 and %q", tc.what, r.code, r.stderr, tc.want)
		}
	}
}

// newActForWorld is a world whose user is a real OS account (a real home,
// NSS knows it) that root acts for: the account's Vault token and login in
// its home, owned by it; w.env is root's environment (root's own HOME and
// XDG_STATE_HOME, no CLAUDE_AUTH_USER); rootHome holds root's own login.
func newActForWorld(t *testing.T, prefix string) (w *world, ou osUser, rootHome string, rootLogin, userLogin fakeanthropic.Login) {
	t.Helper()
	ou = newOSUser(t, prefix)
	binDirPublic.Do(func() { os.Chmod(filepath.Dir(binDir), 0o711) })

	w = newWorld(t)
	// root's own home holds root's own login: it must never be the one used.
	rootHome = w.home
	rootLogin = w.login()

	// The user's world: a Vault token for its real name, its login, all its own.
	w.home, w.name = ou.home, ou.name
	w.creds = filepath.Join(ou.home, ".claude", ".credentials.json")
	w.state = filepath.Join(ou.home, ".local", "state", "claude-auth-sync")
	tokenFile := filepath.Join(ou.home, ".config", "claude-auth-sync", "vault-token")
	var err error
	if w.user, err = w.srv.Provision(context.Background(), ou.name, tokenFile); err != nil {
		t.Fatal(err)
	}
	w.secrets = append(w.secrets, w.user.Token)
	userLogin = w.login()
	for _, p := range []string{filepath.Join(ou.home, ".config"), filepath.Join(ou.home, ".claude")} {
		if err := filepath.Walk(p, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, ou.uid, ou.gid)
		}); err != nil {
			t.Fatal(err)
		}
	}

	// Root's environment: its own HOME and paths; the journal socket is root's.
	var env []string
	for _, kv := range w.env {
		if !strings.HasPrefix(kv, "CLAUDE_AUTH_USER=") && !strings.HasPrefix(kv, "HOME=") && !strings.HasPrefix(kv, "CLAUDE_AUTH_JOURNAL_SOCKET=") {
			env = append(env, kv)
		}
	}
	w.env = append(env, "HOME="+rootHome, "XDG_STATE_HOME="+filepath.Join(rootHome, "xdg-state"),
		"CLAUDE_AUTH_JOURNAL_SOCKET=off", "CAS_TEST_REAL_USERS=1")
	return w, ou, rootHome, rootLogin, userLogin
}

// Root's `run --user`: the agent's token requests run in its refresh child,
// which is started as the user with the allow-listed environment (root's
// VAULT_TOKEN and AWS_* stay out) and a session of its own, and still has
// all it needs: the token endpoint, the user's files, Vault.
func TestUserFlagAgentRefreshChild(t *testing.T) {
	w, ou, _, _, _ := newActForWorld(t, "casr")
	rootSecrets := []string{"hvs.rootAdminInEnvE2ERefreshChild", "awsRootSecretE2ERefreshChild"}
	w.mu.Lock()
	w.secrets = append(w.secrets, rootSecrets...)
	w.mu.Unlock()
	w.fake.SetExpiresIn(6 * time.Second)
	w.login()
	os.Lchown(w.creds, ou.uid, ou.gid)
	// The child reads the system config again, as the user: a path the user
	// may look at (root's temp dir is not; /etc/claude-auth-sync/config is).
	a := w.startAgentProc([]string{"VAULT_TOKEN=" + rootSecrets[0], "AWS_SECRET_ACCESS_KEY=" + rootSecrets[1],
		"CLAUDE_AUTH_SYSTEM_CONFIG=/nonexistent/cas-config"}, nil, "--user", ou.name)
	defer func() {
		if t.Failed() {
			t.Logf("the agent said:\n%s\nsync.log:\n%s", a.output(), w.syncLog())
		}
	}()
	// Catch the refresh children's environments while they run (root may
	// read them): a sample, so a child can be missed, never misread.
	seen := map[string]bool{}
	var seenMu sync.Mutex
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			for _, pid := range processesOf(ou.uid) {
				cl, _ := os.ReadFile("/proc/" + pid + "/cmdline")
				env, err := os.ReadFile("/proc/" + pid + "/environ")
				if err != nil || !bytes.Contains(cl, []byte("refresh\x00--agent-child")) || len(env) == 0 {
					continue
				}
				seenMu.Lock()
				seen[strings.Join(config.EnvKeys(strings.Split(strings.TrimRight(string(env), "\x00"), "\x00")), ",")] = true
				for _, sec := range rootSecrets {
					if bytes.Contains(env, []byte(sec)) {
						t.Errorf("the refresh child's environment holds one of root's secrets")
					}
				}
				seenMu.Unlock()
			}
			time.Sleep(time.Millisecond)
		}
	}()
	// Two refreshes done and reported, the newest login in the file and in
	// Vault.
	eventually(t, 60*time.Second, "two refreshes by the agent's child, backed up", func() bool {
		if a.cmd.ProcessState != nil {
			t.Fatalf("the agent ended:\n%s", a.output())
		}
		if strings.Count(w.syncLog(), " OK refreshed the login") < 2 {
			return false
		}
		b, _ := os.ReadFile(w.creds)
		doc, _ := w.vaultDoc()
		j, _ := doc["claude_ai_oauth_json"].(string)
		return j != "" && strings.Contains(string(b), refreshTokenOf(t, j))
	})
	a.stop()
	close(stopSampling)
	<-sampled
	seenMu.Lock()
	for keys := range seen {
		t.Logf("CHILD-ENV refresh-child: %s", keys)
	}
	if len(seen) == 0 {
		t.Logf("the sampler caught no refresh child while it ran")
	}
	seenMu.Unlock()
	if c := w.fake.Counters(); c.InvalidGrant != 0 {
		t.Errorf("%d invalid_grant", c.InvalidGrant)
	}
	if strings.Contains(a.output(), " FAIL ") {
		t.Errorf("the agent logged a FAIL:\n%s", a.output())
	}
	fi, err := os.Stat(w.creds)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != ou.uid {
		t.Errorf("the refreshed credentials file is owned by uid %d; want the user's %d", st.Uid, ou.uid)
	}
	t.Logf("%d refreshes through the child as %s", w.fake.Counters().Refreshes, ou.name)
	// A refresh child outlives the agent's stop until its work is done.
	eventually(t, 30*time.Second, "the user's processes ended", func() bool { return len(processesOf(ou.uid)) == 0 })
}

// processesOf lists the pids whose real uid is uid.
func processesOf(uid int) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if fs := strings.Fields(l); len(fs) > 1 && fs[0] == "Uid:" && fs[1] == strconv.Itoa(uid) {
				pids = append(pids, filepath.Base(filepath.Dir(f)))
			}
		}
	}
	return pids
}
