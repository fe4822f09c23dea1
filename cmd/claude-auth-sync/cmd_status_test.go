package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/engine"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// TestStatusExtremeExpiry runs `status` and `status --json` on credentials
// files whose expiry no RFC 3339 time can hold: both succeed, the JSON parses,
// and the time reads as out of range.
func TestStatusExtremeExpiry(t *testing.T) {
	const (
		secretA = "sk-ant-oat01-STATUS-TEST-ACCESS"
		secretR = "sk-ant-ort01-STATUS-TEST-REFRESH"
	)
	for _, tc := range []struct {
		name, expiresAt string
		wantJSON        string // expires_at in the JSON, as an instant ("" = absent)
		wantOutOfRange  string // out_of_range.expires_at ("" = absent)
		wantText        string // the "access expires:" line starts so ("" = no line; "-" = a time)
		wantCode        int    // the exit code: whether the login is usable
	}{
		{"max int64", "9223372036854775807", "9999-12-31T23:59:59.999999999Z",
			"9223372036854775807 ms since the epoch, after year 9999",
			"out of range (9223372036854775807 ms since the epoch, after year 9999)", 0},
		{"min int64", "-9223372036854775808", "0000-01-01T00:00:00Z",
			"-9223372036854775808 ms since the epoch, before year 0",
			"out of range (-9223372036854775808 ms since the epoch, before year 0)", 0},
		{"1e18 as a float", "1e18", "9999-12-31T23:59:59.999999999Z",
			"1000000000000000000 ms since the epoch, after year 9999",
			"out of range (1000000000000000000 ms since the epoch, after year 9999)", 0},
		{"first ms of year 10000", "253402300800000", "9999-12-31T23:59:59.999999999Z",
			"253402300800000 ms since the epoch, after year 9999", "out of range (253402300800000", 0},
		// In range in UTC, maybe not in the local zone: written in UTC then.
		{"last ms of year 9999", "253402300799999", "9999-12-31T23:59:59.999Z", "", "-", 0},
		// The credentials package reads a number beyond ±2^62 ms as no number
		// at all: a broken login, and no time to show.
		{"1e300", "1e300", "", "", "", telemetry.StatusUnusable},
		{"ordinary", "1767225600000", "2026-01-01T00:00:00Z", "", "-", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := sandboxHome(t)
			creds := filepath.Join(dir, "credentials.json")
			body := `{"claudeAiOauth":{"accessToken":"` + secretA + `","refreshToken":"` + secretR +
				`","expiresAt":` + tc.expiresAt + `,"scopes":["user:inference"]}}`
			if err := os.WriteFile(creds, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--credentials", creds, "--state-dir", filepath.Join(dir, "state"),
				"--store", "file", "--claude", filepath.Join(dir, "no-claude")}

			var out, errb bytes.Buffer
			code := Main(append([]string{"status", "--json"}, args...), &out, &errb)
			if code != tc.wantCode || errb.Len() > 0 {
				t.Fatalf("status --json: exit %d, stderr %q; want %d and nothing", code, errb.String(), tc.wantCode)
			}
			var got struct {
				ExpiresAt  *string           `json:"expires_at"`
				OutOfRange map[string]string `json:"out_of_range"`
			}
			if err := json.Unmarshal(out.Bytes(), &got); err != nil {
				t.Fatalf("status --json printed no valid JSON: %v\n%s", err, out.String())
			}
			switch {
			case tc.wantJSON == "" && got.ExpiresAt != nil:
				t.Errorf("expires_at = %q; want none", *got.ExpiresAt)
			case tc.wantJSON != "" && got.ExpiresAt == nil:
				t.Errorf("no expires_at; want %s", tc.wantJSON)
			case tc.wantJSON != "":
				g, err := time.Parse(time.RFC3339Nano, *got.ExpiresAt)
				w, _ := time.Parse(time.RFC3339Nano, tc.wantJSON)
				if err != nil || !g.Equal(w) {
					t.Errorf("expires_at = %q (%v); want %s", *got.ExpiresAt, err, tc.wantJSON)
				}
			}
			if g := got.OutOfRange["expires_at"]; g != tc.wantOutOfRange {
				t.Errorf("out_of_range.expires_at = %q; want %q", g, tc.wantOutOfRange)
			}

			out.Reset()
			errb.Reset()
			code = Main(append([]string{"status"}, args...), &out, &errb)
			if code != tc.wantCode || errb.Len() > 0 {
				t.Fatalf("status: exit %d, stderr %q; want %d and nothing", code, errb.String(), tc.wantCode)
			}
			var line string
			for _, l := range strings.Split(out.String(), "\n") {
				if v, ok := strings.CutPrefix(l, "access expires:"); ok {
					line = strings.TrimSpace(v)
				}
			}
			switch tc.wantText {
			case "":
				if line != "" {
					t.Errorf("access expires: %q; want no such line", line)
				}
			case "-":
				if _, err := time.Parse(time.RFC3339, strings.Fields(line + " x")[0]); err != nil {
					t.Errorf("access expires: %q; want a time: %v", line, err)
				}
			default:
				if !strings.HasPrefix(line, tc.wantText) {
					t.Errorf("access expires: %q; want %q\n%s", line, tc.wantText, out.String())
				}
			}
			if strings.Contains(out.String(), "2562047h") {
				t.Errorf("a saturated duration shows:\n%s", out.String())
			}
			for _, s := range []string{secretA, secretR} {
				if strings.Contains(out.String(), s) {
					t.Errorf("a token shows in the output")
				}
			}
		})
	}
}

// TestPrintJSONError: a report that cannot be encoded says why on stderr and
// exits non-zero, with nothing on stdout.
func TestPrintJSONError(t *testing.T) {
	far := time.UnixMilli(math.MaxInt64)
	for _, tc := range []struct {
		name    string
		r       telemetry.Report
		code    int
		wantErr string
	}{
		{"fine", telemetry.Report{User: "alice"}, 0, ""},
		{"a record time past year 9999", telemetry.Report{User: "alice", LastBackup: &telemetry.BackupRecord{At: far}},
			engine.ExitFail, "claude-auth-sync status: cannot write the report as JSON: "},
		{"an unclamped report time", telemetry.Report{User: "alice", ExpiresAt: &far},
			engine.ExitFail, "year outside of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := printJSON(&out, &errb, tc.r)
			if code != tc.code {
				t.Errorf("exit %d; want %d", code, tc.code)
			}
			if tc.wantErr == "" {
				if errb.Len() > 0 || !json.Valid(out.Bytes()) {
					t.Errorf("stdout %q, stderr %q; want JSON and no error", out.String(), errb.String())
				}
				return
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q; want nothing", out.String())
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Errorf("stderr %q; want it to contain %q", errb.String(), tc.wantErr)
			}
		})
	}
}

// TestWhenFar: beyond ±292 years Sub saturates; when says so rather than
// print the saturated duration as if it were the distance.
func TestWhenFar(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		t    time.Time
		want string
	}{
		{"soon", now.Add(90 * time.Minute), "(in 1h30m)"},
		{"just past", now.Add(-400 * time.Millisecond), "(0s ago)"},
		{"year 9999", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "(in more than 292 years)"},
		{"year 1", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), "(more than 292 years ago)"},
		{"max", time.UnixMilli(math.MaxInt64), "(in more than 292 years)"},
		{"min", time.UnixMilli(math.MinInt64), "(more than 292 years ago)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := when(tc.t, now); !strings.HasSuffix(got, tc.want) {
				t.Errorf("when(%v) = %q; want it to end in %q", tc.t, got, tc.want)
			}
		})
	}
}

// TestHuman: distances as a person reads them, never Go's 767h59m59s.
func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{400 * time.Millisecond, "0s"},
		{45 * time.Second, "45s"},
		{2 * time.Minute, "2m"},
		{2*time.Minute + 5*time.Second, "2m5s"},
		{9*time.Minute + 59*time.Second + 999*time.Millisecond, "9m59s"},
		{42*time.Minute + 30*time.Second, "42m"},
		{8*time.Hour - time.Second, "7h59m"},
		{8 * time.Hour, "8h"},
		{51 * time.Hour, "2d3h"},
		{767*time.Hour + 59*time.Minute + 59*time.Second, "31d"},
		{-2 * time.Minute, "2m"},
	} {
		if got := human(tc.d); got != tc.want {
			t.Errorf("human(%v) = %q; want %q", tc.d, got, tc.want)
		}
	}
	for _, tc := range []struct {
		ms   float64
		want string
	}{
		{0.4, "0.4 ms"}, {350.2, "350 ms"}, {1500, "1.5s"}, {120010.9, "2m"}, {7200000, "2h"},
	} {
		if got := lag(tc.ms); got != tc.want {
			t.Errorf("lag(%v) = %q; want %q", tc.ms, got, tc.want)
		}
	}
}

// TestPrintStatus: the text form says the same as the JSON, in words: the
// setup token's end in setup-token mode, the CLI or where it was looked for,
// the agent's pid and lag as a person reads them.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	ttl := int64(767*3600 + 59*60 + 59)
	lagAt := now.Add(-2 * time.Minute)
	for _, tc := range []struct {
		name      string
		r         telemetry.Report
		want, not []string
	}{
		{"setup-token mode", telemetry.Report{User: "alice", Mode: "setup-token", Usable: true, Login: "usable", Verdict: "usable (on the admin's setup token)",
			SetupToken:    &telemetry.SetupTokenReport{ExpiresAt: at(40 * 24 * time.Hour), ExpiresFrom: "vault"},
			VaultTokenTTL: &ttl, Claude: telemetry.ClaudeCLI{Path: "/home/alice/.local/bin/claude", Version: "2.1.332 (Claude Code)"}},
			[]string{"setup token:      expires ", "(in 40d)", "verdict:          usable (on the admin's setup token)\nuser:", "vault token ttl:  31d\n",
				"claude:           /home/alice/.local/bin/claude 2.1.332 (Claude Code)\n"},
			[]string{"767h", "next step", "usable:"}},
		{"first-seen end", telemetry.Report{Mode: "setup-token", SetupToken: &telemetry.SetupTokenReport{ExpiresAt: at(-time.Hour), ExpiresFrom: "first-seen"},
			Unusable: "the setup token expired; ask your admin for a new one", Verdict: "not usable: the setup token expired", NextStep: "ask your admin for a new one"},
			[]string{"(1h ago), one year after this host first saw it", "verdict:          not usable: the setup token expired\nnext step:        ask your admin for a new one\n"}, nil},
		{"logged out, agent running", telemetry.Report{Mode: "rotating", Login: "missing", Unusable: "not logged in",
			Claude: telemetry.ClaudeCLI{Tried: []string{"claude on PATH (/usr/bin:/bin)", "/home/alice/.local/bin/claude"}},
			Agent: telemetry.AgentReport{Running: true, PID: 4242, AgentState: &telemetry.AgentState{Watch: "inotify",
				LastBackup: &lagAt, LastBackupVer: 5, LastBackupLagMs: 120010.9, Backups: 2}}},
			[]string{"claude:           not found (tried claude on PATH (/usr/bin:/bin), /home/alice/.local/bin/claude)\n",
				"agent:            running, pid 4242\n", "agent backup:     v5, ", "(2m ago), 2m after the change (2 this run)"},
			[]string{"next refresh", "ms after", "refreshes"}},
		{"store and host backups", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true,
			Backup:     &telemetry.StoreBackup{Version: 5, BackedUpAt: at(-time.Minute)},
			LastBackup: &telemetry.BackupRecord{At: now.Add(-3 * time.Hour), Version: 3}},
			[]string{"backup:           v5, backed up ", "(1m ago)", "last backup:      v3, ", "(3h ago), by this host"}, nil},
		// Relative times are computed as printed, from absolute ones: the
		// next check's reason carries none of its own.
		{"next check as printed", telemetry.Report{Mode: "rotating", Login: "usable", Usable: true, Verdict: "usable",
			LastCheck: &telemetry.CheckRecord{At: now.Add(-77 * time.Second), Result: "ok", Reason: "inference check answered AUTH_OK"},
			Agent: telemetry.AgentReport{Running: true, PID: 7, AgentState: &telemetry.AgentState{Watch: "inotify",
				NextCheck: at(5 * time.Hour), NextCheckWhy: "the last check passed and nothing changed since"}}},
			[]string{"last check:       ", "(1m17s ago) ok: inference check answered AUTH_OK",
				"next check:       ", "(in 5h); the last check passed and nothing changed since\n"},
			[]string{"57s ago", "next step"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printStatus(&b, tc.r, now)
			// Compared with the label's padding squeezed to one space.
			squeeze := func(s string) string { return regexp.MustCompile(`: +`).ReplaceAllString(s, ": ") }
			out := squeeze(b.String())
			for _, w := range tc.want {
				if !strings.Contains(out, squeeze(w)) {
					t.Errorf("printStatus: no %q in\n%s", w, b.String())
				}
			}
			for _, n := range tc.not {
				if strings.Contains(b.String(), n) {
					t.Errorf("printStatus: %q in\n%s", n, b.String())
				}
			}
		})
	}
}

// sandboxHome is a temp HOME for a command run in-process: no system config,
// no journal, no Vault (the local file store).
func sandboxHome(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("HOME", dir)
	t.Setenv("CLAUDE_AUTH_SYSTEM_CONFIG", filepath.Join(dir, "no-config"))
	t.Setenv("CLAUDE_AUTH_JOURNAL_SOCKET", "off")
	t.Setenv("VAULT_ADDR", "")
	return dir
}
