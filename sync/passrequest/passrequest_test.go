package passrequest

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const bound = 10 * time.Second

// serve listens in dir and answers each request with OK, counting passes and
// refusals, until the test ends.
func serve(t *testing.T, dir string) (passes, refusals *atomic.Int32, refusedUID *atomic.Int32) {
	t.Helper()
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	passes, refusals, refusedUID = new(atomic.Int32), new(atomic.Int32), new(atomic.Int32)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ln.Serve(ctx, func(_ context.Context, k Kind) Answer {
			passes.Add(1)
			return Answer{Status: "OK", Code: 0, Message: "pass " + string(k)}
		}, func(uid int, why string) {
			refusals.Add(1)
			refusedUID.Store(int32(uid))
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return passes, refusals, refusedUID
}

func privateDir(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestAskAnswersAndNoAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	for _, name := range []string{"state", strings.Repeat("a-deep-home/", 12) + "state"} {
		dir := privateDir(t, name)
		if _, err := Ask(ctx, dir, Full); !errors.Is(err, ErrNoAgent) {
			t.Errorf("Ask with no socket = %v; want ErrNoAgent", err)
		}
		passes, _, _ := serve(t, dir)
		for _, k := range []Kind{Full, Scheduled} {
			a, err := Ask(ctx, dir, k)
			if err != nil || a.Status != "OK" || a.Message != "pass "+string(k) || a.PID != os.Getpid() {
				t.Errorf("Ask(%s) in a %d-byte dir = %+v, %v; want OK from pid %d", k, len(dir), a, err, os.Getpid())
			}
		}
		if passes.Load() != 2 {
			t.Errorf("passes = %d; want 2", passes.Load())
		}
		fi, err := os.Lstat(filepath.Join(dir, SocketName))
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("socket = %v, %v; want a 0600 socket", fi.Mode(), err)
		}
	}
}

// A socket an agent killed with -9 left behind: nobody listens, so the
// requester runs the pass itself, and the next agent replaces it.
func TestStaleSocket(t *testing.T) {
	dir := privateDir(t, "state")
	path := filepath.Join(dir, SocketName)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := Ask(ctx, dir, Full); !errors.Is(err, ErrNoAgent) {
		t.Fatalf("Ask on a stale socket = %v; want ErrNoAgent", err)
	}
	serve(t, dir)
	if a, err := Ask(ctx, dir, Full); err != nil || a.Status != "OK" {
		t.Errorf("Ask after a new agent listens = %+v, %v", a, err)
	}
}

// A state dir others may enter is refused on both ends.
func TestOpenDirRefused(t *testing.T) {
	dir := privateDir(t, "state")
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(dir); err == nil || !strings.Contains(err.Error(), "open to other users") {
		t.Errorf("Listen in a 0755 dir = %v; want refused", err)
	}
}

// A request that never comes (a stuck or hostile client) does not hold a
// pass or the server: the connection is closed after the handshake bound.
func TestSilentClientDoesNotBlock(t *testing.T) {
	dir := privateDir(t, "state")
	passes, _, _ := serve(t, dir)
	c, err := net.Dial("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(handshake + bound))
	buf := make([]byte, 512)
	n, _ := c.Read(buf)
	if !strings.Contains(string(buf[:n]), `"refused":"a bad request`) || passes.Load() != 0 {
		t.Errorf("a silent client got %q, passes %d; want a refusal and no pass", buf[:n], passes.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := Ask(ctx, dir, Full); err != nil {
		t.Errorf("Ask beside a silent client: %v", err)
	}
}

// hostileEnv makes the test binary a client of another uid (see TestMain).
const hostileEnv = "PASSREQUEST_TEST_HOSTILE_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(hostileEnv); path != "" {
		c, err := net.Dial("unix", path)
		if err != nil {
			os.Stdout.WriteString("dial: " + err.Error())
			os.Exit(0)
		}
		c.Write([]byte(`{"kind":"full"}` + "\n"))
		_ = c.SetReadDeadline(time.Now().Add(bound))
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		os.Stdout.Write(buf[:n])
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Another local user who reaches the socket (here: a hard link the test
// opens to everyone, since the state dir keeps them out) is refused by its
// uid: no pass runs and no outcome is read.
func TestAnotherUIDIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run a client as another uid")
		}
		t.Skip("needs root to run a client as another uid")
	}
	dir := privateDir(t, "state")
	passes, refusals, refusedUID := serve(t, dir)
	open, err := os.MkdirTemp("", "passrequest-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(open)
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(open, "agent.sock")
	if err := os.Link(filepath.Join(dir, SocketName), link); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(link, 0o666); err != nil {
		t.Fatal(err)
	}
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(open, "client")
	if err := os.WriteFile(exe, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{hostileEnv + "=" + link}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hostile client: %v: %s", err, out)
	}
	if !strings.Contains(string(out), `"refused":"another user may not ask this agent for a pass"`) || strings.Contains(string(out), `"status"`) {
		t.Errorf("uid 65534 got %q; want a refusal", out)
	}
	if passes.Load() != 0 || refusals.Load() != 1 || refusedUID.Load() != 65534 {
		t.Errorf("passes %d, refusals %d (uid %d); want 0, 1 (65534)", passes.Load(), refusals.Load(), refusedUID.Load())
	}
}
