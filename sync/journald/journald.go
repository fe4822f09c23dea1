// Package journald writes entries to the systemd journal in its native
// protocol: one datagram of fields, a value with a line break sent whole
// (length-prefixed), never flattened. The system's journal is reached through
// go-systemd's journal package; another socket (CLAUDE_AUTH_JOURNAL_SOCKET,
// a test's stand-in) gets the same protocol from Send itself, since
// go-systemd's socket path is fixed at build time.
package journald

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
)

// SystemSocket is where journald listens for native entries.
const SystemSocket = "/run/systemd/journal/socket"

// Priority is the entry's syslog priority.
type Priority = journal.Priority

const (
	Err     = journal.PriErr
	Warning = journal.PriWarning
	Info    = journal.PriInfo
)

// Send writes one entry, message and fields (upper-case names) to the
// journal listening at socket.
func Send(socket, message string, prio Priority, fields map[string]string) error {
	if filepath.Clean(socket) == SystemSocket {
		return journal.Send(message, prio, fields)
	}
	conn, err := net.DialTimeout("unixgram", socket, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = conn.Write(Encode(message, prio, fields))
	return err
}

// Encode is the datagram Send writes to a socket other than the system's:
// PRIORITY, MESSAGE, then the fields by name.
func Encode(message string, prio Priority, fields map[string]string) []byte {
	var b bytes.Buffer
	field(&b, "PRIORITY", strconv.Itoa(int(prio)))
	field(&b, "MESSAGE", message)
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		field(&b, k, fields[k])
	}
	return b.Bytes()
}

// field writes NAME=value and a newline; a value with a newline in it as
// NAME, a newline, its length (64-bit little-endian), the value and a newline.
func field(b *bytes.Buffer, name, value string) {
	if !strings.Contains(value, "\n") {
		fmt.Fprintf(b, "%s=%s\n", name, value)
		return
	}
	b.WriteString(name)
	b.WriteByte('\n')
	_ = binary.Write(b, binary.LittleEndian, uint64(len(value)))
	b.WriteString(value)
	b.WriteByte('\n')
}
