package e2e_test

import (
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The agent keeps systemd's notify contract over a real socket: READY=1 once
// watching, WATCHDOG=1 pings at half of WATCHDOG_USEC, a full pass on SIGHUP,
// STOPPING=1 on SIGTERM.
func TestAgentSystemdNotify(t *testing.T) {
	w := newWorld(t)
	w.login()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:n]))
			mu.Unlock()
		}
	}()
	count := func(prefix string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range got {
			if strings.Contains(m, prefix) {
				n++
			}
		}
		return n
	}
	a := w.startAgent([]string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"})
	eventually(t, 30*time.Second, "READY=1", func() bool { return count("READY=1") == 1 })
	eventually(t, 30*time.Second, "watchdog pings", func() bool { return count("WATCHDOG=1") >= 3 })
	passes := func() int {
		return len(regexp.MustCompile(`(?m)^\S+ OK inference check passed`).FindAllString(w.syncLog(), -1))
	}
	eventually(t, 45*time.Second, "start-up pass", func() bool { return passes() >= 1 })
	before := passes()
	a.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 45*time.Second, "a pass on SIGHUP", func() bool { return passes() > before })
	a.stop()
	if count("STOPPING=1") != 1 {
		t.Errorf("STOPPING=1 sent %d times; want 1", count("STOPPING=1"))
	}
	if count("STATUS=") < 1 {
		t.Errorf("no STATUS= text sent")
	}
}
