package eventlog

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
)

func TestEventLog(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Skip("no unixgram sockets here:", err)
	}
	defer conn.Close()

	var console bytes.Buffer
	logFile := filepath.Join(dir, "state", "sync.log")
	l := &EventLog{
		User: "first.last", LogFile: logFile, JournalSocket: sock,
		Console: slog.New(NewConsoleHandler(&console, slog.LevelInfo, false)),
		Clock:   clock.WithNow(func() time.Time { return testNow }),
	}
	tests := []struct {
		st      Status
		msg     string
		want    string // message as logged
		prio    string
		console string
	}{
		{OK, "backed up (v3)", "backed up (v3)", "6", " OK backed up (v3)\n"},
		{FAIL, "login dead: token " + access1 + "\nsecond line", "login dead: token [redacted] second line", "3", " FAIL login dead: token [redacted] second line\n"},
		{WARN, "backup pending", "backup pending", "4", " WARN backup pending\n"},
		{RECOVERED, "restored", "restored", "6", " RECOVERED restored\n"},
		{SKIP, "another pass", "another pass", "6", " SKIP another pass\n"},
	}
	var wantLog strings.Builder
	for _, tt := range tests {
		console.Reset()
		l.Event(tt.st, "%s", tt.msg)
		wantLog.WriteString("2026-03-01T12:00:00Z " + string(tt.st) + " " + tt.want + "\n")

		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no journal datagram for %s: %v", tt.st, err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			fields[k] = v
		}
		wantFields := map[string]string{
			"MESSAGE":            "user=first.last " + string(tt.st) + " " + tt.want,
			"SYSLOG_IDENTIFIER":  "claude-auth-sync",
			"PRIORITY":           tt.prio,
			"CLAUDE_AUTH_STATUS": string(tt.st),
			"CLAUDE_AUTH_USER":   "first.last",
		}
		for k, v := range wantFields {
			if fields[k] != v {
				t.Errorf("journal %s for %s = %q; want %q", k, tt.st, fields[k], v)
			}
		}
		// "<hh:mm:ss> <STATUS> <message>": the status word once, no level beside it.
		if c := console.String(); !strings.HasSuffix(c, tt.console) || len(c) != len("15:04:05")+len(tt.console) || strings.Count(c, string(tt.st)) != 1 {
			t.Errorf("console for %s = %q; want %s", tt.st, console.String(), tt.console)
		}
		if strings.Contains(console.String(), access1) {
			t.Errorf("console has the token: %q", console.String())
		}
	}
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != wantLog.String() {
		t.Errorf("sync.log = %q; want %q", b, wantLog.String())
	}
	if fi, _ := os.Stat(logFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("sync.log mode = %v; want 0600", fi.Mode().Perm())
	}

	// Under systemd the console is the journal already: no second copy.
	console.Reset()
	l.ConsoleIsJournal = true
	l.JournalSocket = ""
	l.Event(OK, "quiet")
	if console.Len() != 0 {
		t.Errorf("console with ConsoleIsJournal = %q; want nothing", console.String())
	}
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const access1 = "sk-ant-oat01-access1ACCESSaccessACCESS0001"
