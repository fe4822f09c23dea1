package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
)

// maxRSSKiB is a finished command's peak resident memory.
func maxRSSKiB(cmd *exec.Cmd) int64 {
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return -1
}

// runMeasured runs the binary and returns the result and its peak memory.
func (w *world) runMeasured(args ...string) (result, int64) {
	w.t.Helper()
	var cmd *exec.Cmd
	r := w.runWith(nil, func(c *exec.Cmd) { cmd = c }, 2*time.Minute, args...)
	return r, maxRSSKiB(cmd)
}

// A 100 MB credentials file (a valid JSON object with a login, padded with a
// huge unknown key): `sync` and the agent treat it as broken without reading
// it into memory (peak RSS stays small), restore the login from Vault, and
// keep the replaced file, all 100 MB of it, in previous-credentials.json.
func TestFaultOversizedCredentialsFile(t *testing.T) {
	for _, via := range []string{"sync", "agent"} {
		t.Run(via, func(t *testing.T) {
			w := newWorld(t)
			l := w.login()
			w.mustCode(w.run(nil, "sync"), 0, "first sync")
			huge := writeHugeCredentials(t, w, l, 100<<20)
			var rss int64
			switch via {
			case "sync":
				var r result
				r, rss = w.runMeasured("sync")
				w.mustCode(r, 0, "sync over a 100 MB file")
			case "agent":
				a := w.startAgent(nil)
				eventually(t, 30*time.Second, "the agent replaced the 100 MB file", func() bool {
					fi, err := os.Stat(w.creds)
					return err == nil && fi.Size() < 1<<20
				})
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
						fmt.Sscanf(strings.TrimSpace(v), "%d", &rss)
					}
				}
			}
			if rss <= 0 || rss > 96<<10 {
				t.Errorf("peak RSS %d KiB handling a 100 MB file; want it bounded (< 96 MiB)", rss)
			}
			if got := refreshTokenOf(t, w.localOAuthCompact()); got != l.RefreshToken {
				t.Errorf("the login was not restored from vault")
			}
			if _, p := credsInvariant(t, w.creds, -1); p != "" && !strings.Contains(p, "mcpOAuth") {
				t.Error(p)
			}
			prev := filepath.Join(w.state, "previous-credentials.json")
			fi, err := os.Stat(prev)
			if err != nil || fi.Size() != huge || fi.Mode().Perm() != 0o600 {
				t.Errorf("previous-credentials.json: %v, %v; want the replaced %d-byte file kept, mode 0600", fi, err, huge)
			}
			faultReport(t, "100 MB credentials file via %s: restored from vault, peak RSS %d KiB, replaced file kept (%d bytes)", via, rss, huge)
		})
	}
}

func writeHugeCredentials(t *testing.T, w *world, l fakeanthropic.Login, size int) int64 {
	t.Helper()
	f, err := os.OpenFile(w.creds, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	login, _ := json.Marshal(map[string]any{"accessToken": l.AccessToken, "refreshToken": l.RefreshToken, "expiresAt": l.ExpiresAt.UnixMilli()})
	fmt.Fprintf(f, `{"claudeAiOauth":%s,"junk":"`, login)
	chunk := bytes.Repeat([]byte("a"), 1<<20)
	for i := 0; i < size/len(chunk); i++ {
		f.Write(chunk)
	}
	f.WriteString(`"}`)
	f.Close()
	fi, _ := os.Stat(w.creds)
	return fi.Size()
}

// Deep nesting in a key we do not own: 100 levels (JSON any parser takes, and
// Claude does) is a usable file, kept byte for byte and backed up; 20,000
// levels (past Go's decoder) is a broken file, restored, the original kept.
func TestFaultDeepNesting(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.mustCode(w.run(nil, "sync"), 0, "first sync")
	deep := func(n int) []byte {
		var f map[string]json.RawMessage
		json.Unmarshal(fakeanthropic.CredentialsJSON(l), &f)
		f["mcpOAuthClientConfig"] = json.RawMessage(strings.Repeat("[", n) + strings.Repeat("]", n))
		b, _ := json.Marshal(f)
		return b
	}
	b100 := deep(100)
	os.WriteFile(w.creds, b100, 0o600)
	w.mustCode(w.run(nil, "sync"), 0, "sync with 100 levels of nesting")
	if got, _ := os.ReadFile(w.creds); !bytes.Equal(got, b100) {
		t.Errorf("a usable file with 100 levels of nesting was rewritten")
	}
	if strings.Contains(w.syncLog(), "RECOVERED") {
		t.Errorf("a usable file with 100 levels of nesting was treated as broken:\n%s", w.syncLog())
	}
	b20k := deep(20000)
	os.WriteFile(w.creds, b20k, 0o600)
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync with 20,000 levels of nesting")
	if got := refreshTokenOf(t, w.localOAuthCompact()); got != l.RefreshToken {
		t.Errorf("the login was not restored")
	}
	if prev, _ := os.ReadFile(filepath.Join(w.state, "previous-credentials.json")); !bytes.Equal(prev, b20k) {
		t.Errorf("the replaced 20,000-level file was not kept")
	}
}

// Wrong JSON types in every field of the login and for the login itself. A
// field we read (tokens, expiresAt) of the wrong type makes the login broken:
// it is repaired from Vault's intact copy, the broken file kept aside. A field
// we do not read keeps the login usable, byte for byte. Never a panic, never a
// broken login in Vault.
func TestFaultWrongTypesEverywhere(t *testing.T) {
	w := newWorld(t)
	values := map[string]string{"number": `12345`, "string": `"x"`, "bool": `true`, "null": `null`, "array": `[1,"a"]`, "object": `{"a":{"b":1}}`, "huge float": `1e400`}
	fields := []string{"accessToken", "refreshToken", "expiresAt", "scopes", "subscriptionType", "rateLimitTier", "refreshTokenExpiresAt"}
	cases := 0
	corrupt := func(l fakeanthropic.Login, field, v string) []byte {
		var f map[string]json.RawMessage
		json.Unmarshal(fakeanthropic.CredentialsJSON(l), &f)
		if field == "" {
			f["claudeAiOauth"] = json.RawMessage(v)
		} else {
			var o map[string]json.RawMessage
			json.Unmarshal(f["claudeAiOauth"], &o)
			o[field] = json.RawMessage(v)
			f["claudeAiOauth"], _ = json.Marshal(o)
		}
		b, _ := json.Marshal(f)
		return b
	}
	for _, field := range append(fields, "") {
		for vname, v := range values {
			what := field + " as " + vname
			if field == "" {
				what = "claudeAiOauth as " + vname
			}
			// A fresh login, backed up, then the broken version of it.
			l := w.login()
			w.mustCode(w.run(nil, "sync"), 0, "sync of a fresh login")
			b := corrupt(l, field, v)
			os.WriteFile(w.creds, b, 0o600)
			r := w.run(nil, "sync")
			cases++
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
				t.Fatalf("%s: panic:\n%s", what, r.stderr)
			}
			if r.code != 0 {
				t.Errorf("%s: exit %d\n%s", what, r.code, r.stderr)
				continue
			}
			broken := field == "" || field == "accessToken" || field == "refreshToken" || field == "expiresAt"
			if (field == "accessToken" || field == "refreshToken") && vname == "string" || field == "expiresAt" && vname == "number" {
				broken = false // the right type, only a strange value
			}
			got := mustRead(t, w.creds)
			switch {
			case broken:
				if rt := refreshTokenOf(t, w.localOAuthCompact()); rt != l.RefreshToken {
					t.Errorf("%s: not repaired from the backup", what)
				}
				if prev := mustRead(t, filepath.Join(w.state, "previous-credentials.json")); !bytes.Equal(prev, b) {
					t.Errorf("%s: the broken file was not kept aside", what)
				}
			case field == "accessToken" && vname == "string":
				// A usable login whose access token the API refuses: the pass
				// refreshes it (the refresh token is live), as it should.
				if rt := refreshTokenOf(t, w.localOAuthCompact()); rt == l.RefreshToken {
					t.Errorf("%s: the refused access token was not refreshed", what)
				}
			case !bytes.Equal(got, b):
				t.Errorf("%s: a usable login was rewritten", what)
			}
			if _, p := credsInvariant(t, w.creds, -1); p != "" {
				t.Errorf("%s: %s", what, p)
			}
			// Vault only ever holds a usable login.
			doc, _ := w.vaultDoc()
			var vo map[string]any
			json.Unmarshal([]byte(doc["claude_ai_oauth_json"].(string)), &vo)
			_, num := vo["expiresAt"].(float64)
			if a, _ := vo["accessToken"].(string); a == "" || !num {
				t.Fatalf("%s: vault holds a broken login", what)
			}
			if r, _ := vo["refreshToken"].(string); r == "" {
				t.Fatalf("%s: vault holds a login without a refresh token", what)
			}
		}
	}
	faultReport(t, "%d wrong-type cases through `sync`", cases)
}

// Invalid UTF-8: in a token the login is broken (restored); in a key we do not
// own the bytes survive a refresh's rewrite of the file exactly.
func TestFaultInvalidUTF8(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	w.mustCode(w.run(nil, "sync"), 0, "first sync")
	good := fakeanthropic.CredentialsJSON(l)
	bad := bytes.Replace(good, []byte(l.AccessToken), []byte(l.AccessToken[:20]+"\xff\xfe"+l.AccessToken[22:]), 1)
	os.WriteFile(w.creds, bad, 0o600)
	w.mustCode(w.run(nil, "sync"), 0, "sync with invalid UTF-8 in the access token")
	if got := refreshTokenOf(t, w.localOAuthCompact()); got != l.RefreshToken || bytes.Contains(mustRead(t, w.creds), []byte("\xff")) {
		t.Errorf("invalid UTF-8 in the token: not restored")
	}
	// Elsewhere: kept through a refresh.
	foreign := []byte(`"pluginSecrets":{"k":"caf` + "\xe9\xff" + `"},`)
	withForeign := bytes.Replace(mustRead(t, w.creds), []byte(`{`), append([]byte(`{`), foreign...), 1)
	os.WriteFile(w.creds, withForeign, 0o600)
	w.mustCode(w.run(nil, "refresh"), 0, "refresh")
	after := mustRead(t, w.creds)
	if bytes.Contains(after, []byte(l.RefreshToken)) {
		t.Errorf("the refresh did not happen")
	}
	if !bytes.Contains(after, []byte(`"caf`+"\xe9\xff"+`"`)) {
		t.Errorf("the refresh changed invalid UTF-8 bytes in a key it does not own")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A Vault document with unexpected fields and types (another tool's nested
// objects, our fields of the wrong type): `sync` neither panics nor loses the
// other keys, replaces an unreadable login with the good local one, and
// `restore` and `status` say what is wrong instead of failing obscurely.
func TestFaultVaultDocumentUnexpected(t *testing.T) {
	ctx := context.Background()
	docs := map[string]map[string]any{
		"oauth json a number":     {"claude_ai_oauth_json": 42},
		"oauth json an object":    {"claude_ai_oauth_json": map[string]any{"accessToken": "x"}},
		"oauth json an array":     {"claude_ai_oauth_json": []any{1, 2}},
		"oauth json not JSON":     {"claude_ai_oauth_json": "{not json"},
		"oauth json wrong types":  {"claude_ai_oauth_json": `{"accessToken":1,"refreshToken":true,"expiresAt":"soon"}`},
		"oauth json deep":         {"claude_ai_oauth_json": strings.Repeat("[", 5000) + strings.Repeat("]", 5000)},
		"expires a number":        {"credential_expires_at_ms": 17},
		"backed_up_at an object":  {"backed_up_at": map[string]any{"when": "now"}},
		"setup token a number":    {"setup_token": 7},
		"setup token an array":    {"setup_token": []any{"sk-ant-oat01-x"}},
		"setup expiry a bool":     {"setup_token_expires_at": true},
		"foreign nested fields":   {"vaultwarden_cfg": map[string]any{"a": []any{1, map[string]any{"b": nil}}}, "zz": 3.5},
		"every field null":        {"claude_ai_oauth_json": nil, "credential_expires_at_ms": nil, "backed_up_at": nil, "setup_token": nil},
		"oauth json empty string": {"claude_ai_oauth_json": ""},
	}
	for name, fields := range docs {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			fields["vaultwarden_master"] = "keep-me"
			if _, err := rootKV().Put(ctx, w.user.Path, fields); err != nil {
				t.Fatal(err)
			}
			l := w.login()
			r := w.run(nil, "sync")
			if strings.Contains(r.stderr, "panic") {
				t.Fatalf("panic:\n%s", r.stderr)
			}
			w.mustCode(r, 0, "sync over an unexpected document")
			if strings.HasPrefix(name, "setup token") {
				// Not a usable setup token: rotating mode, with a warning.
				if !strings.Contains(w.syncLog(), " WARN setup-token mode ignored: field setup_token is a ") {
					t.Errorf("no warning about the unusable setup_token:\n%s", w.syncLog())
				}
			}
			doc, _ := w.vaultDoc()
			if doc["vaultwarden_master"] != "keep-me" {
				t.Errorf("another tool's key was lost")
			}
			if name == "foreign nested fields" {
				if b, _ := json.Marshal(doc["vaultwarden_cfg"]); string(b) != `{"a":[1,{"b":null}]}` {
					t.Errorf("a nested foreign field changed: %s", b)
				}
			}
			if s, _ := doc["claude_ai_oauth_json"].(string); r.code == 0 && !strings.Contains(s, l.RefreshToken) {
				t.Errorf("the good local login did not replace an unreadable one")
			}
			st := w.run(nil, "status", "--json")
			if st.code != 0 || !json.Valid([]byte(st.stdout)) {
				t.Errorf("status: exit %d, %q", st.code, st.stderr)
			}
		})
	}
	// restore from an unreadable backup: a clear FAIL, nothing written.
	w := newWorld(t)
	if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{"claude_ai_oauth_json": 42}); err != nil {
		t.Fatal(err)
	}
	r := w.run(nil, "restore")
	w.mustCode(r, 1, "restore from an unreadable backup")
	if _, err := os.Stat(w.creds); !os.IsNotExist(err) {
		t.Errorf("restore wrote something from an unreadable backup")
	}
}
