// Package printable makes text that came from a user's side (a claude CLI's
// version and error output, labels, file names, file contents, a child's
// stderr) safe to put on a terminal or in a log line: escape sequences and
// control characters are removed, so nothing a user wrote can move a cursor,
// retitle a window, fake a line or type into root's shell.
package printable

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"unicode/utf8"
)

// String is s as one line without escape sequences or control characters:
// ANSI/ECMA-48 sequences (CSI, OSC, DCS and the like, by ESC or by their C1
// byte) are dropped whole, tabs and line breaks become a space, every other
// C0, DEL and C1 character and the bidirectional overrides (which reorder
// what a reader sees) are dropped, and invalid UTF-8 becomes U+FFFD.
func String(s string) string {
	if clean(s) {
		return s // the common case: nothing to copy
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteRune(utf8.RuneError)
		case r == 0x1b: // ESC: the sequence it starts goes with it
			n = escapeLen(s[i:])
		case r == 0x9b || r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f:
			// C1 CSI, OSC, DCS, SOS, PM, APC: as ESC [, ESC ] …
			n = sequenceLen(s[i:], n, r == 0x9b)
		case r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f' || r == 0x85 || r == 0x2028 || r == 0x2029:
			b.WriteByte(' ')
		case control(r):
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// clean: s holds nothing String would change.
func clean(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || control(r) || r == 0x2028 || r == 0x2029 {
			return false
		}
	}
	return true
}

// control: C0, DEL, C1, and the bidirectional embeddings, overrides and
// isolates.
func control(r rune) bool {
	return r < 0x20 || r >= 0x7f && r <= 0x9f || r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 ||
		r == 0x200e || r == 0x200f || r == 0x061c
}

// escapeLen is the length of the escape sequence at the start of s (s[0] is
// ESC), so much of it as s holds.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch s[1] {
	case '[':
		return sequenceLen(s, 2, true)
	case ']', 'P', 'X', '^', '_':
		return sequenceLen(s, 2, false)
	}
	// ESC, intermediates (0x20-0x2f), one final byte.
	i := 1
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

// sequenceLen is the length of a control sequence whose introducer takes
// s[:start]: a CSI ends at its final byte (0x40-0x7e); a string (OSC, DCS,
// SOS, PM, APC) at BEL, ST (ESC \ or its C1 byte) or a line break. An
// unterminated one runs to the end of s.
func sequenceLen(s string, start int, csi bool) int {
	i := start
	for i < len(s) {
		c := s[i]
		if csi {
			if c >= 0x40 && c <= 0x7e {
				return i + 1
			}
			if c < 0x20 || c >= 0x7f {
				return i // not part of a CSI: the caller looks at it
			}
			i++
			continue
		}
		switch {
		case c == 0x07 || c == '\n':
			return i + 1
		case c == 0x1b && i+1 < len(s) && s[i+1] == '\\':
			return i + 2
		case c == 0xc2 && i+1 < len(s) && s[i+1] == 0x9c: // ST as UTF-8 U+009C
			return i + 2
		}
		i++
	}
	return i
}

// LineWriter passes what is written to it on line by line, each line made
// printable by String: for another program's output (a child's stderr)
// on its way to a terminal or the journal.
type LineWriter struct {
	w       io.Writer
	mu      sync.Mutex
	partial []byte
}

// NewLineWriter writes to w.
func NewLineWriter(w io.Writer) *LineWriter { return &LineWriter{w: w} }

// maxLine cuts a line that never ends.
const maxLine = 8 << 10

func (l *LineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 && len(l.partial) < maxLine {
			return len(p), nil
		}
		if i < 0 {
			i = len(l.partial)
		}
		line := String(string(l.partial[:i]))
		l.partial = l.partial[min(i+1, len(l.partial)):]
		if _, err := io.WriteString(l.w, line+"\n"); err != nil {
			return len(p), err
		}
	}
}

// Close writes what is left of an unfinished line.
func (l *LineWriter) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) == 0 {
		return nil
	}
	line := String(string(l.partial))
	l.partial = nil
	_, err := io.WriteString(l.w, line+"\n")
	return err
}

// Short is String(s) without surrounding spaces, cut to at most n bytes
// (on a character boundary, "…" added when cut).
func Short(s string, n int) string {
	s = strings.TrimSpace(String(s))
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
