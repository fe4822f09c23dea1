// Package eventlog is where a user's status events go: sync.log, the journal
// (a line the fleet's alerting matches on, with its own fields) and the
// console, whose handlers (a person's terminal, the journal's line shape)
// are here too.
package eventlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/journald"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
)

// Status is the word the fleet's alerting matches on.
type Status string

const (
	OK        Status = "OK"
	FAIL      Status = "FAIL"
	WARN      Status = "WARN"
	SKIP      Status = "SKIP"
	RECOVERED Status = "RECOVERED"
)

// JournalIdentifier is the SYSLOG_IDENTIFIER of our journal lines.
const JournalIdentifier = "claude-auth-sync"

// EventLog writes each status event to the user's private sync.log as
// "<RFC3339 time> <STATUS> <message>", to the journal as
// "user=<user> <STATUS> <message>" (identifier claude-auth-sync), and to the
// console through slog.
type EventLog struct {
	User          string
	LogFile       string // sync.log; "" to skip
	JournalSocket string // journald's native socket; "" to skip
	Console       *slog.Logger
	// ConsoleIsJournal: stderr already goes to the journal (under systemd), so
	// events are not printed there a second time.
	ConsoleIsJournal bool
	Clock            clock.Clock // nil: the wall clock
	// AfterEvent, when set, runs after each event is recorded (outside the
	// log's lock): the metrics file counts events through it.
	AfterEvent func(Status)
	// OnEvent, when set, runs after AfterEvent with the line's status and
	// message as written: the agent's live state (agent.json, systemd's
	// STATUS=) and its health for the fleet say what the journal says.
	OnEvent func(Status, string)

	mu sync.Mutex
}

// SetOnEvent makes f the OnEvent function and returns a function that puts
// the previous one back.
func (l *EventLog) SetOnEvent(f func(Status, string)) (restore func()) {
	return swapHook(&l.mu, &l.OnEvent, f)
}

// swapHook sets *p to f under mu and returns a function that puts the
// previous value back.
func swapHook[T any](mu *sync.Mutex, p *T, f T) (restore func()) {
	mu.Lock()
	prev := *p
	*p = f
	mu.Unlock()
	return func() {
		mu.Lock()
		*p = prev
		mu.Unlock()
	}
}

// SetAfterEvent makes f the function run after each event (the agent's
// metrics writer counts events through it) and returns a function that puts
// the previous one back.
func (l *EventLog) SetAfterEvent(f func(Status)) (restore func()) {
	return swapHook(&l.mu, &l.AfterEvent, f)
}

// Event records one status line. The message is masked for token-shaped text as
// a last line of defence; callers never put secrets in it to begin with.
func (l *EventLog) Event(st Status, format string, args ...any) {
	// One line without control characters: messages quote paths, errors
	// and output from the user's side.
	msg := printable.String(check.Mask(fmt.Sprintf(format, args...)))
	now := time.Now
	if l.Clock != nil {
		now = l.Clock.Now
	}
	var after func(Status)
	var onEvent func(Status, string)
	defer func() {
		if after != nil {
			after(st) // deferred first, so it runs after the unlock
		}
		if onEvent != nil {
			onEvent(st, msg)
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	after, onEvent = l.AfterEvent, l.OnEvent
	if l.LogFile != "" {
		if err := appendLine(l.LogFile, fmt.Sprintf("%s %s %s\n", now().Format(time.RFC3339), st, msg)); err != nil && l.Console != nil {
			l.Console.Warn("cannot write sync.log", "path", l.LogFile, "err", err)
		}
	}
	if l.JournalSocket != "" {
		_ = sendJournal(l.JournalSocket, fmt.Sprintf("user=%s %s %s", l.User, st, msg), st, l.User)
	}
	if l.Console != nil && !l.ConsoleIsJournal {
		// The console's handler prints the status word for the level (see
		// NewConsoleHandler): the word is not repeated in the message.
		l.Console.Log(context.Background(), st.Level(), msg)
	}
}

// Echo repeats a status line another process of this user already recorded
// (the agent's pass, asked for by the unit claude-auth-sync@<user>.service):
// to the journal from this process, so `systemctl status` of the unit that
// asked shows how it ended, and to the console; not to sync.log or the
// metrics a second time.
func (l *EventLog) Echo(st Status, msg string) {
	msg = strings.ReplaceAll(check.Mask(msg), "\n", " ")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.JournalSocket != "" {
		_ = sendJournal(l.JournalSocket, fmt.Sprintf("user=%s %s %s", l.User, st, msg), st, l.User)
	}
	if l.Console != nil && !l.ConsoleIsJournal {
		l.Console.Log(context.Background(), st.Level(), msg)
	}
}

func appendLine(path, line string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = io.WriteString(f, line)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sendJournal sends one status line to the journal with its fields.
func sendJournal(socket, message string, st Status, user string) error {
	prio := journald.Info
	switch st {
	case FAIL:
		prio = journald.Err
	case WARN:
		prio = journald.Warning
	}
	return journald.Send(socket, message, prio, map[string]string{
		"SYSLOG_IDENTIFIER": JournalIdentifier, "CLAUDE_AUTH_STATUS": string(st), "CLAUDE_AUTH_USER": user})
}
