package e2e_test

// The real-systemd harness: a Debian 12 tree booted with systemd as PID 1
// (e2e/nspawn), the .deb installed with dpkg, real units started by the real
// system and user managers, the real journal. Vault and the fake Anthropic run
// on the host's loopback, which the container shares.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/nspawn"
)

// Two builds of the package from this tree, so an upgrade replaces a binary
// that is really different (the version is compiled in).
const (
	oldVersion = "1.2.2-e2e"
	newVersion = "1.2.3-e2e"
)

var debBuild struct {
	once     sync.Once
	old, new string
	rpms     [2]string // the same two versions as .rpm
	err      error
}

// debs builds the old and new .deb once per test binary (make package).
func debs(t *testing.T) (old, new string) {
	t.Helper()
	debBuild.once.Do(func() {
		root := repoRoot(t)
		out := filepath.Join(filepath.Dir(binDir), "debs")
		if err := os.MkdirAll(out, 0o755); err != nil {
			debBuild.err = err
			return
		}
		build := func(v string) string {
			cmd := exec.Command("make", "package", "VERSION="+v)
			cmd.Dir = root
			if b, err := cmd.CombinedOutput(); err != nil {
				debBuild.err = fmt.Errorf("make package VERSION=%s: %v\n%s", v, err, b)
				return ""
			}
			pv := strings.ReplaceAll(v, "-", ".")
			src := filepath.Join(root, "dist", "claude-auth-sync_"+pv+"_amd64.deb")
			dst := filepath.Join(out, filepath.Base(src))
			if b, err := exec.Command("cp", src, dst).CombinedOutput(); err != nil {
				debBuild.err = fmt.Errorf("cp %s: %v: %s", src, err, b)
				return ""
			}
			rpm := filepath.Join(root, "dist", "claude-auth-sync-"+pv+"-1.x86_64.rpm")
			if b, err := exec.Command("cp", rpm, out).CombinedOutput(); err != nil {
				debBuild.err = fmt.Errorf("cp %s: %v: %s", rpm, err, b)
				return ""
			}
			return dst
		}
		if debBuild.old = build(oldVersion); debBuild.err != nil {
			return
		}
		debBuild.new = build(newVersion)
	})
	if debBuild.err != nil {
		t.Fatal(debBuild.err)
	}
	return debBuild.old, debBuild.new
}

// rpms is the .rpm of the same two builds as debs.
func rpms(t *testing.T) (old, new string) {
	t.Helper()
	debs(t)
	dir := filepath.Join(filepath.Dir(binDir), "debs")
	v := func(s string) string {
		return filepath.Join(dir, "claude-auth-sync-"+strings.ReplaceAll(s, "-", ".")+"-1.x86_64.rpm")
	}
	return v(oldVersion), v(newVersion)
}

// needContainers: a loud failure under CI=true, a skip elsewhere.
func needContainers(t *testing.T) string {
	t.Helper()
	why := nspawn.Available()
	faultNeeds(t, why == "", why)
	tree, err := nspawn.Tree()
	faultNeeds(t, err == nil, fmt.Sprint(err))
	return tree
}

// sdHost is one booted workstation.
type sdHost struct {
	t     *testing.T
	c     *nspawn.Container
	fake  *fakeanthropic.Server
	api   *httptest.Server
	vault *faultProxy // every agent's Vault goes through it
	mu    sync.Mutex
	// secrets: every Vault token this host's users hold (the fake's tokens
	// are read from it at the end).
	secrets []string
}

type sdUser struct {
	name     string
	uid, gid int
	home     string // inside
	hostHome string // the same dir seen from the host
}

func (u sdUser) creds() string { return filepath.Join(u.hostHome, ".claude", ".credentials.json") }
func (u sdUser) stateDir() string {
	return filepath.Join(u.hostHome, ".local", "state", "claude-auth-sync")
}

// bootHost boots a container with the stand-in claude and the real Claude
// CLI bound read-only, a fake Anthropic and a Vault proxy on the host.
func bootHost(t *testing.T, name string) *sdHost {
	t.Helper()
	tree := needContainers(t)
	h := &sdHost{t: t, fake: fakeanthropic.New()}
	h.api = httptest.NewServer(h.fake.Handler())
	t.Cleanup(h.api.Close)
	h.vault = newFaultProxy(t, vsrv.Addr)
	binds := []nspawn.Bind{{Host: binDir, Container: "/opt/e2e/bin", ReadOnly: true}}
	if cli, err := exec.Command("bash", filepath.Join(repoRoot(t), "e2e", "claudecli", "ensure-claude.sh"), "2.1.332").Output(); err == nil {
		binds = append(binds, nspawn.Bind{Host: filepath.Dir(strings.TrimSpace(string(cli))), Container: "/opt/claude-code", ReadOnly: true})
	} else {
		t.Fatalf("the real Claude CLI 2.1.332: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := nspawn.Boot(ctx, tree, t.TempDir(), nspawn.Options{Name: name, Binds: binds})
	if err != nil {
		t.Fatalf("boot %s: %v", name, err)
	}
	t.Cleanup(c.Stop)
	h.c = c
	fake := h.fake
	registerSecrets(func() []string {
		h.mu.Lock()
		defer h.mu.Unlock()
		return append(fake.Issued(), h.secrets...)
	})
	t.Logf("SYSTEMD-REPORT container %s: boot to running in %s", name, c.BootTime.Round(time.Millisecond))
	return h
}

// sh runs a bash script inside as root; a failure fails the test.
func (h *sdHost) sh(script string) string {
	h.t.Helper()
	out, err := h.try(script)
	if err != nil {
		h.t.Fatalf("in %s: %s: %v\n%s", h.c.Name, script, err, out)
	}
	return out
}

func (h *sdHost) try(script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.c.Exec(ctx, "bash", "-c", script)
	return string(out), err
}

// asUser runs a bash script as u, with the environment that reaches u's
// user manager.
func (h *sdHost) asUser(u sdUser, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := h.c.UserCommand(ctx, u.name, u.uid, "bash", "-c", script).CombinedOutput()
	return string(out), err
}

func (h *sdHost) mustAsUser(u sdUser, script string) string {
	h.t.Helper()
	out, err := h.asUser(u, script)
	if err != nil {
		h.t.Fatalf("as %s: %s: %v\n%s", u.name, script, err, out)
	}
	return out
}

// install copies a .deb in and installs it with dpkg, as an admin would.
func (h *sdHost) install(deb string) string {
	h.t.Helper()
	dst := filepath.Join(h.c.Root, "root", filepath.Base(deb))
	if b, err := exec.Command("cp", deb, dst).CombinedOutput(); err != nil {
		h.t.Fatalf("cp: %v: %s", err, b)
	}
	return h.sh("DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold /root/" + filepath.Base(deb))
}

// configure writes the fleet config and the drop-ins a site would add: the
// Anthropic address for the check and the token endpoint (here the fake's).
func (h *sdHost) configure(vaultAddr string) {
	h.t.Helper()
	cfg := "VAULT_ADDR=" + vaultAddr + "\n" +
		"CLAUDE_AUTH_CLAUDE_BIN=/opt/e2e/bin/claude\n" +
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=" + h.api.URL + "/v1/oauth/token\n" +
		// The tests wait for each agent's first check (a site with few users
		// may do the same); the spread has its own test (storm_test.go).
		"CLAUDE_AUTH_CHECK_SPREAD=0\n"
	h.writeFile("/etc/claude-auth-sync/config", cfg, 0o644)
	dropIn := "[Service]\nEnvironment=ANTHROPIC_BASE_URL=" + h.api.URL + "\n"
	for _, d := range []string{
		"/etc/systemd/system/claude-auth-sync-agent@.service.d",
		"/etc/systemd/system/claude-auth-sync@.service.d",
		"/etc/systemd/user/claude-auth-sync.service.d",
	} {
		h.writeFile(d+"/e2e.conf", dropIn, 0o644)
	}
	h.sh("systemctl daemon-reload")
}

// writeFile writes a file inside the container (from the host), parents 0755.
func (h *sdHost) writeFile(path, body string, mode os.FileMode) {
	h.t.Helper()
	p := filepath.Join(h.c.Root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		h.t.Fatal(err)
	}
}

// addUser makes a real account inside the container.
func (h *sdHost) addUser(name string) sdUser {
	h.t.Helper()
	h.sh("useradd -m -U -s /bin/bash " + name)
	ids := strings.Fields(h.sh("id -u " + name + "; id -g " + name))
	uid, _ := strconv.Atoi(ids[0])
	gid, _ := strconv.Atoi(ids[1])
	return sdUser{name: name, uid: uid, gid: gid, home: "/home/" + name, hostHome: filepath.Join(h.c.Root, "home", name)}
}

// vaultToken mints u's scoped token (what provision would do) into u's token
// file, owned by u.
func (h *sdHost) vaultToken(u sdUser) {
	h.t.Helper()
	vu, err := vsrv.Provision(context.Background(), u.name, filepath.Join(u.hostHome, ".config", "claude-auth-sync", "vault-token"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.secrets = append(h.secrets, vu.Token)
	h.mu.Unlock()
	h.sh(fmt.Sprintf("chown -R %s:%s %s/.config", u.name, u.name, u.home))
}

// login writes a fresh login from the fake as u's credentials file, the way
// Claude does (temp file, rename), owned by u.
func (h *sdHost) login(u sdUser) fakeanthropic.Login {
	h.t.Helper()
	l := h.fake.Issue()
	h.writeLogin(u, l)
	return l
}

func (h *sdHost) writeLogin(u sdUser, l fakeanthropic.Login) {
	h.t.Helper()
	dir := filepath.Dir(u.creds())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chown(dir, u.uid, u.gid); err != nil {
		h.t.Fatal(err)
	}
	tmp := u.creds() + ".e2e-tmp"
	if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Chown(tmp, u.uid, u.gid); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(tmp, u.creds()); err != nil {
		h.t.Fatal(err)
	}
}

// vaultRefreshToken is the refresh token in u's Vault document ("" if none).
func vaultRefreshToken(t *testing.T, user string) (string, int) {
	t.Helper()
	s, err := rootKV().Get(context.Background(), "workstation/claude-users/"+user)
	if err != nil || s == nil {
		return "", 0
	}
	j, _ := s.Data["claude_ai_oauth_json"].(string)
	if j == "" {
		return "", s.VersionMetadata.Version
	}
	return refreshTokenOf(t, j), s.VersionMetadata.Version
}

// rotateAndWait writes a new login for u and waits until Vault holds it,
// returning how long that took from the rename.
func (h *sdHost) rotateAndWait(u sdUser) time.Duration {
	h.t.Helper()
	l := h.fake.Issue()
	start := time.Now()
	h.writeLogin(u, l)
	eventually(h.t, 30*time.Second, u.name+"'s new login in Vault", func() bool {
		rt, _ := vaultRefreshToken(h.t, u.name)
		return rt == l.RefreshToken
	})
	return time.Since(start)
}

// props reads unit properties from the system manager (u == nil) or u's.
func (h *sdHost) props(u *sdUser, unit string, names ...string) map[string]string {
	h.t.Helper()
	script := "systemctl show " + unit + " -p " + strings.Join(names, ",")
	var out string
	if u == nil {
		out = h.sh(script)
	} else {
		out = h.mustAsUser(*u, strings.Replace(script, "systemctl ", "systemctl --user ", 1))
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

// monoGap is b - a for two *TimestampMonotonic values (µs).
func monoGap(a, b string) time.Duration {
	x, _ := strconv.ParseInt(a, 10, 64)
	y, _ := strconv.ParseInt(b, 10, 64)
	return time.Duration(y-x) * time.Microsecond
}

// journalEntry is one entry of `journalctl -o json`.
type journalEntry map[string]any

func (e journalEntry) str(k string) string {
	switch v := e[k].(type) {
	case string:
		return v
	case []any: // a field journald could not show as text
		return fmt.Sprint(v...)
	}
	return ""
}

// journal reads every entry with our identifier, and the raw JSON text.
func (h *sdHost) journal() ([]journalEntry, string) {
	h.t.Helper()
	out := h.sh("journalctl --no-pager -t claude-auth-sync -o json")
	var es []journalEntry
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var e journalEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			h.t.Fatalf("journalctl -o json line %q: %v", l, err)
		}
		es = append(es, e)
	}
	return es, out
}

// journalCount counts our journal lines matching re.
func (h *sdHost) journalCount(re string) int {
	h.t.Helper()
	out, _ := h.try("journalctl --no-pager -t claude-auth-sync -o cat")
	return len(regexp.MustCompile("(?m)"+re).FindAllString(out, -1))
}

// waitUserManager enables lingering for u and waits until u's manager runs.
func (h *sdHost) waitUserManager(u sdUser) {
	h.t.Helper()
	h.sh("loginctl enable-linger " + u.name)
	eventually(h.t, 60*time.Second, u.name+"'s user manager", func() bool {
		out, _ := h.asUser(u, "systemctl --user is-system-running")
		s := strings.TrimSpace(out)
		return s == "running" || s == "degraded"
	})
}

// useRealClaude points u's unit (through the drop-in at dropIn) at the real
// Claude CLI 2.1.332 (bound read-only at /opt/claude-code), which talks to the
// fake over plain http, and marks u's onboarding done as a first run would.
func (h *sdHost) useRealClaude(u sdUser, dropIn string) {
	h.t.Helper()
	h.writeFile(filepath.Join(u.home, ".claude.json"), `{"hasCompletedOnboarding":true}`, 0o600)
	h.sh(fmt.Sprintf("chown %s:%s %s/.claude.json", u.name, u.name, u.home))
	h.writeFile(dropIn, "[Service]\nEnvironment=CLAUDE_AUTH_CLAUDE_BIN=/opt/claude-code/claude "+
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1\n", 0o644)
	h.sh("systemctl daemon-reload")
}
