package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A socket listening as systemd's does gets each notification whole.
func TestSendReachesNotifySocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Skip("no unixgram sockets here:", err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	n := FromEnv()
	if !n.Enabled() {
		t.Fatal("not enabled with NOTIFY_SOCKET set")
	}
	for _, state := range []string{"READY=1\nSTATUS=OK agent started", "WATCHDOG=1", "STOPPING=1"} {
		if err := n.Send(state); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("nothing received for %q: %v", state, err)
		}
		if got := string(buf[:k]); got != state {
			t.Errorf("received %q; want %q", got, state)
		}
	}
}

func TestWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := FromEnv()
	if n.Enabled() {
		t.Error("enabled without NOTIFY_SOCKET")
	}
	if err := n.Send("READY=1"); err != nil {
		t.Error(err)
	}
	var none *Notifier
	if none.Enabled() || none.Send("READY=1") != nil {
		t.Error("a nil Notifier is not a no-op")
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"20000000", "", 10 * time.Second},
		{"20000000", me, 10 * time.Second},
		{"20000000", "1", 0},
		{"-5", "", 0},
		{"soon", "", 0},
	} {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		if got := WatchdogInterval(); got != tc.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %s; want %s", tc.usec, tc.pid, got, tc.want)
		}
	}
}
