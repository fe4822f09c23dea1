package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Provisioning runs as root against the real Vault server with real OS users
// made for the test (useradd -m, removed with userdel -r). systemctl is a
// recording stub: no systemd runs here.

// osUser is a real account made for one test.
type osUser struct {
	name     string
	uid, gid int
	home     string
}

func (u osUser) tokenFile() string {
	return filepath.Join(u.home, ".config", "claude-auth-sync", "vault-token")
}

func newOSUser(t *testing.T, prefix string) osUser {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("provisioning e2e needs root (CI runs as root): it creates OS users")
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := prefix + hex.EncodeToString(rnd[:])
	if out, err := exec.Command("useradd", "-m", "-U", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", "-r", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "mail spool") {
			t.Errorf("userdel -r %s: %v: %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return osUser{name: name, uid: uid, gid: gid, home: u.HomeDir}
}

// provisionRig is the root side: a roster, a config, a systemctl recorder.
type provisionRig struct {
	t        *testing.T
	dir      string
	roster   string
	config   string
	state    string
	stub     string
	stubDir  string
	secrets  []string
	outputs  []string
	extraEnv []string
}

func newProvisionRig(t *testing.T) *provisionRig {
	t.Helper()
	dir := t.TempDir()
	r := &provisionRig{t: t, dir: dir, roster: filepath.Join(dir, "roster.yaml"),
		config: filepath.Join(dir, "config"), state: filepath.Join(dir, "state"),
		stub: filepath.Join(dir, "systemctl"), stubDir: filepath.Join(dir, "systemd")}
	if err := os.WriteFile(r.config, []byte("VAULT_ADDR="+vsrv.Addr+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"enabled", "active"} {
		if err := os.MkdirAll(filepath.Join(r.stubDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The recorder answers is-enabled/is-active from its state dir, and
	// enable --now / disable --now change it, like systemd would.
	script := `#!/bin/sh
d='` + r.stubDir + `'
echo "$*" >> "$d/calls"
case "$1" in
is-enabled) if [ -e "$d/enabled/$2" ]; then echo enabled; exit 0; fi; echo disabled; exit 1 ;;
is-active) if [ -e "$d/active/$2" ]; then echo active; exit 0; fi; echo inactive; exit 3 ;;
enable) [ "$2" = --now ] || exit 9; shift 2; for u; do touch "$d/enabled/$u" "$d/active/$u"; done ;;
disable) [ "$2" = --now ] || exit 9; shift 2; for u; do rm -f "$d/enabled/$u" "$d/active/$u"; done ;;
*) echo "unexpected systemctl $*" >&2; exit 9 ;;
esac
`
	if err := os.WriteFile(r.stub, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r.secrets = append(r.secrets, vsrv.RootTokenValue())
	t.Cleanup(r.assertNoSecrets)
	return r
}

func (r *provisionRig) writeRoster(body string) {
	r.t.Helper()
	if err := os.WriteFile(r.roster, []byte(body), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// setUnit puts a unit into the recorder's state, as if enabled earlier.
func (r *provisionRig) setUnit(unit string, on bool) {
	for _, d := range []string{"enabled", "active"} {
		p := filepath.Join(r.stubDir, d, unit)
		if on {
			os.WriteFile(p, nil, 0o644)
		} else {
			os.Remove(p)
		}
	}
}

// changes returns the state-changing systemctl calls since the last call.
func (r *provisionRig) changes() []string {
	data, _ := os.ReadFile(filepath.Join(r.stubDir, "calls"))
	os.Remove(filepath.Join(r.stubDir, "calls"))
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		switch {
		case l == "":
		case strings.HasPrefix(l, "is-enabled ") || strings.HasPrefix(l, "is-active "):
		default:
			out = append(out, l)
		}
	}
	sort.Strings(out)
	return out
}

// run runs `claude-auth-sync provision` as root; admin says whether the admin
// (root) token is given, through VAULT_TOKEN.
func (r *provisionRig) run(admin bool, args ...string) result {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args = append([]string{"provision", "--roster", r.roster, "--config", r.config, "--state-dir", r.state}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), args...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + r.dir, "CLAUDE_AUTH_SYSTEMCTL=" + r.stub}, r.extraEnv...)
	if admin {
		cmd.Env = append(cmd.Env, "VAULT_TOKEN="+vsrv.RootTokenValue())
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatalf("provision: %v", err)
	}
	r.outputs = append(r.outputs, out.String(), errb.String())
	return result{code, out.String(), errb.String()}
}

func (r *provisionRig) mustRun(admin bool, want int, args ...string) result {
	r.t.Helper()
	res := r.run(admin, args...)
	if res.code != want {
		r.t.Fatalf("provision %v: exit %d; want %d\nstdout:\n%s\nstderr:\n%s", args, res.code, want, res.stdout, res.stderr)
	}
	return res
}

// assertNoSecrets: neither the root token nor any minted token shows in output.
func (r *provisionRig) assertNoSecrets() {
	for _, s := range r.secrets {
		for _, out := range r.outputs {
			if s != "" && strings.Contains(out, s) {
				r.t.Errorf("a token (prefix %q) appears in provision's output", s[:min(6, len(s))])
			}
		}
	}
}

// readToken reads a user's token file as root (and remembers the token as a
// secret that must never be printed).
func (r *provisionRig) readToken(u osUser) string {
	r.t.Helper()
	b, err := os.ReadFile(u.tokenFile())
	if err != nil {
		r.t.Fatalf("read %s's token file: %v", u.name, err)
	}
	tok := strings.TrimSpace(string(b))
	r.secrets = append(r.secrets, tok)
	return tok
}

func lineFor(out, user string) string {
	m := regexp.MustCompile(`(?m)^user=` + regexp.QuoteMeta(user) + ` .*$`).FindString(out)
	return m
}

func accessorCount(t *testing.T) int {
	t.Helper()
	s, err := vsrv.Root().Logical().List("auth/token/accessors")
	if err != nil || s == nil {
		t.Fatalf("list accessors: %v", err)
	}
	keys, _ := s.Data["keys"].([]any)
	return len(keys)
}

// policyCaps parses a policy's rules into path -> sorted capabilities, read
// back from Vault (sys/policy) and checked against the spec, not against the
// code that wrote it.
func policyCaps(t *testing.T, name string) map[string]string {
	t.Helper()
	rules, err := vsrv.Root().Sys().GetPolicy(name)
	if err != nil {
		t.Fatalf("read policy %s: %v", name, err)
	}
	if rules == "" {
		return nil
	}
	re := regexp.MustCompile(`path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*(?:allowed_parameters\s*=\s*\{([^}]*)\}\s*)?\}`)
	param := regexp.MustCompile(`"([^"]+)"\s*=\s*\[([^\]]*)\]`)
	got := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(rules, -1) {
		var caps []string
		for _, c := range strings.Split(m[2], ",") {
			caps = append(caps, strings.Trim(strings.TrimSpace(c), `"`))
		}
		sort.Strings(caps)
		got[m[1]] = strings.Join(caps, ",")
		// allowed_parameters as "; allowed name=[values]", sorted by name.
		var params []string
		for _, pm := range param.FindAllStringSubmatch(m[3], -1) {
			params = append(params, pm[1]+"=["+strings.TrimSpace(pm[2])+"]")
		}
		sort.Strings(params)
		if strings.TrimSpace(param.ReplaceAllString(m[3], "")) != "" {
			t.Errorf("policy %s: allowed_parameters of %s not understood: %q", name, m[1], m[3])
		}
		if len(params) > 0 {
			got[m[1]] += "; allowed " + strings.Join(params, " ")
		}
	}
	if rest := re.ReplaceAllString(rules, ""); strings.TrimSpace(rest) != "" {
		t.Errorf("policy %s has more than path blocks: %q", name, rest)
	}
	return got
}

func wantCaps(user string) map[string]string {
	p := "workstation/claude-users/" + user
	return map[string]string{
		"secret/data/" + p:                   "create,read,update",
		"secret/data/" + p + "/hosts/+":      "create,read,update",
		"secret/data/" + p + "/hosts/":       "deny",
		"secret/data/" + p + "/hosts/.":      "deny",
		"secret/data/" + p + "/hosts/..":     "deny",
		"secret/metadata/" + p:               "patch,read; allowed custom_metadata=[]",
		"secret/metadata/" + p + "/hosts/+":  "read",
		"secret/metadata/" + p + "/hosts/":   "deny",
		"secret/metadata/" + p + "/hosts/.":  "deny",
		"secret/metadata/" + p + "/hosts/..": "deny",
		"auth/token/lookup-self":             "read",
		"auth/token/renew-self":              "update",
		"sys/capabilities-self":              "update",
	}
}

func statOwner(t *testing.T, path string) (mode os.FileMode, uid, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fi.Mode(), int(st.Uid), int(st.Gid)
}

// checkTokenFiles: dirs 0700 and the token 0600, all the user's.
func checkTokenFiles(t *testing.T, u osUser) {
	t.Helper()
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{filepath.Join(u.home, ".config", "claude-auth-sync"), os.ModeDir | 0o700},
		{u.tokenFile(), 0o600},
	} {
		mode, uid, gid := statOwner(t, c.path)
		if mode != c.mode || uid != u.uid || gid != u.gid {
			t.Errorf("%s: mode %v uid %d gid %d; want %v uid %d gid %d", c.path, mode, uid, gid, c.mode, u.uid, u.gid)
		}
	}
	if _, uid, _ := statOwner(t, filepath.Join(u.home, ".config")); uid != u.uid {
		t.Errorf("~/.config of %s owned by %d", u.name, uid)
	}
}

// checkToken: periodic 768h, orphan, renewable, the fleet's display name and
// only the user's policy (no default); looked up as root.
func checkToken(t *testing.T, u osUser, tok string) {
	t.Helper()
	s, err := vsrv.Root().Auth().Token().Lookup(tok)
	if err != nil {
		t.Fatalf("look up %s's token as root: %v", u.name, err)
	}
	d := s.Data
	var pols []string
	for _, p := range d["policies"].([]any) {
		pols = append(pols, p.(string))
	}
	sort.Strings(pols)
	if got, want := strings.Join(pols, ","), "workstation-claude-"+u.name; got != want {
		t.Errorf("%s's token policies = %s; want %s", u.name, got, want)
	}
	if got := fmt.Sprint(d["period"]); got != "2764800" {
		t.Errorf("%s's token period = %s; want 2764800 (768h)", u.name, got)
	}
	if d["orphan"] != true || d["renewable"] != true {
		t.Errorf("%s's token orphan=%v renewable=%v; want both true", u.name, d["orphan"], d["renewable"])
	}
	if got, want := d["display_name"], "token-devvm-claude-auth-"+u.name; got != want {
		t.Errorf("%s's token display name = %v; want %s", u.name, got, want)
	}
}

func clientWith(tok string) *vault.Client {
	c := vsrv.Root()
	c.SetToken(tok)
	return c
}

func forbidden(err error) bool {
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

type fileID struct {
	ino   uint64
	mtime time.Time
	data  string
}

func identify(t *testing.T, path string) fileID {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	data, _ := os.ReadFile(path)
	return fileID{fi.Sys().(*syscall.Stat_t).Ino, fi.ModTime(), string(data)}
}

// The whole life of a roster: three users (normal, parked, claude_auth false),
// a second run that changes nothing, a run with no admin token that changes
// nothing and says what it needs, a revoked token replaced, a new user, and a
// user removed from the roster.
func TestProvisionRoster(t *testing.T) {
	rig := newProvisionRig(t)
	alice, bob, carol := newOSUser(t, "cas-p-"), newOSUser(t, "cas-p-"), newOSUser(t, "cas-p-")
	rig.writeRoster(fmt.Sprintf(`users:
  %s: {tier: standard}
  %s: {parked: true, tier: gpu}
  %s:
    claude_auth: false
`, alice.name, bob.name, carol.name))
	// bob's agent was running before he was parked.
	rig.setUnit("claude-auth-sync-agent@"+bob.name+".service", true)
	ctx := context.Background()

	// A dry run with the admin token says what it would do and does nothing.
	before := accessorCount(t)
	res := rig.mustRun(true, 0, "--dry-run")
	if l := lineFor(res.stdout, alice.name); !strings.Contains(l, "dry run: would write policy workstation-claude-"+alice.name) || !strings.Contains(l, "would mint a token (no token file)") {
		t.Errorf("dry run line for alice: %q", l)
	}
	if got := rig.changes(); len(got) != 0 {
		t.Errorf("dry run called systemctl %q", got)
	}
	if accessorCount(t) != before || policyCaps(t, "workstation-claude-"+alice.name) != nil {
		t.Errorf("dry run minted a token or wrote a policy")
	}
	if _, err := os.Lstat(filepath.Join(alice.home, ".config", "claude-auth-sync")); !os.IsNotExist(err) {
		t.Errorf("dry run created alice's config dir (%v)", err)
	}

	// First real run.
	res = rig.mustRun(true, 0)
	t.Logf("first run:\n%s", res.stdout)
	if got, want := rig.changes(), []string{
		"disable --now claude-auth-sync-agent@" + bob.name + ".service claude-auth-sync@" + bob.name + ".timer",
		"enable --now claude-auth-sync-agent@" + alice.name + ".service claude-auth-sync@" + alice.name + ".timer",
	}; !slices.Equal(got, want) {
		t.Errorf("systemctl changes = %q; want %q", got, want)
	}
	if got, want := policyCaps(t, "workstation-claude-"+alice.name), wantCaps(alice.name); !mapsEqual(got, want) {
		t.Errorf("alice's policy = %v; want %v", got, want)
	}
	for _, u := range []osUser{bob, carol} {
		if p := policyCaps(t, "workstation-claude-"+u.name); p != nil {
			t.Errorf("inactive user %s got a policy %v", u.name, p)
		}
		if _, err := os.Lstat(u.tokenFile()); !os.IsNotExist(err) {
			t.Errorf("inactive user %s got a token file (%v)", u.name, err)
		}
	}
	checkTokenFiles(t, alice)
	aliceTok := rig.readToken(alice)
	checkToken(t, alice, aliceTok)
	if !strings.Contains(lineFor(res.stdout, bob.name), "SKIP parked: stopped and disabled") ||
		lineFor(res.stdout, carol.name) != "" { // carol's units were off already: nothing to say
		t.Errorf("parked/off lines wrong:\n%s", res.stdout)
	}
	if accessorCount(t) != before+1 {
		t.Errorf("first run minted %d tokens; want 1", accessorCount(t)-before)
	}

	// The token is scoped: its own path works, bob's path is 403, and the
	// agent's own check (lookup-self, drift, renew) accepts it as alice.
	ac := clientWith(aliceTok).KVv2("secret")
	if _, err := ac.Put(ctx, "workstation/claude-users/"+alice.name, map[string]any{"probe": "1"}); err != nil {
		t.Errorf("alice writes her own path: %v", err)
	}
	if _, err := ac.Put(ctx, "workstation/claude-users/"+bob.name, map[string]any{"probe": "1"}); !forbidden(err) {
		t.Errorf("alice writes bob's path: %v; want 403", err)
	}
	if _, err := ac.Get(ctx, "workstation/claude-users/"+bob.name); !forbidden(err) {
		t.Errorf("alice reads bob's path: %v; want 403", err)
	}
	if _, err := clientWith(aliceTok).Logical().Delete("secret/metadata/workstation/claude-users/" + alice.name); !forbidden(err) {
		t.Errorf("alice deletes her metadata: %v; want 403", err)
	}
	st := runAs(t, alice, rig, "status", "--json")
	if !strings.Contains(st, `"vault_token_ttl"`) || strings.Contains(st, `"vault_error"`) {
		t.Errorf("status as alice with the provisioned token:\n%s", st)
	}

	// A second run changes nothing: no token, no file, no systemctl change.
	id := identify(t, alice.tokenFile())
	before = accessorCount(t)
	res = rig.mustRun(true, 0)
	if got := rig.changes(); len(got) != 0 {
		t.Errorf("second run: systemctl changes %q", got)
	}
	if accessorCount(t) != before || identify(t, alice.tokenFile()) != id {
		t.Errorf("second run minted a token or rewrote the file")
	}
	if l := lineFor(res.stdout, alice.name); l != "" { // unchanged: no line
		t.Errorf("second run, alice: %q", l)
	}
	if !strings.Contains(res.stdout, "0 changed, 3 unchanged, ") {
		t.Errorf("second run summary: %s", res.stdout)
	}

	// Without an admin token: dave is new, alice's token was revoked. Nothing
	// changes; the run says what it needs.
	dave := newOSUser(t, "cas-p-")
	rig.writeRoster(fmt.Sprintf("users:\n  %s: {}\n  %s: {parked: true}\n  %s: {claude_auth: false}\n  %s: {}\n", alice.name, bob.name, carol.name, dave.name))
	if err := vsrv.Root().Auth().Token().RevokeOrphan(aliceTok); err != nil {
		t.Fatal(err)
	}
	before = accessorCount(t)
	stateBefore, _ := os.ReadFile(filepath.Join(rig.state, "provisioned-users.json"))
	res = rig.mustRun(false, 0)
	t.Logf("no admin token:\n%s", res.stdout)
	if l := lineFor(res.stdout, alice.name); !strings.Contains(l, " WARN needs an admin token (VAULT_TOKEN or --admin-token-file) for a new Vault token (the token is expired or revoked)") {
		t.Errorf("no-admin run, alice: %q", l)
	}
	if l := lineFor(res.stdout, dave.name); !strings.Contains(l, " WARN needs an admin token") || !strings.Contains(l, "(no token file)") || !strings.Contains(l, "enable and start claude-auth-sync-agent@"+dave.name+".service and claude-auth-sync@"+dave.name+".timer") {
		t.Errorf("no-admin run, dave: %q", l)
	}
	if !strings.Contains(res.stdout, "nothing was changed") {
		t.Errorf("no-admin run summary: %s", res.stdout)
	}
	if got := rig.changes(); len(got) != 0 {
		t.Errorf("no-admin run: systemctl changes %q", got)
	}
	if accessorCount(t) != before || identify(t, alice.tokenFile()) != id || policyCaps(t, "workstation-claude-"+dave.name) != nil {
		t.Errorf("no-admin run changed Vault or alice's token file")
	}
	if _, err := os.Lstat(filepath.Join(dave.home, ".config", "claude-auth-sync")); !os.IsNotExist(err) {
		t.Errorf("no-admin run created dave's config dir (%v)", err)
	}
	if stateAfter, _ := os.ReadFile(filepath.Join(rig.state, "provisioned-users.json")); !bytes.Equal(stateBefore, stateAfter) {
		t.Errorf("no-admin run changed the managed-users state")
	}

	// With the admin token: alice's revoked token is replaced, dave is set up.
	res = rig.mustRun(true, 0)
	t.Logf("after revoke, admin:\n%s", res.stdout)
	if got, want := rig.changes(), []string{"enable --now claude-auth-sync-agent@" + dave.name + ".service claude-auth-sync@" + dave.name + ".timer"}; !slices.Equal(got, want) {
		t.Errorf("systemctl changes = %q; want %q", got, want)
	}
	newTok := rig.readToken(alice)
	if newTok == aliceTok {
		t.Errorf("alice's revoked token was kept")
	}
	if !strings.Contains(lineFor(res.stdout, alice.name), "minted a token (the token is expired or revoked") {
		t.Errorf("alice line: %s", lineFor(res.stdout, alice.name))
	}
	checkToken(t, alice, newTok)
	checkTokenFiles(t, alice)
	checkTokenFiles(t, dave)
	checkToken(t, dave, rig.readToken(dave))
	if got, want := policyCaps(t, "workstation-claude-"+dave.name), wantCaps(dave.name); !mapsEqual(got, want) {
		t.Errorf("dave's policy = %v; want %v", got, want)
	}
	if _, err := clientWith(newTok).KVv2("secret").Get(ctx, "workstation/claude-users/"+dave.name); !forbidden(err) {
		t.Errorf("alice reads dave's path: %v; want 403", err)
	}

	// alice leaves the roster: her unit goes off, her Vault data and policy stay.
	rig.writeRoster(fmt.Sprintf("users:\n  %s: {parked: true}\n  %s: {claude_auth: false}\n  %s: {}\n", bob.name, carol.name, dave.name))
	res = rig.mustRun(true, 0)
	if got, want := rig.changes(), []string{"disable --now claude-auth-sync-agent@" + alice.name + ".service claude-auth-sync@" + alice.name + ".timer"}; !slices.Equal(got, want) {
		t.Errorf("systemctl changes after removing alice = %q; want %q", got, want)
	}
	if !strings.Contains(lineFor(res.stdout, alice.name), "SKIP removed from the roster: stopped and disabled claude-auth-sync-agent@"+alice.name+".service and claude-auth-sync@"+alice.name+".timer (Vault data kept)") {
		t.Errorf("removed line: %q", lineFor(res.stdout, alice.name))
	}
	if s, err := vsrv.Root().KVv2("secret").Get(ctx, "workstation/claude-users/"+alice.name); err != nil || s.Data["probe"] != "1" {
		t.Errorf("alice's Vault data after removal: %v, %v", s, err)
	}
	if policyCaps(t, "workstation-claude-"+alice.name) == nil {
		t.Errorf("alice's policy was deleted")
	}
	var managed struct{ Users []string }
	data, _ := os.ReadFile(filepath.Join(rig.state, "provisioned-users.json"))
	json.Unmarshal(data, &managed)
	if slices.Contains(managed.Users, alice.name) || !slices.Contains(managed.Users, dave.name) {
		t.Errorf("managed users = %v", managed.Users)
	}
	// And once more: nothing left to do.
	res = rig.mustRun(true, 0)
	if got := rig.changes(); len(got) != 0 || strings.Contains(res.stdout, alice.name) {
		t.Errorf("run after removal: changes %q, output:\n%s", got, res.stdout)
	}
}

// runAs runs the real binary as the OS user, as the agent's unit would.
func runAs(t *testing.T, u osUser, rig *provisionRig, args ...string) string {
	t.Helper()
	// The test's bin dir is root's (0700): give the user a copy it can run.
	pub, err := os.MkdirTemp("", "cas-bin-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(pub)
	os.Chmod(pub, 0o755)
	bin, _ := os.ReadFile(filepath.Join(binDir, "claude-auth-sync"))
	if err := os.WriteFile(filepath.Join(pub, "claude-auth-sync"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, _ := os.ReadFile(rig.config)
	os.WriteFile(filepath.Join(pub, "config"), cfg, 0o644)
	cmd := exec.Command(filepath.Join(pub, "claude-auth-sync"), args...)
	cmd.Env = []string{"HOME=" + u.home, "USER=" + u.name, "PATH=/usr/bin:/bin", "VAULT_ADDR=" + vsrv.Addr,
		"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(pub, "config"), "CLAUDE_AUTH_CLAUDE_BIN=/bin/false", "CLAUDE_AUTH_JOURNAL_SOCKET=off"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
	out, err := cmd.CombinedOutput()
	rig.outputs = append(rig.outputs, string(out))
	var ee *exec.ExitError
	// status exits 3 for a user not logged in yet: that is an answer, not a failure.
	if err != nil && !(args[0] == "status" && errors.As(err, &ee) && ee.ExitCode() == 3) {
		t.Errorf("%v as %s: %v\n%s", args, u.name, err, out)
	}
	return string(out)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// snapshot is the owner, mode and content of everything under a path, to
// prove that a refused run changed nothing outside the user's tree.
func snapshot(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range roots {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				out[p] = "err " + err.Error()
				return nil
			}
			st := fi.Sys().(*syscall.Stat_t)
			v := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
			if fi.Mode().IsRegular() {
				data, _ := os.ReadFile(p)
				v += " " + string(data)
			}
			if fi.Mode()&os.ModeSymlink != 0 {
				target, _ := os.Readlink(p)
				v += " -> " + target
			}
			out[p] = v
			return nil
		})
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, fmt.Sprintf("%s: %q -> %q", k, v, b[k]))
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			d = append(d, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	sort.Strings(d)
	return d
}

// Symlink attacks: for every path provision writes (~/.config, its
// claude-auth-sync dir, the token file) a link the user planted, to a
// root-owned file or dir and to another user's home, is refused, and nothing
// outside the user's tree changes owner, mode or content.
func TestProvisionRefusesSymlinks(t *testing.T) {
	rig := newProvisionRig(t)
	other := newOSUser(t, "cas-o-")
	otherSecret := filepath.Join(other.home, "private")
	if err := os.WriteFile(otherSecret, []byte("other's data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Lchown(otherSecret, other.uid, other.gid)
	// A root-owned dir with a copy of /etc/hostname: the kind of file an
	// attacker wants chowned to themselves.
	rootDir := filepath.Join(t.TempDir(), "rootowned")
	os.MkdirAll(filepath.Join(rootDir, "claude-auth-sync"), 0o755)
	hostname, _ := os.ReadFile("/etc/hostname")
	rootFile := filepath.Join(rootDir, "hostname")
	os.WriteFile(rootFile, append(hostname, []byte("copy\n")...), 0o644)
	os.WriteFile(filepath.Join(rootDir, "claude-auth-sync", "vault-token"), []byte("root's file\n"), 0o644)

	type attack struct {
		name   string
		plant  func(u osUser) // as the user would: links owned by the user
		refuse string         // in the FAIL line
	}
	link := func(u osUser, target, at string) {
		os.MkdirAll(filepath.Dir(at), 0o700)
		for d := filepath.Dir(at); d != u.home; d = filepath.Dir(d) {
			os.Lchown(d, u.uid, u.gid)
		}
		if err := os.Symlink(target, at); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(at, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(u osUser) string { return filepath.Join(u.home, ".config") }
	dir := func(u osUser) string { return filepath.Join(u.home, ".config", "claude-auth-sync") }
	attacks := []attack{
		{"config->rootdir", func(u osUser) { link(u, rootDir, cfg(u)) }, ".config is a symlink, not a directory"},
		{"config->otherhome", func(u osUser) { link(u, other.home, cfg(u)) }, ".config is a symlink, not a directory"},
		{"dir->rootdir", func(u osUser) { link(u, rootDir, dir(u)) }, "claude-auth-sync is a symlink, not a directory"},
		{"dir->otherhome", func(u osUser) { link(u, other.home, dir(u)) }, "claude-auth-sync is a symlink, not a directory"},
		{"token->rootfile", func(u osUser) { link(u, rootFile, u.tokenFile()) }, "vault-token is a symlink"},
		{"token->otherfile", func(u osUser) { link(u, otherSecret, u.tokenFile()) }, "vault-token is a symlink"},
		{"token->dangling", func(u osUser) { link(u, filepath.Join(rootDir, "new-file"), u.tokenFile()) }, "vault-token is a symlink"},
		{"config root-owned", func(u osUser) { os.Mkdir(cfg(u), 0o755) }, ".config is owned by uid 0, not by"},
		{"token hard link", func(u osUser) {
			os.MkdirAll(dir(u), 0o700)
			os.Lchown(cfg(u), u.uid, u.gid)
			os.Lchown(dir(u), u.uid, u.gid)
			os.WriteFile(filepath.Join(u.home, "mine"), []byte("x"), 0o600)
			os.Lchown(filepath.Join(u.home, "mine"), u.uid, u.gid)
			os.Link(filepath.Join(u.home, "mine"), u.tokenFile())
		}, "vault-token has 2 hard links"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			victim := newOSUser(t, "cas-v-")
			rig.writeRoster("users:\n  " + victim.name + ": {}\n  " + other.name + ": {claude_auth: false}\n")
			a.plant(victim)
			before := snapshot(t, rootDir, other.home, "/etc/hostname")
			tokens := accessorCount(t)
			res := rig.run(true)
			if res.code != 1 {
				t.Errorf("exit %d; want 1 (a user FAILed)\n%s%s", res.code, res.stdout, res.stderr)
			}
			l := lineFor(res.stdout, victim.name)
			if !strings.Contains(l, " FAIL ") || !strings.Contains(l, a.refuse) {
				t.Errorf("victim's line = %q; want FAIL with %q", l, a.refuse)
			}
			if d := diffSnapshots(before, snapshot(t, rootDir, other.home, "/etc/hostname")); len(d) > 0 {
				t.Errorf("outside the victim's tree changed:\n%s", strings.Join(d, "\n"))
			}
			if got := rig.changes(); len(got) != 0 {
				t.Errorf("systemctl changes %q for a refused user", got)
			}
			if n := accessorCount(t); n != tokens {
				t.Errorf("%d tokens minted for a refused user", n-tokens)
			}
		})
	}
}

// TestProvisionScale times provision for CAS_PROVISION_USERS real OS users
// (e2e/bench/provision.sh sets 100): the first run (policy, token, files, unit
// for each), the second (nothing to do) and the hourly one (no admin token).
// Without the variable it runs with 5 users, so it stays in every `make test`.
func TestProvisionScale(t *testing.T) {
	n := 5
	if v := os.Getenv("CAS_PROVISION_USERS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	rig := newProvisionRig(t)
	var roster strings.Builder
	roster.WriteString("users:\n")
	users := make([]osUser, n)
	for i := range users {
		users[i] = newOSUser(t, "cas-s-")
		fmt.Fprintf(&roster, "  %s: {tier: bench}\n", users[i].name)
	}
	rig.writeRoster(roster.String())
	timed := func(what string, admin bool) result {
		start := time.Now()
		res := rig.mustRun(admin, 0)
		t.Logf("provision, %d users, %s: %v", n, what, time.Since(start).Round(time.Millisecond))
		return res
	}
	res := timed("first run", true)
	if !strings.Contains(res.stdout, fmt.Sprintf("%d changed", n)) {
		t.Errorf("first run: %s", res.stdout[max(0, len(res.stdout)-300):])
	}
	if got := len(rig.changes()); got != n {
		t.Errorf("first run: %d systemctl changes; want %d", got, n)
	}
	for _, u := range users {
		checkTokenFiles(t, u)
		rig.readToken(u)
	}
	res = timed("second run (no change)", true)
	if !strings.Contains(res.stdout, "0 changed") || len(rig.changes()) != 0 {
		t.Errorf("second run changed something: %s", res.stdout[max(0, len(res.stdout)-300):])
	}
	timed("hourly run (no admin token)", false)
}

// The admin policy the docs give is enough: provision with a token holding
// only it (through --admin-token-file) sets a user up completely.
func TestProvisionWithDocumentedAdminPolicy(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "provisioning.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- admin-policy[^>]*-->\\s*```hcl\\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/provisioning.md has no admin-policy hcl block")
	}
	root := vsrv.Root()
	var rnd [4]byte
	rand.Read(rnd[:])
	polName := "cas-provision-admin-" + hex.EncodeToString(rnd[:])
	if err := root.Sys().PutPolicy(polName, string(m[1])); err != nil {
		t.Fatalf("the documented admin policy does not load: %v", err)
	}
	sec, err := root.Auth().Token().Create(&vault.TokenCreateRequest{Policies: []string{polName}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	adminTok := sec.Auth.ClientToken

	rig := newProvisionRig(t)
	rig.secrets = append(rig.secrets, adminTok)
	u := newOSUser(t, "cas-a-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n")
	tokFile := filepath.Join(rig.dir, "admin-token")
	os.WriteFile(tokFile, []byte(adminTok+"\n"), 0o644)
	if res := rig.run(false, "--admin-token-file", tokFile); res.code != 78 || !strings.Contains(res.stderr, "readable by its owner only") {
		t.Errorf("a 0644 admin token file: exit %d, %s; want 78 and a refusal", res.code, res.stderr)
	}
	os.Chmod(tokFile, 0o600)
	res := rig.mustRun(false, 0, "--admin-token-file", tokFile)
	if !strings.Contains(lineFor(res.stdout, u.name), " OK wrote policy") {
		t.Errorf("provision with the documented admin policy: %s", res.stdout)
	}
	checkTokenFiles(t, u)
	checkToken(t, u, rig.readToken(u))
	if got := policyCaps(t, "workstation-claude-"+u.name); !mapsEqual(got, wantCaps(u.name)) {
		t.Errorf("policy = %v", got)
	}
	// The admin token itself reads no user's data.
	if _, err := clientWith(adminTok).KVv2("secret").Get(context.Background(), "workstation/claude-users/"+u.name); !forbidden(err) {
		t.Errorf("the admin token reads user data: %v; want 403", err)
	}
}

// A token file other users could read is exposed: provision mints a new one,
// installs it, revokes the old one, and says so (WARN). The copy a hostile
// local user took beforehand stops working (403 at Vault).
func TestProvisionReplacesExposedToken(t *testing.T) {
	rig := newProvisionRig(t)
	victim, mallory := newOSUser(t, "cas-v-"), newOSUser(t, "cas-m-")
	rig.writeRoster("users:\n  " + victim.name + ": {}\n")
	rig.mustRun(true, 0)
	old := rig.readToken(victim)

	// A loose umask, a helpful chmod: the dirs and the file open to everyone.
	for _, d := range []string{victim.home, filepath.Join(victim.home, ".config"), filepath.Dir(victim.tokenFile())} {
		os.Chmod(d, 0o755)
	}
	os.Chmod(victim.tokenFile(), 0o644)
	cat := exec.Command("cat", victim.tokenFile())
	cat.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(mallory.uid), Gid: uint32(mallory.gid)}}
	stolen, err := cat.Output()
	if err != nil || strings.TrimSpace(string(stolen)) != old {
		t.Fatalf("the hostile user could not read the loose token file (%v): the test proves nothing", err)
	}
	if _, err := clientWith(old).Auth().Token().LookupSelf(); err != nil {
		t.Fatalf("the stolen token before provision: %v", err)
	}

	res := rig.mustRun(true, 0)
	line := lineFor(res.stdout, victim.name)
	for _, want := range []string{" WARN ", "the token file was readable by other users (mode 0644", "installed " + victim.tokenFile() + " (0600)", "revoked the exposed token"} {
		if !strings.Contains(line, want) {
			t.Errorf("provision's line for the victim lacks %q: %s", want, line)
		}
	}
	fresh := rig.readToken(victim)
	if fresh == old {
		t.Fatalf("provision kept the exposed token")
	}
	checkToken(t, victim, fresh)
	checkTokenFiles(t, victim)
	if _, err := clientWith(old).Auth().Token().LookupSelf(); !forbidden(err) {
		t.Errorf("the stolen copy after provision: %v; want 403 (revoked)", err)
	}
	if _, err := clientWith(old).KVv2("secret").Get(context.Background(), "workstation/claude-users/"+victim.name); !forbidden(err) {
		t.Errorf("the stolen copy reads the victim's document: %v; want 403", err)
	}
	// One rule with the agent's (issue 23): a file open to others is an
	// exposed token whatever the dirs above it say (they may have been open
	// before; a group may hold others). Without an admin token provision
	// leaves it as it is and says it needs one for a new token (a chmod
	// would let the agent go on with it); with one it replaces it.
	os.Chmod(filepath.Dir(victim.tokenFile()), 0o700)
	os.Chmod(victim.tokenFile(), 0o644)
	res = rig.mustRun(false, 0)
	if l := lineFor(res.stdout, victim.name); !strings.Contains(l, "WARN needs an admin token") || !strings.Contains(l, "consider the token exposed") || strings.Contains(l, "to 0600") {
		t.Errorf("a 0644 token under a 0700 dir, no admin token: %s; want WARN naming the exposed token, the mode left", l)
	}
	if fi, err := os.Stat(victim.tokenFile()); err != nil || fi.Mode().Perm() != 0o644 || rig.readToken(victim) != fresh {
		t.Errorf("provision without an admin token changed the exposed token file: %v %v", fi, err)
	}
	res = rig.mustRun(true, 0)
	if l := lineFor(res.stdout, victim.name); !strings.Contains(l, "WARN") || !strings.Contains(l, "consider the token exposed") || !strings.Contains(l, "revoked the exposed token") {
		t.Errorf("a 0644 token under a 0700 dir: %s; want WARN, a new token, the old one revoked", l)
	}
	if rig.readToken(victim) == fresh {
		t.Errorf("the exposed token was kept")
	}
	checkTokenFiles(t, victim)
	if _, err := clientWith(fresh).Auth().Token().LookupSelf(); !forbidden(err) {
		t.Errorf("the exposed token after provision: %v; want 403 (revoked)", err)
	}
}

// provision turns a shared 1777 metrics dir (the layout of earlier versions)
// into root's 0755 and gives each roster user a directory of their own
// (0700): another user's directory holding a forged file in a user's name is
// removed with a WARN, a user's own directory is left alone, and the root
// publisher is enabled. A second run changes nothing.
func TestProvisionMakesMetricsDirs(t *testing.T) {
	rig := newProvisionRig(t)
	victim, owner, mallory := newOSUser(t, "cas-v-"), newOSUser(t, "cas-o-"), newFaultUser(t)
	dir := sharedDir(t)
	cfg, _ := os.ReadFile(rig.config)
	os.WriteFile(rig.config, append(cfg, []byte("CLAUDE_AUTH_METRICS_DIR="+dir+"\n")...), 0o644)
	rig.writeRoster("users:\n  " + victim.name + ": {}\n  " + owner.name + ": {}\n")
	squat := filepath.Join(dir, victim.name)
	if out, err := hostileRun(t, mallory, "sh", "-c", `mkdir "$0" && echo 'claude_auth_sync_failures_total 0' > "$0/claude_auth_sync.prom"`, squat); err != nil {
		t.Fatalf("the hostile user's squat: %v %s", err, out)
	}
	own := filepath.Join(dir, owner.name)
	os.Mkdir(own, 0o700)
	os.Chown(own, owner.uid, owner.gid)
	os.WriteFile(filepath.Join(own, "claude_auth_sync.prom"), []byte("# the user's own\n"), 0o644)

	res := rig.mustRun(true, 0)
	if l := lineFor(res.stdout, victim.name); !strings.Contains(l, " WARN ") || !strings.Contains(l, fmt.Sprintf("removed the directory of uid %d in place of %s's metrics dir", mallory.uid, victim.name)) ||
		!strings.Contains(l, "created "+squat+" ("+victim.name+"'s, 0700)") {
		t.Errorf("provision's line: %s", l)
	}
	fi, err := os.Lstat(squat)
	if err != nil || !fi.IsDir() || fi.Sys().(*syscall.Stat_t).Uid != uint32(victim.uid) || fi.Mode().Perm() != 0o700 {
		t.Errorf("the victim's metrics dir: %v %v; want the victim's, 0700", fi, err)
	}
	if ents, _ := os.ReadDir(squat); len(ents) != 0 {
		t.Errorf("the squatter's file survived: %v", ents)
	}
	if fi, _ := os.Lstat(dir); fi.Mode().Perm() != 0o755 || fi.Mode()&os.ModeSticky != 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the metrics dir: %v; want root's, 0755", fi.Mode())
	}
	if l := lineFor(res.stdout, owner.name); strings.Contains(l, "removed") {
		t.Errorf("the user's own metrics dir was reported: %s", l)
	}
	if _, err := os.Stat(filepath.Join(own, "claude_auth_sync.prom")); err != nil {
		t.Errorf("the user's own metrics file: %v", err)
	}
	if !strings.Contains(res.stdout, "metrics-publisher OK enabled and started claude-auth-sync-metrics.service") ||
		!slices.Contains(rig.changes(), "enable --now claude-auth-sync-metrics.service") {
		t.Errorf("the publisher was not enabled:\n%s", res.stdout)
	}
	res = rig.mustRun(true, 0)
	if strings.Contains(res.stdout, "metrics") {
		t.Errorf("a second run changed metrics again:\n%s", res.stdout)
	}
}

// root and other system accounts are refused by name and by uid, a roster of
// two YAML documents is refused whole; neither changes anything in Vault,
// homes or units.
func TestProvisionRefusesSystemAccountsAndSecondDocument(t *testing.T) {
	rig := newProvisionRig(t)
	u := newOSUser(t, "cas-r-")
	rig.writeRoster("users:\n  root: {}\n  daemon: {}\n  " + u.name + ": {}\n")
	res := rig.run(true)
	if res.code != 1 {
		t.Errorf("a roster naming root: exit %d; want 1 (FAIL for the refused entries)\n%s%s", res.code, res.stdout, res.stderr)
	}
	for _, name := range []string{"root", "daemon"} {
		if l := lineFor(res.stdout, name); !strings.Contains(l, " FAIL refused") {
			t.Errorf("line for %s: %q; want a refusal", name, l)
		}
		if p := policyCaps(t, "workstation-claude-"+name); p != nil {
			t.Errorf("a policy was written for %s", name)
		}
	}
	if _, err := os.Lstat("/root/.config/claude-auth-sync/vault-token"); err == nil {
		t.Errorf("a token file was written into root's home")
	}
	if got := rig.changes(); slices.ContainsFunc(got, func(c string) bool { return strings.Contains(c, "@root") || strings.Contains(c, "@daemon") }) {
		t.Errorf("systemctl calls for refused accounts: %q", got)
	}
	if l := lineFor(res.stdout, u.name); !strings.Contains(l, " OK ") {
		t.Errorf("the ordinary user beside them: %q", l)
	}

	v := newOSUser(t, "cas-r-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n---\nusers:\n  " + v.name + ": {}\n")
	before := accessorCount(t)
	res = rig.run(true)
	if res.code != 78 || !strings.Contains(res.stderr, "line 3: a second YAML document") {
		t.Errorf("a two-document roster: exit %d, stderr %q; want 78 naming line 3 (the ---)", res.code, res.stderr)
	}
	if accessorCount(t) != before || policyCaps(t, "workstation-claude-"+v.name) != nil || len(rig.changes()) != 0 {
		t.Errorf("a refused roster changed something")
	}
}
