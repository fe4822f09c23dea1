package eventlog

import (
	"io"
	"log/slog"
	"time"

	"github.com/lmittmann/tint"

	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
)

// Status events reach the console through slog at these levels, so a handler
// can print the status word itself instead of a level beside it. They sit
// between slog's: OK, SKIP and RECOVERED above INFO (hidden by --quiet like
// it), WARN at WARN, FAIL just above ERROR.
const (
	levelOK        = slog.LevelInfo + 1
	levelSkip      = slog.LevelInfo + 2
	levelRecovered = slog.LevelInfo + 3
	levelWarn      = slog.LevelWarn
	levelFail      = slog.LevelError + 1
)

// Level is the slog level a status event is logged at on the console.
func (s Status) Level() slog.Level {
	switch s {
	case OK:
		return levelOK
	case SKIP:
		return levelSkip
	case RECOVERED:
		return levelRecovered
	case WARN:
		return levelWarn
	case FAIL:
		return levelFail
	}
	return slog.LevelInfo
}

// levelWord is the one word a console line carries for a level: the status
// word for status events, INFO/DEBUG/WARN/ERROR for diagnostics, and its ANSI
// colour (256-colour palette index).
func levelWord(l slog.Level) (string, uint8) {
	switch {
	case l == levelOK:
		return string(OK), 10
	case l == levelSkip:
		return string(SKIP), 12
	case l == levelRecovered:
		return string(RECOVERED), 10
	case l == levelFail:
		return string(FAIL), 9
	case l >= slog.LevelError:
		return "ERROR", 9
	case l >= slog.LevelWarn:
		return "WARN", 11
	case l >= slog.LevelInfo:
		return "INFO", 14
	}
	return "DEBUG", 8
}

// NewConsoleHandler is the console of a person at a terminal or of a pipe:
// "<local time> <WORD> <message> k=v…", WORD the status word of an event or
// the level of a diagnostic, written once. color adds ANSI colour (a
// terminal that did not set NO_COLOR).
func NewConsoleHandler(w io.Writer, level slog.Leveler, color bool) slog.Handler {
	return tint.NewHandler(w, &tint.Options{
		Level:      level,
		TimeFormat: time.TimeOnly,
		NoColor:    !color,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key != slog.LevelKey || len(groups) != 0 {
				return printableAttr(a)
			}
			l, ok := a.Value.Any().(slog.Level)
			if !ok {
				return a
			}
			word, c := levelWord(l)
			return tint.Attr(c, slog.String(slog.LevelKey, word))
		},
	})
}

// printableAttr is a with its text made printable: messages and values
// quote paths, errors and output from the user's side.
func printableAttr(a slog.Attr) slog.Attr {
	switch v := a.Value.Resolve(); {
	case v.Kind() == slog.KindString:
		a.Value = slog.StringValue(printable.String(v.String()))
	case v.Kind() == slog.KindAny:
		if err, ok := v.Any().(error); ok {
			a.Value = slog.StringValue(printable.String(err.Error()))
		}
	}
	return a
}
