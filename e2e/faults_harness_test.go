package e2e_test

// Shared pieces of the fault-injection suite (faults_*_test.go): how many
// times a fault is repeated, the invariants checked after every fault, a
// Vault-history checker, a fault-injecting proxy in front of Vault, and test OS
// users for the faults root cannot feel (unreadable files, per-user inotify
// limits, file owners).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// faultIterations is how many times a repeated fault runs: def in a plain
// `go test` (kept short), or CLAUDE_AUTH_FAULT_ITERATIONS (what `make faults`
// sets: the full counts reported in docs/reliability.md). scale lets a slower
// fault run a fraction of the full count.
func faultIterations(t *testing.T, def int, scale float64) int {
	t.Helper()
	if s := os.Getenv("CLAUDE_AUTH_FAULT_ITERATIONS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("CLAUDE_AUTH_FAULT_ITERATIONS=%q: want a positive number", s)
		}
		return max(1, int(float64(n)*scale))
	}
	return def
}

// faultNeeds stops a test whose fault cannot be injected on this machine: a
// loud failure under CI=true, a skip (never counted as a pass) elsewhere.
func faultNeeds(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FAIL: cannot inject this fault here: %s", why)
	}
	t.Skipf("cannot inject this fault here (fails under CI=true): %s", why)
}

// faultReport logs a line the reliability table is built from.
func faultReport(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("FAULT-REPORT %s: %s", t.Name(), fmt.Sprintf(format, args...))
}

// credsInvariant checks the credentials file after a fault: it exists, is a
// regular file with mode 0600 (owned by uid when uid >= 0), valid JSON, and
// holds a login whose refresh token is non-empty. It returns that login.
func credsInvariant(t *testing.T, path string, uid int) (oauth map[string]any, problem string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, "credentials file: " + err.Error()
	}
	if !fi.Mode().IsRegular() {
		return nil, "credentials file is not a regular file: " + fi.Mode().String()
	}
	if fi.Mode().Perm() != 0o600 {
		return nil, fmt.Sprintf("credentials file mode %04o; want 0600", fi.Mode().Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && uid >= 0 && int(st.Uid) != uid {
		return nil, fmt.Sprintf("credentials file owned by uid %d; want %d", st.Uid, uid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err.Error()
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, "credentials file is not valid JSON"
	}
	var o map[string]any
	dec := json.NewDecoder(bytes.NewReader(f["claudeAiOauth"]))
	dec.UseNumber() // 1e400 is valid JSON, if no float64
	if err := dec.Decode(&o); err != nil || o == nil {
		return nil, "credentials file has no claudeAiOauth object"
	}
	if rt, _ := o["refreshToken"].(string); rt == "" {
		return o, `credentials file holds refreshToken "" (a logout)`
	}
	if _, ok := f["mcpOAuth"]; !ok {
		return o, "credentials file lost its mcpOAuth key"
	}
	return o, ""
}

// issueOrder maps every refresh token a fake minted to its position: later
// logins have larger numbers.
func issueOrder(f *fakeanthropic.Server) map[string]int {
	order := map[string]int{}
	for i, tok := range f.Issued() {
		if strings.HasPrefix(tok, "sk-ant-ort01-") {
			order[tok] = i
		}
	}
	return order
}

// vaultHistory walks a KV v2 path's versions and fails when a version holds an
// older login than a version before it (by the fake's issue order). It
// remembers where it stopped, so a long loop checks each version once.
type vaultHistory struct {
	kv      *vault.KVv2
	path    string
	checked int
	last    int // issue position of the newest login seen so far
	lastVer int
}

func newVaultHistory(t *testing.T, client *vault.Client, path string) *vaultHistory {
	t.Helper()
	kv := client.KVv2("secret")
	// Keep every version the test makes (KV v2 keeps 10 by default).
	if err := kv.PutMetadata(context.Background(), path, vault.KVMetadataPutInput{MaxVersions: 1 << 20}); err != nil {
		t.Fatalf("raise max_versions: %v", err)
	}
	return &vaultHistory{kv: kv, path: path, last: -1}
}

// check reads the versions written since the last call. It returns the number
// of versions checked in total.
func (h *vaultHistory) check(t *testing.T, order map[string]int) int {
	t.Helper()
	ctx := context.Background()
	meta, err := h.kv.GetMetadata(ctx, h.path)
	if err != nil {
		if strings.Contains(err.Error(), "not found") || strings.Contains(err.Error(), "404") {
			return h.checked
		}
		t.Fatalf("vault metadata: %v", err)
	}
	for v := h.lastVer + 1; v <= meta.CurrentVersion; v++ {
		sec, err := h.kv.GetVersion(ctx, h.path, v)
		if err != nil {
			t.Fatalf("vault version %d: %v", v, err)
		}
		h.lastVer = v
		h.checked++
		s, _ := sec.Data["claude_ai_oauth_json"].(string)
		if s == "" {
			continue
		}
		rt := refreshTokenOf(t, s)
		idx, ok := order[rt]
		if !ok {
			t.Errorf("vault version %d holds a refresh token the fake never minted", v)
			continue
		}
		if idx < h.last {
			t.Errorf("vault version %d holds an older login (#%d) than an earlier version (#%d): a newer credential was overwritten", v, idx, h.last)
		}
		h.last = max(h.last, idx)
	}
	return h.checked
}

// faultProxy sits between the product and Vault and injects faults: a share
// of requests answered 500, a delay before every request, or a black hole.
type faultProxy struct {
	srv       *httptest.Server
	failEvery atomic.Int64 // 0: none; n: every request fails with probability 1/n
	delay     atomic.Int64 // ns before forwarding
	requests  atomic.Int64
	failed    atomic.Int64
	mu        sync.Mutex
	seen      []string // "METHOD /path" of every request, in order
}

// requestsSeen is "METHOD /path" of every request so far.
func (p *faultProxy) requestsSeen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = nil
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		p.mu.Lock()
		p.seen = append(p.seen, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		if d := time.Duration(p.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		if n := p.failEvery.Load(); n > 0 && rand.Int64N(n) == 0 {
			p.failed.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"errors":["injected fault: internal error"]}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// withVaultAddr replaces VAULT_ADDR in a world's environment.
func (w *world) withVaultAddr(addr string) {
	for i, kv := range w.env {
		if strings.HasPrefix(kv, "VAULT_ADDR=") {
			w.env[i] = "VAULT_ADDR=" + addr
		}
	}
}

// setEnvVar sets (or adds) one variable of the world's environment.
func (w *world) setEnvVar(key, val string) {
	for i, kv := range w.env {
		if strings.HasPrefix(kv, key+"=") {
			w.env[i] = key + "=" + val
			return
		}
	}
	w.env = append(w.env, key+"="+val)
}

// startAgentProc starts `claude-auth-sync run` without waiting for it, with
// cmd adjustments (credentials, for instance) applied before the start.
func (w *world) startAgentProc(extraEnv []string, mod func(*exec.Cmd), args ...string) *agentProc {
	w.t.Helper()
	a := &agentProc{w: w, done: make(chan struct{})}
	base := []string{"run", "--retry-max", "1s"}
	if os.Getenv("CLAUDE_AUTH_E2E_VERBOSE") != "" { // debug lines in the agent's output, to read a failure by
		base = append(base, "--verbose")
	}
	a.cmd = exec.Command(filepath.Join(binDir, "claude-auth-sync"), append(base, args...)...)
	a.cmd.Env = append(append([]string(nil), w.env...), extraEnv...)
	lw := lockedWriter{&a.mu, &a.out}
	a.cmd.Stdout, a.cmd.Stderr = lw, lw
	if mod != nil {
		mod(a.cmd)
	}
	if err := a.cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	w.t.Cleanup(a.stop)
	return a
}

// kill9 kills the process with SIGKILL and waits for it; its output joins the
// secret scan.
func (a *agentProc) kill9() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.w.mu.Lock()
	a.w.outputs = append(a.w.outputs, a.output())
	a.w.mu.Unlock()
}

// runWith is w.run with cmd adjustments and a bound.
func (w *world) runWith(extraEnv []string, mod func(*exec.Cmd), limit time.Duration, args ...string) result {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), args...)
	cmd.Env = append(append([]string(nil), w.env...), extraEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if mod != nil {
		mod(cmd)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("run %v: %v", args, err)
	}
	if ctx.Err() != nil {
		w.t.Errorf("%v did not finish within %s (a hang)", args, limit)
	}
	w.mu.Lock()
	w.outputs = append(w.outputs, out.String(), errb.String())
	w.mu.Unlock()
	return result{code, out.String(), errb.String()}
}

// faultUser is a real unprivileged OS account for one test: root reads any
// file whatever its mode, and inotify limits are counted per user.
type faultUser struct {
	name     string
	uid, gid int
}

var binDirPublic sync.Once

func newFaultUser(t *testing.T) faultUser {
	t.Helper()
	faultNeeds(t, os.Geteuid() == 0, "creating a test OS user needs root")
	_, err := exec.LookPath("useradd")
	faultNeeds(t, err == nil, "useradd is not installed")
	name := fmt.Sprintf("casf%08x", rand.Uint32())
	if out, err := exec.Command("useradd", "-M", "-U", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	// The binaries live in the run's temp dir (root's, 0700): let users in.
	binDirPublic.Do(func() { os.Chmod(filepath.Dir(binDir), 0o711) })
	return faultUser{name: name, uid: uid, gid: gid}
}

// as makes a command run as the user.
func (u faultUser) as(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid)}}
}

// adopt hands a world to the user: every directory from the test's temp root
// down is traversable, and the home belongs to the user.
func (u faultUser) adopt(t *testing.T, w *world) {
	t.Helper()
	for d := filepath.Dir(w.home); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(w.home, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, u.uid, u.gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(w.home, 0o700); err != nil {
		t.Fatal(err)
	}
}

// writeLogin writes l as the world's credentials file, owned by the user,
// the way Claude does (temp file, rename over).
func (u faultUser) writeLogin(t *testing.T, w *world, l fakeanthropic.Login) {
	t.Helper()
	w.mu.Lock()
	w.secrets = append(w.secrets, l.AccessToken, l.RefreshToken)
	w.mu.Unlock()
	tmp := w.creds + ".tmp"
	if err := os.WriteFile(tmp, fakeanthropic.CredentialsJSON(l), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, w.creds); err != nil {
		t.Fatal(err)
	}
}
