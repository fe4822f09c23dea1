package eventlog

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/printable"
)

// JournalLineHandler is the console when stderr is the journal (under
// systemd): each diagnostic becomes one line "user=<user> <message> k=v…",
// led by the syslog priority prefix journald reads ("<4>" = warning), so the
// journal's every line from an agent says whose agent wrote it, as the status
// events do. Status events themselves are not written here (EventLog sends
// them natively).
type JournalLineHandler struct {
	w     io.Writer
	mu    *sync.Mutex
	user  string
	level slog.Leveler
	attrs []slog.Attr
	group string
}

// NewJournalLineHandler writes lines for user at or above level to w.
func NewJournalLineHandler(w io.Writer, user string, level slog.Leveler) *JournalLineHandler {
	return &JournalLineHandler{w: w, mu: &sync.Mutex{}, user: user, level: level}
}

func (h *JournalLineHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *JournalLineHandler) Handle(_ context.Context, r slog.Record) error {
	prio := "<6>"
	switch {
	case r.Level >= slog.LevelError:
		prio = "<3>"
	case r.Level >= slog.LevelWarn:
		prio = "<4>"
	case r.Level < slog.LevelInfo:
		prio = "<7>"
	}
	var b strings.Builder
	b.WriteString(prio)
	b.WriteString("user=")
	b.WriteString(h.user)
	b.WriteByte(' ')
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		writeAttr(&b, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	line := printable.String(check.Mask(b.String())) + "\n"
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line)
	return err
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			writeAttr(b, key, g)
		}
		return
	}
	v := a.Value.String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteByte(' ')
	b.WriteString(key)
	b.WriteByte('=')
	b.WriteString(v)
}

func (h *JournalLineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	if h.group != "" {
		for i := len(h.attrs); i < len(n.attrs); i++ {
			n.attrs[i].Key = h.group + "." + n.attrs[i].Key
		}
	}
	return &n
}

func (h *JournalLineHandler) WithGroup(name string) slog.Handler {
	n := *h
	if h.group != "" {
		name = h.group + "." + name
	}
	n.group = name
	return &n
}
