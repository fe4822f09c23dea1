package claudecli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeNPM puts an `npm` on PATH that counts its runs and lays out a package
// of the shape its version asks for: 8.x.y a native build whose bin/claude.exe is
// still the placeholder stub (postinstall not run) and whose binary sits in the
// platform package; anything else a cli.js.
func fakeNPM(t *testing.T) (count func() int) {
	t.Helper()
	dir := t.TempDir()
	counter := filepath.Join(dir, "count")
	script := `#!/bin/bash
set -e
echo run >>` + counter + `
prefix=""; spec=""
while [ $# -gt 0 ]; do
  case "$1" in --prefix) prefix="$2"; shift ;; @anthropic-ai/*) spec="$1" ;; esac
  shift
done
version="${spec##*@}"
pkg="$prefix/node_modules/@anthropic-ai/claude-code"
mkdir -p "$pkg/bin"
sleep 0.5
case "$version" in
  8.*)
    echo "placeholder" >"$pkg/bin/claude.exe"
    arch=x64; [ "$(uname -m)" = aarch64 ] && arch=arm64
    mkdir -p "$prefix/node_modules/@anthropic-ai/claude-code-linux-$arch"
    cp /bin/true "$prefix/node_modules/@anthropic-ai/claude-code-linux-$arch/claude"
    ;;
  *)
    echo "console.log('$version (Claude Code)')" >"$pkg/cli.js"
    ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "npm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	t.Setenv("CLAUDE_AUTH_SYNC_CACHE", t.TempDir())
	return func() int {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "run")
	}
}

func TestInstallOnceUnderConcurrency(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is needed for the cli.js shape: %v", err)
	}
	count := fakeNPM(t)
	const v = "9.9.9"
	var wg sync.WaitGroup
	bins := make([]string, 4)
	errs := make([]error, 4)
	for i := range bins {
		wg.Go(func() { bins[i], errs[i] = Install(v) })
	}
	script, _ := filepath.Abs("ensure-claude.sh")
	var shOut []byte
	var shErr error
	wg.Go(func() { shOut, shErr = exec.Command("bash", script, v).Output() })
	wg.Wait()
	for i := range bins {
		if errs[i] != nil {
			t.Fatalf("Install: %v", errs[i])
		}
		if bins[i] != bins[0] {
			t.Errorf("paths differ: %s %s", bins[i], bins[0])
		}
	}
	if shErr != nil || strings.TrimSpace(string(shOut)) != bins[0] {
		t.Errorf("ensure-claude.sh: %v %q, want %s", shErr, shOut, bins[0])
	}
	if n := count(); n != 1 {
		t.Errorf("npm ran %d times, want once", n)
	}
	out, err := exec.Command(bins[0], "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != v+" (Claude Code)" {
		t.Errorf("cli.js wrapper: %v %q", err, out)
	}
	if _, err := Install(v); err != nil || count() != 1 {
		t.Errorf("warm Install: %v, npm runs %d", err, count())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(bins[0])), ".claude-code-*.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary install dirs left: %v", left)
	}
}

func TestInstallNativeFromPlatformPackage(t *testing.T) {
	count := fakeNPM(t)
	installers := map[string]func(string) (string, error){"8.0.1": Install, "8.0.2": func(v string) (string, error) {
		out, err := exec.Command("bash", "ensure-claude.sh", v).Output()
		return strings.TrimSpace(string(out)), err
	}}
	for v, install := range installers {
		bin, err := install(v)
		if err != nil {
			t.Fatal(err)
		}
		target, err := filepath.EvalSymlinks(bin)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(target, "claude-code-linux-") || !isELF(target) {
			t.Errorf("%s: %s resolves to %s, want the platform package's native binary", v, bin, target)
		}
		if err := exec.Command(bin).Run(); err != nil {
			t.Errorf("run %s: %v", bin, err)
		}
	}
	if n := count(); n != 2 {
		t.Errorf("npm ran %d times, want 2", n)
	}
	if _, err := Install("1.2"); err == nil {
		t.Errorf("a malformed version was accepted")
	}
}

func TestProxyServesHandlerForAnyHost(t *testing.T) {
	type hit struct{ host, path string }
	var mu sync.Mutex
	var hits []hit
	p, err := StartProxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, hit{r.Host, r.URL.Path})
		mu.Unlock()
		if r.TLS == nil {
			t.Errorf("tunnelled request not over TLS")
		}
		_, _ = io.WriteString(w, "fake:"+r.Host)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("CA file holds no certificate")
	}
	pu, _ := url.Parse(p.URL())
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, host := range []string{"platform.claude.com", "api.anthropic.com", "console.anthropic.com"} {
		resp, err := c.Post("https://"+host+"/v1/oauth/token", "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "fake:"+host {
			t.Errorf("%s: got %q", host, b)
		}
	}
	if got := p.Hosts(); len(got) != 3 || got[0] != "platform.claude.com:443" {
		t.Errorf("Hosts() = %v", got)
	}
	// A client that does not trust the CA must fail: the proxy does not forward.
	bad := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	if _, err := bad.Get("https://platform.claude.com/"); err == nil {
		t.Errorf("a client without the test CA trusted the proxy's certificate")
	}
	env := strings.Join(p.Env(), "\n")
	for _, want := range []string{"HTTPS_PROXY=" + p.URL(), "https_proxy=", "NODE_EXTRA_CA_CERTS=" + p.CAFile, "SSL_CERT_FILE=" + p.CAFile, "NO_PROXY=127.0.0.1"} {
		if !strings.Contains(env, want) {
			t.Errorf("Env() lacks %s", want)
		}
	}
	dir := filepath.Dir(p.CAFile)
	_ = p.Close()
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("Close left %s", dir)
	}
}

func TestEnvMarksOnboardingKeepingConfig(t *testing.T) {
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".claude.json"), []byte(`{"oauthAccount":{"emailAddress":"a@b"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := Env(home, "", "http://127.0.0.1:9", nil)
	joined := "\n" + strings.Join(env, "\n") + "\n"
	for _, want := range []string{"\nHOME=" + home + "\n", "\nCLAUDE_CONFIG_DIR=" + filepath.Join(home, ".claude") + "\n",
		"\nANTHROPIC_BASE_URL=http://127.0.0.1:9\n", "\nCLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n", "\nDISABLE_AUTOUPDATER=1\n"} {
		if !strings.Contains(joined, want) {
			t.Errorf("Env lacks %q", strings.TrimSpace(want))
		}
	}
	if strings.Contains(joined, "HTTPS_PROXY") {
		t.Errorf("proxy variables without a proxy")
	}
	for _, f := range []string{filepath.Join(home, ".claude.json"), filepath.Join(home, ".claude", ".claude.json")} {
		var doc map[string]any
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &doc); err != nil || doc["hasCompletedOnboarding"] != true {
			t.Errorf("%s: %s", f, b)
		}
	}
	b, _ := os.ReadFile(filepath.Join(home, ".claude.json"))
	if !strings.Contains(string(b), "a@b") {
		t.Errorf("existing config lost: %s", b)
	}
}
