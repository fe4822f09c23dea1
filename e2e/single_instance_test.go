package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// One agent per user whatever happens to its files: with the state dir (and
// the agent.lock in it) deleted under a running agent, a second `run` is
// still refused, naming the first, and the first goes on backing up.
func TestSecondAgentRefusedWithoutStateDir(t *testing.T) {
	w := newWorld(t)
	l := w.login()
	a := w.startAgent(nil)
	eventually(t, 45*time.Second, "initial backup", w.vaultHolds(l))
	// The agent may be writing into it meanwhile: remove until it is gone.
	eventually(t, 10*time.Second, "state dir removed", func() bool { return os.RemoveAll(w.state) == nil })
	r := w.run(nil, "run")
	w.mustCode(r, 4, "second run with the state dir deleted (exit 4: another agent runs)")
	if want := "pid " + strconv.Itoa(a.cmd.Process.Pid); !strings.Contains(r.stderr, "already running") || !strings.Contains(r.stderr, want) {
		t.Errorf("second agent's message: %q; want \"already running\" and %q", r.stderr, want)
	}
	// status tells the truth without the state dir: the agent runs.
	st := w.run(nil, "status", "--json")
	var rep struct {
		Agent struct {
			Running bool `json:"running"`
			PID     int  `json:"pid"`
		} `json:"agent"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, st.stdout)
	}
	if !rep.Agent.Running || rep.Agent.PID != a.cmd.Process.Pid {
		t.Errorf("status with the state dir deleted: agent running=%v pid=%d; want running, pid %d", rep.Agent.Running, rep.Agent.PID, a.cmd.Process.Pid)
	}
	l = w.rotate(l)
	eventually(t, 30*time.Second, "the first agent backs up after its state dir went", w.vaultHolds(l))
}

// Another OS user listening first on every name the agent's socket might
// take (the very name an earlier agent had, and names beside it) neither
// stops the user's agent nor lets a second one start beside it.
func TestSecondAgentNotBlockedBySquatter(t *testing.T) {
	victim, hostile := newFaultUser(t), newFaultUser(t)
	w := newWorld(t)
	w.login()
	victim.adopt(t, w)
	started := func(a *agentProc, what string) {
		t.Helper()
		eventually(t, 45*time.Second, what, func() bool { return strings.Contains(a.output(), "agent started") })
	}
	first := w.startAgentProc(nil, victim.as)
	started(first, "the victim's first agent started")
	name := agentSocketName(t, victim.uid)
	first.stop()

	prefix := name[:strings.LastIndex(name, "/")+1]
	names := []string{name, strings.TrimSuffix(prefix, "/"), prefix}
	for i := range 64 {
		names = append(names, fmt.Sprintf("%s%016x", prefix, i))
	}
	sq := exec.Command(filepath.Join(binDir, "name-squatter"), names...)
	hostile.as(sq)
	stdin, _ := sq.StdinPipe()
	out, _ := sq.StdoutPipe()
	if err := sq.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); sq.Wait() })
	line := make([]byte, 256)
	k, _ := io.ReadAtLeast(out, line, 1)
	if got := strings.TrimSpace(string(line[:k])); got != fmt.Sprintf("holding %d", len(names)) {
		t.Fatalf("name-squatter: %s", got)
	}

	second := w.startAgentProc(nil, victim.as)
	started(second, "the victim's agent started beside the squatter")
	// The agent may be writing into it meanwhile: remove until it is gone.
	eventually(t, 10*time.Second, "state dir removed", func() bool { return os.RemoveAll(w.state) == nil })
	r := w.runWith(nil, victim.as, 30*time.Second, "run")
	w.mustCode(r, 4, "a third run, squatter listening and state dir deleted")
	if want := "pid " + strconv.Itoa(second.cmd.Process.Pid); !strings.Contains(r.stderr, want) {
		t.Errorf("third agent's message: %q; want %q", r.stderr, want)
	}
}

// agentSocketName is the abstract socket an agent of uid listens on, from
// the kernel's table.
func agentSocketName(t *testing.T, uid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	prefix := "@claude-auth-sync/agent/" + strconv.Itoa(uid) + "/"
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 8 && strings.HasPrefix(f[len(f)-1], prefix) {
			return f[len(f)-1]
		}
	}
	t.Fatalf("no socket under %s in /proc/net/unix", prefix)
	return ""
}
