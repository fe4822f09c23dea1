package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
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
