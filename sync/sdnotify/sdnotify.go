// Package sdnotify speaks systemd's notify protocol (READY=1, WATCHDOG=1,
// STATUS=…, STOPPING=1) over $NOTIFY_SOCKET, without a library.
package sdnotify

import (
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notifier sends to the socket systemd gave us; with none, every call is a no-op.
type Notifier struct {
	addr *net.UnixAddr
}

// FromEnv reads $NOTIFY_SOCKET.
func FromEnv() *Notifier {
	s := os.Getenv("NOTIFY_SOCKET")
	if s == "" {
		return &Notifier{}
	}
	if strings.HasPrefix(s, "@") {
		s = "\x00" + s[1:] // abstract namespace
	}
	return &Notifier{addr: &net.UnixAddr{Name: s, Net: "unixgram"}}
}

// Enabled says whether systemd listens.
func (n *Notifier) Enabled() bool { return n != nil && n.addr != nil }

// Send sends one notification ("READY=1", "STATUS=…"); newlines separate fields.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = conn.Write([]byte(state))
	return err
}

// WatchdogInterval is how often to ping: half of $WATCHDOG_USEC, or 0 when
// systemd set no watchdog for this process.
func WatchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return 0
	}
	return time.Duration(us) * time.Microsecond / 2
}
