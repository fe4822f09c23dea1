package printable

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"2.1.332 (Claude Code)", "2.1.332 (Claude Code)"},
		{"", ""},
		{"naïve ✓ 日本", "naïve ✓ 日本"},
		{"\x1b[31mred\x1b[0m", "red"},
		{"\x1b[2J\x1b[1;1Hcleared", "cleared"},
		{"\x1b]0;owned title\x07after", "after"},
		{"\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"},
		{"\x1bP+q\x1b\\x", "x"},
		{"\x1b7saved\x1b8", "saved"},
		{"\x1b(Bx", "x"},
		{"a\nb\r\nc\td", "a b  c d"},
		{"bell\x07 bs\x08 del\x7f nul\x00", "bell bs del nul"},
		{"c1 csi \u009b31m x", "c1 csi  x"},
		{"c1 osc \u009d0;t\u009c y", "c1 osc  y"},
		{"bidi \u202eevil\u202c", "bidi evil"},
		{"line\u2028sep", "line sep"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{"trailing esc \x1b", "trailing esc "},
		{"unterminated \x1b]0;title", "unterminated "},
		{"csi cut by newline \x1b[12\nnext", "csi cut by newline  next"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzString: whatever comes in, nothing a terminal acts on comes out.
func FuzzString(f *testing.F) {
	for _, s := range []string{"\x1b[31m", "\u009b1m", "\x1b]0;x\x07", "a\nb", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if strings.ContainsFunc(out, func(r rune) bool { return control(r) || r == 0x2028 || r == 0x2029 }) {
			t.Fatalf("String(%q) = %q: a control character is left", s, out)
		}
		if String(out) != out {
			t.Fatalf("String(%q) = %q is not stable", s, out)
		}
	})
}

func TestLineWriter(t *testing.T) {
	var out strings.Builder
	w := NewLineWriter(&out)
	for _, p := range []string{"one \x1b[31mred", "\x1b[0m\ntwo\x07\n", "\x1b]0;t", "itle\x07three"} {
		w.Write([]byte(p))
	}
	w.Close()
	if want := "one red\ntwo\nthree\n"; out.String() != want {
		t.Errorf("LineWriter wrote %q; want %q", out.String(), want)
	}
}
