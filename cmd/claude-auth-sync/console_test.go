package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"golang.org/x/sys/unix"
)

// openPTY gives a pseudo-terminal: the side a program writes to (a terminal
// for isTerminal) and the side to read what it wrote.
func openPTY(t *testing.T) (term, reader *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no pseudo-terminals here:", err)
	}
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		t.Skip("unlockpt:", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		t.Skip("ptsname:", err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		t.Skip("open pts:", err)
	}
	t.Cleanup(func() { pts.Close(); ptmx.Close() })
	return pts, ptmx
}

func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() { s, _ := r.ReadString('\n'); ch <- s }()
	select {
	case s := <-ch:
		return strings.TrimRight(s, "\r\n")
	case <-time.After(5 * time.Second):
		t.Fatal("no console line")
	}
	return ""
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// One voice: a status event and a diagnostic each say their word once, after
// a short local time, on a terminal (in colour unless NO_COLOR is set) and on
// a pipe (never in colour).
func TestConsoleOneVoice(t *testing.T) {
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pipeR.Close(); pipeW.Close() })
	for _, tt := range []struct {
		name    string
		noColor string
		tty     bool
		color   bool
	}{
		{"terminal", "", true, true},
		{"terminal NO_COLOR=1", "1", true, false},
		{"terminal NO_COLOR=false", "false", true, false}, // any non-empty value
		{"pipe", "", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w, r := pipeW, pipeR
			if tt.tty {
				w, r = openPTY(t)
			}
			getenv := func(k string) string {
				if k == "NO_COLOR" {
					return tt.noColor
				}
				return ""
			}
			console, isJournal := newConsoleEnv(w, false, false, "alice", getenv)
			if isJournal {
				t.Fatal("newConsoleEnv says the journal")
			}
			log := &eventlog.EventLog{User: "alice", Console: console}
			br := bufio.NewReader(r)
			for _, c := range []struct {
				emit func()
				want string
			}{
				{func() { log.Event(eventlog.WARN, "no credentials file at /h/.claude") }, `^\d\d:\d\d:\d\d WARN no credentials file at /h/\.claude$`},
				{func() { log.Event(eventlog.OK, "backed up (v3)") }, `^\d\d:\d\d:\d\d OK backed up \(v3\)$`},
				{func() { log.Event(eventlog.FAIL, "login dead") }, `^\d\d:\d\d:\d\d FAIL login dead$`},
				{func() { log.Event(eventlog.RECOVERED, "restored") }, `^\d\d:\d\d:\d\d RECOVERED restored$`},
				{func() { console.Warn("cannot write sync.log", "path", "/x") }, `^\d\d:\d\d:\d\d WARN cannot write sync\.log path=/x$`},
				{func() { console.Info("agent started") }, `^\d\d:\d\d:\d\d INFO agent started$`},
			} {
				c.emit()
				line := readLine(t, br)
				if got := ansi.MatchString(line); got != tt.color {
					t.Errorf("line %q: colour = %v; want %v", line, got, tt.color)
				}
				plain := ansi.ReplaceAllString(line, "")
				if !regexp.MustCompile(c.want).MatchString(plain) {
					t.Errorf("console line = %q; want it to match %s", plain, c.want)
				}
				if strings.Contains(plain, "level=") || strings.Contains(plain, "WRN") || strings.Contains(plain, "INF ") {
					t.Errorf("console line %q has a second level word", plain)
				}
			}
		})
	}
}
