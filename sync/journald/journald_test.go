package journald

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// A local socket listening as journald does gets every field, a message of
// several lines whole.
func TestSendKeepsFieldsAndLines(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Skip("no unixgram sockets here:", err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		msg  string
		prio Priority
	}{
		{"user=a OK backed up (v3)", Info},
		{"first line\nsecond line\n", Err},
		{"a=b=c\n\nWARN", Warning},
	} {
		fields := map[string]string{"SYSLOG_IDENTIFIER": "claude-auth-sync", "CLAUDE_AUTH_USER": "a", "CLAUDE_AUTH_NOTE": "x\ny"}
		if err := Send(sock, tc.msg, tc.prio, fields); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 65536)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no datagram for %q: %v", tc.msg, err)
		}
		got, err := decode(buf[:n])
		if err != nil {
			t.Fatalf("%q: %v", buf[:n], err)
		}
		want := map[string]string{"MESSAGE": tc.msg, "PRIORITY": string(rune('0' + tc.prio)),
			"SYSLOG_IDENTIFIER": "claude-auth-sync", "CLAUDE_AUTH_USER": "a", "CLAUDE_AUTH_NOTE": "x\ny"}
		if len(got) != len(want) {
			t.Errorf("fields %q; want %q", got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q; want %q", k, got[k], v)
			}
		}
	}
}

// A value with a line break is length-prefixed, as journald's protocol says.
func TestEncodeMultiLine(t *testing.T) {
	got := string(Encode("a\nb", Info, nil))
	want := "PRIORITY=6\nMESSAGE\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n"
	if got != want {
		t.Errorf("Encode = %q; want %q", got, want)
	}
}

func TestDecodeRefusesTruncated(t *testing.T) {
	for _, d := range []string{"MESSAGE=a", "MESSAGE\n\x05\x00\x00\x00\x00\x00\x00\x00ab\n", "MESSAGE\n\x01"} {
		if _, err := decode([]byte(d)); err == nil {
			t.Errorf("decode(%q) accepted", d)
		}
	}
}

// decode parses a datagram in the native protocol into its fields, as
// journald does.
func decode(d []byte) (map[string]string, error) {
	out := map[string]string{}
	for len(d) > 0 {
		nl := bytes.IndexByte(d, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("journal entry: a field without its newline")
		}
		line := d[:nl]
		d = d[nl+1:]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			continue
		}
		if len(d) < 8 {
			return nil, fmt.Errorf("journal entry: field %q without its length", line)
		}
		n := binary.LittleEndian.Uint64(d)
		d = d[8:]
		if n >= uint64(len(d)) || d[n] != '\n' {
			return nil, fmt.Errorf("journal entry: field %q longer than the entry", line)
		}
		out[string(line)] = string(d[:n])
		d = d[n+1:]
	}
	return out, nil
}
