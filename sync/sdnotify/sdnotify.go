// Package sdnotify tells systemd how the service is (READY=1, WATCHDOG=1,
// STATUS=…, STOPPING=1), through go-systemd's daemon package, over
// $NOTIFY_SOCKET.
package sdnotify

import (
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends to the socket systemd gave us; with none, every call is a no-op.
type Notifier struct {
	enabled bool
}

// FromEnv reads $NOTIFY_SOCKET.
func FromEnv() *Notifier {
	return &Notifier{enabled: os.Getenv("NOTIFY_SOCKET") != ""}
}

// Enabled says whether systemd listens.
func (n *Notifier) Enabled() bool { return n != nil && n.enabled }

// Send sends one notification ("READY=1", "STATUS=…"); newlines separate fields.
func (n *Notifier) Send(state string) error {
	if !n.Enabled() {
		return nil
	}
	_, err := daemon.SdNotify(false, state)
	return err
}

// WatchdogInterval is how often to ping: half of $WATCHDOG_USEC, or 0 when
// systemd set no watchdog for this process.
func WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}
