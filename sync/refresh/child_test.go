package refresh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// The child's report carries every error class the refresher branches on,
// and the login it could not write.
func TestChildReportRoundTrip(t *testing.T) {
	login, err := credentials.ParseOAuth([]byte(`{"accessToken":"sk-ant-oat01-child-a","refreshToken":"sk-ant-ort01-child-r","expiresAt":1893456000000,"scopes":["user:inference"]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		err   error
		login *credentials.OAuth
		want  error
	}{
		{"not written", ErrNotWritten, login, ErrNotWritten},
		{"dead", ErrLoginDead, nil, ErrLoginDead},
		{"locks", lock.ErrClaudeLocksUnavailable, nil, lock.ErrClaudeLocksUnavailable},
		{"transient", oauth.ErrTransient, nil, oauth.ErrTransient},
		{"timeout", context.DeadlineExceeded, nil, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			werr := fmt.Errorf("wrapped: %w", tc.err)
			rep := reportFor(ClaudeResult{OAuth: tc.login}, werr)
			var buf bytes.Buffer
			if err := jsonEncode(&buf, rep); err != nil {
				t.Fatal(err)
			}
			res, err := decodeChildReport(buf.Bytes(), credentials.ParseOAuth)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeChildReport(%s) error = %v; want one that is %v", tc.name, err, tc.want)
			}
			if err.Error() != rep.Error {
				t.Errorf("error text %q; want %q", err.Error(), rep.Error)
			}
			if tc.login != nil && (res.OAuth == nil || !res.OAuth.Equal(tc.login)) {
				t.Errorf("the unwritten login did not come back")
			}
		})
	}
	res, err := decodeChildReport([]byte(`{"refreshed":true,"message":"refreshed"}`), credentials.ParseOAuth)
	if err != nil || !res.Refreshed || res.Message != "refreshed" {
		t.Errorf("success report = %+v, %v", res, err)
	}
	// A refresh that succeeded says which login it wrote: a racer may have
	// clobbered the file since, and the agent backs it up from here.
	var buf bytes.Buffer
	if err := jsonEncode(&buf, reportFor(ClaudeResult{Refreshed: true, OAuth: login, Message: "refreshed"}, nil)); err != nil {
		t.Fatal(err)
	}
	res, err = decodeChildReport(buf.Bytes(), credentials.ParseOAuth)
	if err != nil || !res.Refreshed || res.OAuth == nil || !res.OAuth.Equal(login) {
		t.Errorf("the report of a refresh does not bring its login back (err %v)", err)
	}
	if _, err := decodeChildReport([]byte("not json"), credentials.ParseOAuth); err == nil {
		t.Errorf("an unreadable report was accepted")
	}
	if _, err := decodeChildReport([]byte(`{"kind":"something new","error":"x"}`), credentials.ParseOAuth); err == nil || err.Error() != "x" {
		t.Errorf("unknown kind: %v; want the plain error text", err)
	}
}

// When root acts for a user, the refresh child runs as that user: it gets
// the allow-listed environment and a session of its own, and what it says on
// stderr reaches ours printable.
func TestChildRefresherForAnotherUser(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "child")
	script := `#!/bin/sh
env > ` + dir + `/env
cat /proc/$$/stat > ` + dir + `/stat
printf 'child says \033]0;pwned\007\033[31mred\033[0m\n' >&2
echo '{"refreshed":true,"message":"refreshed"}'
`
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", "hvs.root-admin-token-in-a-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-root-secret-in-a-test")
	t.Setenv("CLAUDE_AUTH_OAUTH_TOKEN_URL", "http://127.0.0.1:9/v1/oauth/token")

	for _, tc := range []struct {
		name    string
		actFor  *config.Account
		isolate bool
	}{
		{"the user's own agent", nil, false},
		{"root for another user", &config.Account{Name: "someone"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			saved := os.Stderr
			os.Stderr = w
			cfg := &config.Config{ActFor: tc.actFor}
			c := ChildCommand{Exe: exe, ActFor: cfg.ActFor != nil}
			if c.ActFor {
				c.Env = cfg.ChildEnviron()
			}
			res, err := New(Config[*credentials.OAuth]{Family: &ClaudeLogin{}}).InChild(c)(context.Background(), false, "")
			os.Stderr = saved
			w.Close()
			stderr, _ := io.ReadAll(r)
			if err != nil || !res.Refreshed {
				t.Fatalf("refresh via child = %+v, %v; want refreshed", res, err)
			}
			env, _ := os.ReadFile(filepath.Join(dir, "env"))
			stat, _ := os.ReadFile(filepath.Join(dir, "stat"))
			// /proc/<pid>/stat: pid (comm) state ppid pgrp session …
			f := strings.Fields(string(stat))
			leader := len(f) > 5 && f[0] == f[5]
			secret := strings.Contains(string(env), "root-admin-token") || strings.Contains(string(env), "aws-root-secret")
			escapes := bytes.ContainsRune(stderr, 0x1b) || bytes.ContainsRune(stderr, 0x07)
			if tc.isolate {
				if secret || !leader || escapes || !strings.Contains(string(env), "CLAUDE_AUTH_OAUTH_TOKEN_URL=") {
					t.Errorf("child for another user: secret in env %v, session leader %v, escapes on stderr %v (%q); env:\n%s", secret, leader, escapes, stderr, env)
				}
				var keys []string
				for _, k := range config.EnvKeys(strings.Split(strings.TrimSpace(string(env)), "\n")) {
					if k != "PWD" && k != "SHLVL" && k != "_" { // the shell's own
						keys = append(keys, k)
					}
				}
				t.Logf("CHILD-ENV refresh-child: %s", strings.Join(keys, ","))
				if !bytes.Contains(stderr, []byte("child says red")) {
					t.Errorf("the child's stderr did not come through: %q", stderr)
				}
			} else if !secret || leader {
				// The user's own agent: its child keeps the whole environment
				// and the agent's session, as before.
				t.Errorf("the user's own child: whole env %v, session leader %v", secret, leader)
			}
		})
	}
}
