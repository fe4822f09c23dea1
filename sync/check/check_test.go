package check

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		exit   int
		stdout string
		stderr string
		want   Kind
	}{
		{name: "401 expired", exit: 1,
			stdout: `API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired. Please obtain a new token or refresh your existing token."},"request_id":"req_011CUxyz"}`,
			want:   Auth},
		{name: "401 invalid bearer", exit: 1,
			stdout: `Failed to authenticate. API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"Invalid bearer token"}}`,
			want:   Auth},
		{name: "403 revoked", exit: 1,
			stdout: `API Error: 403 {"type":"error","error":{"type":"permission_error","message":"OAuth token has been revoked. Please obtain a new token."}}`,
			want:   Auth},
		{name: "not logged in", exit: 1, stdout: "Not logged in · Please run /login", want: Auth},
		{name: "invalid api key", exit: 1, stdout: "Invalid API key · Please run /login", want: Auth},
		{name: "auth on stderr", exit: 1, stderr: "Error: 401 Unauthorized", want: Auth},
		{name: "invalid_grant", exit: 1,
			stderr: `OAuth token refresh failed: {"error":"invalid_grant","error_description":"Refresh token not found or invalid"}`,
			want:   Dead},
		{name: "invalid_grant beats 401", exit: 1,
			stdout: `API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired."}}`,
			stderr: `refresh failed: invalid_grant`, want: Dead},
		{name: "refresh token expired", exit: 1, stderr: `{"error":"invalid_grant","error_description":"Refresh token expired"}`, want: Dead},
		{name: "login expired", exit: 1, stdout: "Your login has expired. Please run /login", want: Dead},
		{name: "500", exit: 1,
			stdout: `API Error: 500 {"type":"error","error":{"type":"api_error","message":"Internal server error"}}`,
			want:   Transient},
		{name: "529 overloaded", exit: 1,
			stdout: `API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
			want:   Transient},
		{name: "429 rate limit", exit: 1,
			stdout: `API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"Number of requests has exceeded your rate limit."}}`,
			want:   Transient},
		{name: "connection error", exit: 1, stdout: "API Error: Connection error.", want: Transient},
		{name: "ECONNREFUSED", exit: 1, stderr: "Error: connect ECONNREFUSED 127.0.0.1:443", want: Transient},
		{name: "ENOTFOUND", exit: 1, stderr: "getaddrinfo ENOTFOUND api.anthropic.com", want: Transient},
		{name: "request timed out", exit: 1, stdout: "API Error: Request timed out.", want: Transient},
		{name: "auth beats transient", exit: 1,
			stderr: "API Error: Connection error.\nretrying...\nAPI Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"Invalid bearer token\"}}",
			want:   Auth},
		{name: "exit 0 other text", exit: 0, stdout: "Sure! AUTH_OK", want: Unexpected},
		{name: "exit 0 empty", exit: 0, stdout: "", want: Unexpected},
		{name: "unknown non-zero", exit: 2, stderr: "segmentation fault", want: Transient},
		{name: "killed", exit: -1, want: Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := Classify(tt.exit, tt.stdout, tt.stderr)
			if got != tt.want {
				t.Errorf("Classify(%d, %q, %q) = %v (%s); want %v", tt.exit, tt.stdout, tt.stderr, got, reason, tt.want)
			}
			if reason == "" || strings.Contains(reason, "\n") {
				t.Errorf("Classify(%d, %q, %q) reason = %q; want one non-empty line", tt.exit, tt.stdout, tt.stderr, reason)
			}
		})
	}
}

func TestClassifyMasksAndCuts(t *testing.T) {
	tok := "sk-ant-oat01-LEAKleakLEAKleakLEAK"
	_, reason := Classify(1, "\n\n  API Error: 401 bearer "+tok+" rejected "+strings.Repeat("x ", 300), "")
	if strings.Contains(reason, "LEAK") {
		t.Errorf("Classify reason = %q; contains the token", reason)
	}
	if !strings.Contains(reason, "API Error: 401") || len(reason) > 260 {
		t.Errorf("Classify reason = %q (%d bytes); want the first output line, cut short", reason, len(reason))
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{OK: "ok", Auth: "auth", Dead: "dead", Transient: "transient", Unexpected: "unexpected"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q; want %q", int(k), got, want)
		}
	}
}

func TestMask(t *testing.T) {
	tests := []struct {
		in, leak string
	}{
		{"token sk-ant-oat01-AbCdEf_123-xyz here", "AbCdEf_123"},
		{"refresh sk-ant-ort01-ZZZZzzzz0000", "ZZZZzzzz0000"},
		{"vault hvs.CAESIabcdefghijklmnopqrstuvwxyz012345 done", "CAESIabcdef"},
		{"batch hvb.AAAAQabcdefghijklmnopqrstuvwxyz", "AAAAQabcdef"},
		{"legacy s.abcdefghijklmnopqrstuvwx", "abcdefghijklmnop"},
		{"long " + strings.Repeat("f", 64), strings.Repeat("f", 64)},
	}
	for _, tt := range tests {
		got := Mask(tt.in)
		if strings.Contains(got, tt.leak) || !strings.Contains(got, "[redacted]") {
			t.Errorf("Mask(%q) = %q; want the token replaced by [redacted]", tt.in, got)
		}
	}
	for _, keep := range []string{"API Error: 401 authentication_error", "exit status 1", "req_011CU abc"} {
		if got := Mask(keep); got != keep {
			t.Errorf("Mask(%q) = %q; want it unchanged", keep, got)
		}
	}
}

func TestArgs(t *testing.T) {
	got := strings.Join(Args(), "\x00")
	for _, want := range []string{"-p\x00" + Prompt, "--model\x00haiku", "--no-session-persistence", "--tools\x00\x00", "--disable-slash-commands", "--setting-sources\x00"} {
		if !strings.Contains(got, want) {
			t.Errorf("Args() = %q; want it to contain %q", Args(), want)
		}
	}
	if !strings.Contains(Prompt, Expected) {
		t.Errorf("Prompt %q does not ask for %q", Prompt, Expected)
	}
}

// script writes an executable /bin/sh script and returns its path.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunnerRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		body      string // "" = command does not exist
		command   string // overrides the script path
		timeout   time.Duration
		want      Kind
		reasonHas string
		exit      int
	}{
		{name: "AUTH_OK", body: "echo AUTH_OK\n", want: OK},
		{name: "AUTH_OK with blank lines", body: "printf '\\n  AUTH_OK \\n\\n'\n", want: OK},
		{name: "AUTH_OK extra", body: "echo 'AUTH_OK extra'\n", want: Unexpected},
		{name: "AUTH_OK but exit 1", body: "echo AUTH_OK; exit 1\n", want: Transient, exit: 1},
		{name: "401 on stdout", body: `echo 'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired."}}'; exit 1` + "\n", want: Auth, exit: 1},
		{name: "invalid_grant on stderr", body: "echo 'invalid_grant' >&2; exit 1\n", want: Dead, exit: 1},
		{name: "529 overloaded", body: "echo 'API Error: 529 overloaded_error' >&2; exit 1\n", want: Transient, exit: 1},
		{name: "timeout", body: "sleep 5\necho AUTH_OK\n", timeout: 300 * time.Millisecond, want: Transient, reasonHas: "timed out"},
		{name: "timeout with a child holding stdout", body: "sleep 5 &\nsleep 5\n", timeout: 300 * time.Millisecond, want: Transient, reasonHas: "timed out"},
		{name: "missing binary", command: filepath.Join(dir, "no-such-claude"), want: Transient, reasonHas: "not found"},
		{name: "missing binary on PATH", command: "no-such-claude-binary-xyz", want: Transient, reasonHas: "not found"},
		{name: "not executable", command: "NOEXEC", want: Transient, reasonHas: "could not run"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := tt.command
			switch {
			case cmd == "NOEXEC":
				cmd = filepath.Join(dir, "noexec")
				if err := os.WriteFile(cmd, []byte("#!/bin/sh\necho AUTH_OK\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			case cmd == "":
				cmd = script(t, dir, "claude"+string(rune('a'+i)), tt.body)
			}
			r := &Runner{Command: cmd, Timeout: tt.timeout, Env: []string{"PATH=/usr/bin:/bin"}, Dir: dir}
			if r.Timeout == 0 {
				r.Timeout = 10 * time.Second
			}
			start := time.Now()
			res := r.Run(context.Background())
			if res.Kind != tt.want {
				t.Errorf("Run(%s) = %v (%q); want %v", tt.name, res.Kind, res.Reason, tt.want)
			}
			if tt.reasonHas != "" && !strings.Contains(res.Reason, tt.reasonHas) {
				t.Errorf("Run(%s).Reason = %q; want it to contain %q", tt.name, res.Reason, tt.reasonHas)
			}
			if tt.exit != 0 && res.ExitCode != tt.exit {
				t.Errorf("Run(%s).ExitCode = %d; want %d", tt.name, res.ExitCode, tt.exit)
			}
			if tt.timeout > 0 && time.Since(start) > 3*time.Second {
				t.Errorf("Run(%s) took %v; want it killed soon after the %v timeout", tt.name, time.Since(start), tt.timeout)
			}
		})
	}
}

func TestRunnerEnvNotArgv(t *testing.T) {
	dir := t.TempDir()
	const tok = "sk-ant-oat01-SETUPsetupSETUPsetup0123456789"
	argvFile := filepath.Join(dir, "argv")
	envFile := filepath.Join(dir, "env")
	cmd := script(t, dir, "claude", `printf '%s\n' "$0" "$@" > `+argvFile+`
printf '%s\n' "$CLAUDE_CODE_OAUTH_TOKEN" "$BASE_VAR" "$PWD" > `+envFile+`
echo AUTH_OK
`)
	r := &Runner{Command: cmd, Timeout: 10 * time.Second, Env: []string{"PATH=/usr/bin:/bin", "BASE_VAR=base"}, Dir: dir}
	res := r.Run(context.Background(), "CLAUDE_CODE_OAUTH_TOKEN="+tok)
	if res.Kind != OK {
		t.Fatalf("Run() = %v (%s); want OK", res.Kind, res.Reason)
	}
	env, _ := os.ReadFile(envFile)
	wantEnv := tok + "\nbase\n" + dir + "\n"
	if string(env) != wantEnv {
		t.Errorf("child saw env %q; want %q", env, wantEnv)
	}
	argv, _ := os.ReadFile(argvFile)
	if strings.Contains(string(argv), "sk-ant-") || strings.Contains(string(argv), "SETUP") {
		t.Errorf("child argv %q contains the token", argv)
	}
	if !strings.Contains(string(argv), Prompt) || !strings.Contains(string(argv), "haiku") {
		t.Errorf("child argv %q; want the check's arguments", argv)
	}
	// The runner's own Env is not changed by extraEnv.
	if len(r.Env) != 2 {
		t.Errorf("Run changed Runner.Env to %q", r.Env)
	}
	// Without extraEnv the child does not see the token.
	if res := r.Run(context.Background()); res.Kind != OK {
		t.Fatalf("Run() = %v; want OK", res.Kind)
	}
	if env, _ := os.ReadFile(envFile); strings.Contains(string(env), tok) {
		t.Errorf("child saw the token without extraEnv: %q", env)
	}
}

func TestRunnerContextCancel(t *testing.T) {
	dir := t.TempDir()
	// The child says it runs (a line into a FIFO), then runs far longer than
	// the test: only the cancel can end it.
	ready := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := script(t, dir, "claude", "echo running > '"+ready+"'\nsleep 3600\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	running := make(chan struct{})
	go func() { os.ReadFile(ready); close(running) }()
	done := make(chan Result, 1)
	go func() {
		done <- (&Runner{Command: cmd, Timeout: time.Hour, Env: []string{"PATH=/usr/bin:/bin"}}).Run(ctx)
	}()
	select {
	case <-running:
	case res := <-done:
		t.Fatalf("Run() = %v before the child ran", res.Kind)
	case <-time.After(30 * time.Second):
		t.Fatalf("the child did not start within 30 s")
	}
	cancel()
	select {
	case res := <-done:
		if res.Kind == OK {
			t.Errorf("Run() with a cancelled context = %v; want a failure", res.Kind)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("Run() did not return within 30 s of the cancel (the child runs for an hour)")
	}
}
