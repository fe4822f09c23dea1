package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// The full pass as a scoped, periodic, policy-limited token: check passes, the
// document has exactly the reference fields, and the object matches the file.
func TestFullPassWithScopedToken(t *testing.T) {
	w := newWorld(t)
	w.login()
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync")
	doc, ver := w.vaultDoc()
	if ver != 1 {
		t.Errorf("vault version = %d; want 1", ver)
	}
	var keys []string
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got, want := strings.Join(keys, ","), "backed_up_at,claude_ai_oauth_json,credential_expires_at_ms"; got != want {
		t.Errorf("document keys = %s; want %s", got, want)
	}
	if got := doc["claude_ai_oauth_json"]; got != w.localOAuthCompact() {
		t.Errorf("claude_ai_oauth_json differs from the file's claudeAiOauth")
	}
	if _, err := time.Parse(time.RFC3339, doc["backed_up_at"].(string)); err != nil {
		t.Errorf("backed_up_at = %v: %v", doc["backed_up_at"], err)
	}
	if !regexp.MustCompile(`(?m)^\S+ OK inference check passed; backed up to vault `).MatchString(w.syncLog()) {
		t.Errorf("sync.log lacks the OK line:\n%s", w.syncLog())
	}
	// A second pass with nothing changed writes no new version.
	w.mustCode(w.run(nil, "sync"), 0, "second sync")
	if _, v := w.vaultDoc(); v != 1 {
		t.Errorf("unchanged login wrote version %d; want still 1", v)
	}
	// The token was renewed and is still the scoped periodic one.
	sec, err := vsrv.Root().Auth().Token().LookupWithContext(context.Background(), w.user.Token)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := sec.Data["period"].(interface{ String() string }); p == nil || p.String() != "2764800" {
		t.Errorf("token period = %v; want 2764800 (768h)", sec.Data["period"])
	}
}

// A path pre-populated by the reference tool plus another tool's sibling keeps
// the sibling after our backup.
func TestSiblingKeysSurvive(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	old := w.fake.Issue()
	w.secrets = append(w.secrets, old.AccessToken, old.RefreshToken)
	oldJSON := `{"accessToken":"` + old.AccessToken + `","refreshToken":"` + old.RefreshToken + `","expiresAt":1000}`
	if _, err := rootKV().Put(ctx, w.user.Path, map[string]any{
		"claude_ai_oauth_json": oldJSON, "credential_expires_at_ms": "1000", "backed_up_at": "2026-01-01T00:00:00Z",
		"vaultwarden_master_password": "hunter2-not-ours",
	}); err != nil {
		t.Fatal(err)
	}
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	doc, ver := w.vaultDoc()
	if ver != 2 {
		t.Errorf("version = %d; want 2", ver)
	}
	if doc["vaultwarden_master_password"] != "hunter2-not-ours" {
		t.Errorf("vaultwarden_master_password = %v; want it kept", doc["vaultwarden_master_password"])
	}
	if doc["claude_ai_oauth_json"] != w.localOAuthCompact() {
		t.Errorf("backup not updated to the file's login")
	}
}

// A document we wrote restores correctly, after a logout and after a clobber.
func TestRestoreRoundTrip(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	want := w.localOAuthCompact()
	orig, _ := os.ReadFile(w.creds)

	os.Remove(w.creds)
	r := w.run(nil, "sync")
	w.mustCode(r, 3, "sync after logout")
	if _, err := os.Stat(w.creds); !os.IsNotExist(err) {
		t.Fatalf("a logged-out file was restored automatically")
	}
	w.mustCode(w.run(nil, "restore"), 0, "restore")
	if got := w.localOAuthCompact(); got != want {
		t.Errorf("restored login differs from the backup")
	}
	if fi, _ := os.Stat(w.creds); fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file mode %v; want 0600", fi.Mode().Perm())
	}

	// Clobbered: empty refresh token, other keys kept.
	clobbered := regexp.MustCompile(`"refreshToken": "[^"]*"`).ReplaceAll(orig, []byte(`"refreshToken": ""`))
	os.WriteFile(w.creds, clobbered, 0o600)
	r = w.run(nil, "sync")
	w.mustCode(r, 0, "sync after clobber")
	if got := w.localOAuthCompact(); got != want {
		t.Errorf("clobbered login not restored to the backup")
	}
	b, _ := os.ReadFile(w.creds)
	if !strings.Contains(string(b), `"mcpOAuth"`) {
		t.Errorf("restore dropped mcpOAuth")
	}
	if !regexp.MustCompile(`(?m)^\S+ RECOVERED .*\n\S+ OK `).MatchString(w.syncLog()) {
		t.Errorf("sync.log lacks RECOVERED then OK:\n%s", w.syncLog())
	}
}

// Another user's path is refused (403) and reported as FAIL; another user's
// token in our file is refused by the drift check.
func TestForeignPathAndToken(t *testing.T) {
	alice, bob := newWorld(t), newWorld(t)
	alice.login()
	bob.login()
	w := alice
	r := w.run([]string{"CLAUDE_AUTH_VAULT_PATH=secret/" + bob.user.Path}, "sync")
	w.mustCode(r, 1, "sync against bob's path")
	if !strings.Contains(r.stderr, "403") || !regexp.MustCompile(`(?m)^\S+ FAIL `).MatchString(w.syncLog()) {
		t.Errorf("want a FAIL naming 403; stderr: %s\nlog: %s", r.stderr, w.syncLog())
	}
	if _, v := bob.vaultDoc(); v != 0 {
		t.Errorf("bob's path was written (v%d)", v)
	}

	// Bob's token in alice's token file: drift check refuses it.
	os.WriteFile(w.user.TokenFile, []byte(bob.user.Token+"\n"), 0o600)
	w.secrets = append(w.secrets, bob.user.Token)
	r = w.run(nil, "sync")
	w.mustCode(r, 1, "sync with bob's token")
	if !strings.Contains(r.stderr, "lacks policy workstation-claude-"+w.name) {
		t.Errorf("want a drift FAIL; stderr: %s", r.stderr)
	}
	if _, v := w.vaultDoc(); v != 0 {
		t.Errorf("alice's path written with a foreign token")
	}
}

// Bad input gives one clear FAIL and never writes a bad object to Vault.
func TestBadInput(t *testing.T) {
	t.Run("wrong-mode token file", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		os.Chmod(w.user.TokenFile, 0o644)
		r := w.run(nil, "sync")
		w.mustCode(r, 1, "sync")
		if !strings.Contains(r.stderr, "consider the token exposed") || !strings.Contains(r.stderr, "claude-auth-sync provision") {
			t.Errorf("want the token called exposed and provision named; got %s", r.stderr)
		}
		if _, v := w.vaultDoc(); v != 0 {
			t.Errorf("vault written despite a bad token file")
		}
	})
	t.Run("missing token file", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		os.Remove(w.user.TokenFile)
		r := w.run(nil, "sync")
		w.mustCode(r, 1, "sync")
		if !strings.Contains(r.stderr, "does not exist") || !strings.Contains(r.stderr, "provision") {
			t.Errorf("want a clear missing-token message with a hint; got %s", r.stderr)
		}
	})
	t.Run("truncated credentials, no backup", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		b, _ := os.ReadFile(w.creds)
		os.WriteFile(w.creds, b[:len(b)/2], 0o600)
		r := w.run(nil, "sync")
		w.mustCode(r, 1, "sync")
		if n := strings.Count(w.syncLog(), " FAIL "); n != 1 {
			t.Errorf("want exactly one FAIL line, got %d:\n%s", n, w.syncLog())
		}
		if _, v := w.vaultDoc(); v != 0 {
			t.Errorf("a broken login was written to vault")
		}
		if got, _ := os.ReadFile(w.creds); len(got) != len(b)/2 {
			t.Errorf("the broken file was changed without a backup to restore")
		}
	})
	t.Run("empty refresh token, no backup", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		b, _ := os.ReadFile(w.creds)
		os.WriteFile(w.creds, regexp.MustCompile(`"refreshToken": "[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)), 0o600)
		w.mustCode(w.run(nil, "sync"), 1, "sync")
		if _, v := w.vaultDoc(); v != 0 {
			t.Errorf("an empty refresh token was backed up")
		}
	})
	t.Run("unreachable vault with a good login", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		before, _ := os.ReadFile(w.creds)
		r := w.run([]string{"VAULT_ADDR=http://127.0.0.1:9"}, "sync")
		w.mustCode(r, 75, "sync")
		if !strings.Contains(w.syncLog(), " WARN ") || !strings.Contains(w.syncLog(), "backup pending") {
			t.Errorf("want WARN backup pending:\n%s", w.syncLog())
		}
		if after, _ := os.ReadFile(w.creds); string(after) != string(before) {
			t.Errorf("credentials file touched while vault was down")
		}
	})
	t.Run("claude times out or is missing", func(t *testing.T) {
		w := newWorld(t)
		w.login()
		w.mustCode(w.run(nil, "sync"), 0, "first sync")
		before, _ := os.ReadFile(w.creds)
		r := w.run([]string{"CLAUDE_STANDIN_SLEEP=10s", "CLAUDE_AUTH_CHECK_TIMEOUT=500ms"}, "sync")
		w.mustCode(r, 75, "sync with a hanging claude")
		r = w.run([]string{"CLAUDE_AUTH_CLAUDE_BIN=" + filepath.Join(w.home, "no-such-claude")}, "sync")
		w.mustCode(r, 75, "sync with no claude")
		if after, _ := os.ReadFile(w.creds); string(after) != string(before) {
			t.Errorf("credentials changed on a transient failure")
		}
		if strings.Contains(w.syncLog(), "RECOVERED") {
			t.Errorf("restored on a transient failure:\n%s", w.syncLog())
		}
	})
}

// An auth failure that a refresh cannot fix (invalid_grant: the file holds a
// login that was rotated elsewhere) with a newer login in Vault restores it and
// retries: the file went back to an older login, say copied from an old home.
func TestAuthFailureRestoresAndRetries(t *testing.T) {
	w := newWorld(t)
	old := w.login()
	oldFile, _ := os.ReadFile(w.creds)
	w.mustCode(w.run(nil, "sync"), 0, "sync A")
	w.rotate(old) // Claude refreshed: A's refresh token is spent, its access revoked
	w.mustCode(w.run(nil, "sync"), 0, "sync B")
	good := w.localOAuthCompact()
	os.WriteFile(w.creds, oldFile, 0o600)
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync")
	if w.localOAuthCompact() != good {
		t.Errorf("the newer backup was not restored")
	}
	if !regexp.MustCompile(`(?m)^\S+ RECOVERED .*restored the login from the backup.*\n\S+ OK `).MatchString(w.syncLog()) {
		t.Errorf("no RECOVERED then OK:\n%s", w.syncLog())
	}
	// The replaced file is kept, not lost.
	if b, err := os.ReadFile(filepath.Join(w.state, "previous-credentials.json")); err != nil || string(b) != string(oldFile) {
		t.Errorf("replaced login not kept: %v", err)
	}
	if c := w.fake.Counters(); c.InvalidGrant != 1 {
		t.Errorf("invalid_grant = %d; want 1 (the forced refresh of the spent login)", c.InvalidGrant)
	}
}

// A 403 on a locally valid login whose refresh token still works: the forced
// refresh fixes it, and nothing is restored.
func TestAuthFailureFixedByForcedRefresh(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	bad := w.login()
	w.fake.Revoke(bad.AccessToken)
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync")
	if strings.Contains(w.syncLog(), "RECOVERED") || !strings.Contains(w.syncLog(), "after a forced refresh") {
		t.Errorf("want a forced refresh and no restore:\n%s", w.syncLog())
	}
	if refreshTokenOf(t, w.localOAuthCompact()) == bad.RefreshToken {
		t.Errorf("file still holds the refused login")
	}
	w.secrets = append(w.secrets, w.fake.Issued()...)
}

// An auth failure when the refresh gets invalid_grant and the backup is older
// than the file (already rotated out) does not restore it: FAIL with the login
// command, file untouched.
func TestAuthFailureDoesNotRestoreOlderBackup(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	bad := w.login()
	if _, err := w.fake.Rotate(bad.RefreshToken); err != nil { // spent elsewhere; the file kept it
		t.Fatal(err)
	}
	before, _ := os.ReadFile(w.creds)
	r := w.run(nil, "sync")
	w.mustCode(r, 1, "sync")
	if !strings.Contains(r.stderr, "claude auth login") {
		t.Errorf("FAIL without the login command: %s", r.stderr)
	}
	if after, _ := os.ReadFile(w.creds); string(after) != string(before) {
		t.Errorf("file changed although the backup is older")
	}
	w.secrets = append(w.secrets, w.fake.Issued()...)
}

// Setup-token mode: env file, backfill, no backups, check with the env token;
// clearing it removes the env file and puts the rotating login back.
func TestSetupTokenMode(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	rotating := w.localOAuthCompact()
	_, ver := w.vaultDoc()

	setup := w.fake.IssueSetupToken(365 * 24 * time.Hour)
	w.secrets = append(w.secrets, setup)
	if _, err := rootKV().Patch(ctx, w.user.Path, map[string]any{"setup_token": setup}); err != nil {
		t.Fatal(err)
	}
	_, ver = w.vaultDoc()
	r := w.run(nil, "sync")
	w.mustCode(r, 0, "sync in setup-token mode")
	env := filepath.Join(w.home, ".config", "claude-auth-sync", "claude-oauth.env")
	b, err := os.ReadFile(env)
	if err != nil || string(b) != "CLAUDE_CODE_OAUTH_TOKEN="+setup+"\n" {
		t.Fatalf("env file not materialised")
	}
	if fi, _ := os.Stat(env); fi.Mode().Perm() != 0o600 {
		t.Errorf("env file mode %v", fi.Mode().Perm())
	}
	if !strings.Contains(w.localOAuthCompact(), setup) {
		t.Errorf("credentials file not backfilled with the setup token")
	}
	if _, v := w.vaultDoc(); v != ver {
		t.Errorf("a backup was written in setup-token mode (v%d -> v%d)", ver, v)
	}
	// The check used the env token: revoke nothing, but the fake would refuse
	// the backfilled file's token only if it were not the setup token.
	if c := w.fake.Counters(); c.OK < 2 {
		t.Errorf("fake saw %d good calls; want ≥ 2", c.OK)
	}

	// The admin clears it.
	doc, _ := w.vaultDoc()
	delete(doc, "setup_token")
	if _, err := rootKV().Put(ctx, w.user.Path, doc); err != nil {
		t.Fatal(err)
	}
	r = w.run(nil, "sync")
	w.mustCode(r, 0, "sync after setup-token mode ends")
	if _, err := os.Stat(env); !os.IsNotExist(err) {
		t.Errorf("env file still there after setup-token mode ended")
	}
	if w.localOAuthCompact() != rotating {
		t.Errorf("rotating login not put back")
	}
}
