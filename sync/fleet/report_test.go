package fleet

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func days(n float64) time.Time { return now.Add(time.Duration(n * float64(24*time.Hour))) }

func row(user, host, status string, deadline, expires time.Time) Row {
	return Row{User: user, HostID: host, Health: Health{Status: status, Deadline: deadline, ExpiresAt: expires}}
}

func TestSort(t *testing.T) {
	rows := []Row{
		row("zed", "h1", "OK", days(30), days(0.2)),
		row("amy", "h2", "OK", days(3), days(0.3)),
		row("amy", "h1", "OK", days(3), days(0.1)),
		row("bob", "h1", "SKIP", days(1), time.Time{}),
		row("bob", "h2", "WARN", time.Time{}, days(0.1)),
		row("cat", "", StatusUnknown, time.Time{}, time.Time{}),
		row("dan", "h1", "FAIL", days(40), days(-2)),
		row("eve", "h9", "FAIL", days(2), days(-1)),
		row("fay", "h1", "RECOVERED", days(9), days(0.2)),
		row("gus", "h1", "NEWWORD", days(1), days(0.2)),
		row("amy", "h3", "OK", time.Time{}, time.Time{}),
		{User: "hal", HostID: "h1", Health: Health{Status: "OK", Deadline: days(50), SetupExpires: days(2)}},
	}
	Sort(rows)
	var got []string
	for _, r := range rows {
		got = append(got, r.Status+" "+r.User+"/"+r.HostID)
	}
	want := []string{
		"FAIL eve/h9", "FAIL dan/h1", // FAIL first, the nearest deadline first
		"WARN bob/h2",
		"NEWWORD gus/h1", "UNKNOWN cat/", // an unknown status ranks with UNKNOWN
		"RECOVERED fay/h1",
		"SKIP bob/h1",
		"OK hal/h1",                           // setup-token mode: the setup token's end (2 d) is what is due
		"OK amy/h1", "OK amy/h2", "OK zed/h1", // same deadline: the sooner access expiry first
		"OK amy/h3", // nothing known: last
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Sort:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAlert(t *testing.T) {
	week := 7 * 24 * time.Hour
	for _, tc := range []struct {
		r      Row
		within time.Duration
		want   bool
	}{
		{row("a", "h", "FAIL", days(90), time.Time{}), week, true},
		{row("a", "h", "OK", days(3), time.Time{}), week, true},
		{row("a", "h", "OK", days(7), time.Time{}), week, true}, // exactly at the edge
		{row("a", "h", "OK", days(7.01), time.Time{}), week, false},
		{row("a", "h", "OK", days(-1), time.Time{}), 0, true}, // ended
		{row("a", "h", "OK", days(3), time.Time{}), 2 * 24 * time.Hour, false},
		{row("a", "h", "WARN", time.Time{}, days(-3)), week, false}, // access expiry alone does not page
		{row("a", "", StatusUnknown, time.Time{}, time.Time{}), week, false},
		{Row{Health: Health{Status: "OK", Deadline: days(-30), SetupExpires: days(200)}}, week, false},
		{Row{Health: Health{Status: "OK", Deadline: days(300), SetupExpires: days(5)}}, week, true},
	} {
		if got := tc.r.Alert(now, tc.within); got != tc.want {
			t.Errorf("%+v.Alert(within %v) = %v; want %v", tc.r, tc.within, got, tc.want)
		}
	}
}

// TestReportJSON: the JSON document, whole, for a small fleet.
func TestReportJSON(t *testing.T) {
	rows := []Row{
		{User: "alice", HostID: "h1", Owner: true, Health: Health{Label: "ws-01", Status: "OK", StatusAt: days(-0.01), BackupAt: days(-0.01),
			ExpiresAt: days(0.2), Deadline: days(27), Version: "1.4.0", Doc: DocMain}},
		{User: "bob", HostID: "h2", Health: Health{Label: "ws-02", Status: "FAIL", StatusAt: days(-0.1), SetupExpires: days(100), Version: "1.4.0", Doc: DocHosts,
			Reason: "check failed:\x1b[31m refused"}},
		{User: "carol", Health: Health{Status: StatusUnknown}, Note: "no health yet"},
	}
	rep := NewReport(rows, now.Add(500*time.Millisecond), 7)
	rep.Vault, rep.Mount, rep.Base = "https://vault:8200", "secret", "workstation/claude-users"
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "version": 1,
  "generated_at": "2026-03-01T12:00:00Z",
  "vault": "https://vault:8200",
  "mount": "secret",
  "base": "workstation/claude-users",
  "within_days": 7,
  "users": 3,
  "hosts": 2,
  "counts": {
    "FAIL": 1,
    "OK": 1,
    "UNKNOWN": 1
  },
  "alerts": 1,
  "reader_policy": "unknown",
  "user_policies": "unknown",
  "rows": [
    {
      "user": "bob",
      "host_id": "h2",
      "host_label": "ws-02",
      "owner": false,
      "status": "FAIL",
      "status_at": "2026-03-01T09:36:00Z",
      "setup_expires": "2026-06-09T12:00:00Z",
      "due_at": "2026-06-09T12:00:00Z",
      "agent_version": "1.4.0",
      "doc": "hosts",
      "reason": "check failed: refused",
      "alert": true
    },
    {
      "user": "carol",
      "owner": false,
      "status": "UNKNOWN",
      "note": "no health yet",
      "reason": "no health yet",
      "alert": false
    },
    {
      "user": "alice",
      "host_id": "h1",
      "host_label": "ws-01",
      "owner": true,
      "status": "OK",
      "status_at": "2026-03-01T11:45:36Z",
      "backup_at": "2026-03-01T11:45:36Z",
      "expires_at": "2026-03-01T16:48:00Z",
      "deadline": "2026-03-28T12:00:00Z",
      "due_at": "2026-03-28T12:00:00Z",
      "agent_version": "1.4.0",
      "doc": "main",
      "alert": false
    }
  ]
}`
	if string(b) != want {
		t.Errorf("report JSON:\n%s\nwant:\n%s", b, want)
	}
	// No rows: an empty list, not null.
	b, _ = json.Marshal(NewReport(nil, now, 7))
	if !strings.Contains(string(b), `"rows":[]`) || !strings.Contains(string(b), `"counts":{}`) {
		t.Errorf("empty report: %s", b)
	}
}

// TestReportCleansHostileMetadata: whatever a token with the old policy (or
// a user's own) wrote into custom_metadata, the report holds no control
// character, escape sequence, newline or space, and nothing longer than the
// writer's 64-byte cap.
func TestReportCleansHostileMetadata(t *testing.T) {
	hostile := []string{
		"ws\x1b[2J\x1b[31mOK\x1b[0m",         // clear screen, colours
		"ws\x1b]0;pwned title\x07-01",        // OSC window title
		"ws\nFAIL     root   fake-row",       // a newline faking a row
		"ws        OK       alice   in 27 d", // spaces faking columns
		"ws\u202eKO\u200b",                   // bidi override, zero-width space
		"ws\u009b31m\u0085x\x7f\x00",         // C1 CSI, NEL, DEL, NUL
		strings.Repeat("é", 200),             // longer than the cap
		"ws\xff\xfe",                         // not UTF-8
	}
	for _, h := range hostile {
		rows := []Row{{User: "al\x1b[1mice", HostID: h, Health: Health{Label: h, Status: "OK\n" + h, Version: h, Doc: h}}}
		rep := NewReport(rows, now, 7)
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		r := rep.Rows[0]
		for _, f := range []string{r.User, r.HostID, r.HostLabel, r.Status, r.AgentVersion, r.Doc} {
			if len(f) > MaxField || strings.ContainsFunc(f, func(c rune) bool {
				return c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) || unicode.IsSpace(c) || unicode.Is(unicode.Cf, c) || c == utf8.RuneError
			}) {
				t.Errorf("CleanField(%q) kept %q (%d bytes)", h, f, len(f))
			}
		}
		if strings.Contains(string(b), `\u001b`) || strings.Contains(string(b), `\n`) {
			t.Errorf("report JSON of %q holds an escape or a newline: %s", h, b)
		}
	}
	if got := CleanField("ws\x1b[2J\x1b[31mOK\x1b[0m"); got != "wsOK" {
		t.Errorf("CleanField(escape sequences) = %q; want %q", got, "wsOK")
	}
	if got := CleanField("gpu box 3"); got != "gpu_box_3" {
		t.Errorf("CleanField(spaces) = %q; want %q", got, "gpu_box_3")
	}
}

// TestReportOldPolicies: users whose agents report policy=old, and those an
// admin's token found old, are named once each; nothing known is unknown.
func TestReportOldPolicies(t *testing.T) {
	h, err := ParseHealth(Health{Status: "OK", Policy: "old"}.Encode())
	if err != nil || h.Policy != "old" {
		t.Fatalf("policy=old round trip: %+v, %v", h, err)
	}
	rows := []Row{{User: "bob", HostID: "h1", Health: h}, {User: "bob", HostID: "h2", Health: h}, {User: "carol", HostID: "h1", Health: Health{Status: "OK"}}}
	rep := NewReport(rows, now, 7)
	if rep.ReaderPolicy != "unknown" || rep.UserPolicies != "unknown" || rep.OldPolicyUsers != nil {
		t.Errorf("before any check: %q %q %v", rep.ReaderPolicy, rep.UserPolicies, rep.OldPolicyUsers)
	}
	rep.SetPolicies(Policies{Reader: "current", Users: "unknown", OldUsers: []string{"alice"}})
	if rep.UserPolicies != "old" || strings.Join(rep.OldPolicyUsers, ",") != "alice,bob" || rep.ReaderPolicy != "current" {
		t.Errorf("SetPolicies: %q %v %q", rep.UserPolicies, rep.OldPolicyUsers, rep.ReaderPolicy)
	}
}
