package lock

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The agent lock outlives its state dir: once the dir is deleted, a new
// flock can be had there, and the agent is still found by its socket.
func TestTryAgentSurvivesStateDirRemoval(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	key := "alice@" + t.Name()
	first, err := TryAgent(dir, key)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Unlock()
	if _, err := TryAgent(dir, key); !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "(agent.lock, pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("second TryAgent with the dir in place: %v; want ErrHeld naming our pid", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_, err = TryAgent(dir, key)
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "(agent.lock, pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("TryAgent after the state dir was removed: %v; want ErrHeld naming our pid", err)
	}
	// The refused try left the new flock free.
	if held, _ := Held(dir, Agent); held {
		t.Error("a refused TryAgent kept its flock")
	}

	// Another key (another user or host) is another agent.
	other, err := TryAgent(filepath.Join(t.TempDir(), "state"), "bob@"+t.Name())
	if err != nil {
		t.Fatalf("another key: %v", err)
	}
	other.Unlock()

	// Released, the lock can be had again, and Unlock twice is harmless.
	first.Unlock()
	first.Unlock()
	again, err := TryAgent(dir, key)
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	again.Unlock()
}

// Sockets under the prefix that nobody listens on (bound only, or datagram)
// are not an agent.
func TestTryAgentIgnoresNonListeners(t *testing.T) {
	key := "carol@" + t.Name()
	prefix := agentPrefix(os.Getuid(), key)
	bound, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(bound)
	if err := syscall.Bind(bound, &syscall.SockaddrUnix{Name: prefix + "bound-only"}); err != nil {
		t.Fatal(err)
	}
	dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: prefix + "datagram", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dg.Close()
	l, err := TryAgent(filepath.Join(t.TempDir(), "state"), key)
	if err != nil {
		t.Fatalf("TryAgent beside non-listening sockets: %v", err)
	}
	l.Unlock()
}

// A listener of our own uid under the prefix, whatever its name, is an agent.
func TestTryAgentFindsAnyOwnListenerUnderPrefix(t *testing.T) {
	key := "dave@" + t.Name()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: agentPrefix(os.Getuid(), key) + "x", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, err := TryAgent(filepath.Join(t.TempDir(), "state"), key); !errors.Is(err, ErrHeld) {
		t.Fatalf("TryAgent beside our own listener: %v; want ErrHeld", err)
	}
}
