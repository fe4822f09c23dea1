package e2e_test

// Root acting for a user (--user) runs code the user controls: the user's
// claude for `status` (its --version) and for a pass's check, and the command
// of `exec --user`. Here that code is hostile (e2e/cmd/hostile-claude): it
// types into any terminal it reaches, reads and traces its parent, keeps its
// environment and descriptors, and prints escape sequences. Root runs the
// commands on a pseudo-terminal, with secrets in its environment and a
// descriptor left open, as an admin's shell would.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostileReport is what e2e/cmd/hostile-claude wrote about one of its runs.
type hostileReport struct {
	Mode    string            `json:"mode"`
	UID     int               `json:"uid"`
	Env     []string          `json:"env"`
	FDs     map[string]string `json:"fds"`
	DevTTY  string            `json:"dev_tty"`
	STI     map[string]string `json:"sti"`
	Parent  map[string]string `json:"parent"`
	Session bool              `json:"session_leader"`
}

// testPTY is a pseudo-terminal: the slave is root's terminal, the master
// the terminal emulator, which sees what is printed; whatever is typed
// into the terminal (TIOCSTI) waits in the slave's input for root's shell.
type testPTY struct {
	t             *testing.T
	master, slave *os.File
	out           bytes.Buffer
	done          chan struct{}
}

func openTestPTY(t *testing.T) *testPTY {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pty slave: %v", err)
	}
	// Non-canonical, no echo, reads return at once: the shell side reads
	// what was typed without waiting for a line.
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ICANON | unix.ECHO
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 0, 0
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	p := &testPTY{t: t, master: m, slave: s, done: make(chan struct{})}
	go func() {
		io.Copy(&p.out, m) // until EIO: every slave closed
		close(p.done)
	}()
	t.Cleanup(func() { m.Close(); s.Close() })
	return p
}

// typedIn is what waits in the terminal's input: what root's shell would
// read (and run) next.
func (p *testPTY) typedIn() string {
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := p.slave.Read(buf)
		got = append(got, buf[:max(n, 0)]...)
		if n <= 0 || err != nil {
			return string(got)
		}
	}
}

// printed closes root's side and is everything the terminal displayed.
func (p *testPTY) printed() string {
	p.slave.Close()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatal("the terminal's output did not end")
	}
	return p.out.String()
}

// runOnPTY runs the real binary as root with the pty as its controlling
// terminal; stdio selects which of its standard streams are the pty (the
// others: /dev/null and a buffer). extra descriptors start at 3; ctty is the
// child's descriptor of the pty.
func (w *world) runOnPTY(p *testPTY, env []string, stdio bool, extra []*os.File, args ...string) (int, string) {
	w.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "claude-auth-sync"), args...)
	cmd.Env = env
	var buf bytes.Buffer
	ctty := 0
	if stdio {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
	} else {
		cmd.Stdout, cmd.Stderr = &buf, &buf
		extra = append(extra, p.slave)
		ctty = 2 + len(extra)
	}
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: ctty}
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		w.t.Fatalf("%v did not finish (a hang)", args)
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	w.mu.Lock()
	w.outputs = append(w.outputs, buf.String())
	w.mu.Unlock()
	return code, buf.String()
}

// hostileReports reads (and removes) the reports of mode in home.
func hostileReports(t *testing.T, home, mode string) []hostileReport {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(home, "hostile-"+mode+"-*.json"))
	var out []hostileReport
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r hostileReport
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, r)
		os.Remove(f)
	}
	return out
}

// childEnvAllowed is the documented allow-list (README, exec --help), said
// again here so that the product's list is checked against it.
func childEnvAllowed(k string) bool {
	switch k {
	case "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR",
		"NODE_EXTRA_CA_CERTS", "ANTHROPIC_BASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
		"http_proxy", "https_proxy", "no_proxy", "all_proxy":
		return true
	}
	return strings.HasPrefix(k, "LC_") ||
		strings.HasPrefix(k, "CLAUDE_") && (!strings.Contains(k, "TOKEN") || k == "CLAUDE_AUTH_OAUTH_TOKEN_URL") ||
		strings.HasPrefix(k, "VAULT_") && k != "VAULT_TOKEN" && k != "VAULT_HEADERS"
}

// checkHostileChild: what one child started for the user had and could do.
func checkHostileChild(t *testing.T, what string, r hostileReport, uid int, rootSecrets []string, leaked string) {
	t.Helper()
	if r.UID != uid {
		t.Errorf("%s: ran as uid %d; want the user's %d", what, r.UID, uid)
	}
	if r.DevTTY != "ENXIO" {
		t.Errorf("%s: open(/dev/tty) = %s; want ENXIO (no controlling terminal)", what, r.DevTTY)
	}
	if !r.Session {
		t.Errorf("%s: not in a session of its own", what)
	}
	for target, res := range r.STI {
		if res == "ok" {
			t.Errorf("%s: TIOCSTI on %s worked", what, target)
		}
	}
	var fds []string
	for fd, link := range r.FDs {
		fds = append(fds, fd+"="+link)
		if fd != "0" && fd != "1" && fd != "2" {
			t.Errorf("%s: descriptor %s (%s) was open; want only 0-2", what, fd, link)
		}
		if strings.HasPrefix(link, "/dev/pts/") || strings.HasPrefix(link, "/dev/tty") || link == "/dev/ptmx" || link == leaked {
			t.Errorf("%s: descriptor %s is root's %s", what, fd, link)
		}
	}
	slices.Sort(fds)
	var keys []string
	for _, kv := range r.Env {
		k, v, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
		if !childEnvAllowed(k) {
			t.Errorf("%s: got %s, which is not on the allow-list", what, k)
		}
		for _, s := range rootSecrets {
			if strings.Contains(v, s) {
				t.Errorf("%s: %s holds one of root's secrets", what, k)
			}
		}
	}
	slices.Sort(keys)
	if p := r.Parent["environ"]; strings.HasPrefix(p, "read") {
		t.Errorf("%s: read its parent's /proc/<pid>/environ", what)
	}
	if r.Parent["ptrace"] == "attached" {
		t.Errorf("%s: attached to its parent with ptrace", what)
	}
	t.Logf("CHILD-ENV %s: %s", what, strings.Join(keys, ","))
	t.Logf("CHILD-FDS %s: %s; /dev/tty %s; TIOCSTI %v; parent %v", what, strings.Join(fds, " "), r.DevTTY, r.STI, r.Parent)
}

// assertPrintable: the terminal showed no escape sequence or control
// character (the pty's own CR LF aside).
func assertPrintable(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if r == '\r' || r == '\n' || r == '\t' {
			continue
		}
		if r < 0x20 || r >= 0x7f && r <= 0x9f {
			t.Errorf("%s: the terminal got control character %U at byte %d: %q", what, r, i, out[max(0, i-40):min(len(out), i+40)])
			return
		}
	}
}

// onRootsTerminal runs the binary as root on a new pseudo-terminal (its
// stdin, stdout, stderr and controlling terminal), leak left open as fd 3:
// nothing may be typed into the terminal, nor anything printed that drives
// it. It returns the exit code and what the terminal showed.
func onRootsTerminal(t *testing.T, w *world, env []string, leak *os.File, args ...string) (int, string) {
	t.Helper()
	p := openTestPTY(t)
	code, _ := w.runOnPTY(p, env, true, []*os.File{leak}, args...)
	injected := p.typedIn()
	out := p.printed()
	w.mu.Lock()
	w.outputs = append(w.outputs, out)
	w.mu.Unlock()
	if injected != "" {
		t.Errorf("%s: typed into root's terminal: %q", args[0], injected)
	}
	assertPrintable(t, args[0], out)
	return code, out
}

func TestHostileUserCodeUnderRoot(t *testing.T) {
	w, victim, _, _, _ := newActForWorld(t, "cash")
	// The user's own claude, where the native installer puts it; root's
	// PATH has none, so root finds this one.
	bin := filepath.Join(victim.home, ".local", "bin")
	b, err := os.ReadFile(filepath.Join(binDir, "hostile-claude"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "claude"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(victim.home, ".local"), bin, filepath.Join(bin, "claude")} {
		os.Lchown(p, victim.uid, victim.gid)
	}

	// Root's environment: an admin's shell, secrets and all.
	rootSecrets := []string{"hvs.ROOTADMINTOKENe2eHostileNeverShown", "AWSroot/SecretAccessKeyE2EhostileNeverShown",
		"sk-ant-api03-rootApiKeyE2EHostileNeverShown", "hunter2-proxy-password"}
	w.mu.Lock()
	w.secrets = append(w.secrets, rootSecrets...)
	w.mu.Unlock()
	var env []string
	for _, kv := range w.env {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "CLAUDE_AUTH_CLAUDE_BIN=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NO_COLOR=1", "TERM=xterm-256color", "LANG=C.UTF-8", "TZ=UTC",
		"VAULT_TOKEN="+rootSecrets[0], "AWS_SECRET_ACCESS_KEY="+rootSecrets[1], "ANTHROPIC_API_KEY="+rootSecrets[2],
		"https_proxy=http://admin:"+rootSecrets[3]+"@127.0.0.1:9", "http_proxy=http://127.0.0.1:9", "no_proxy=127.0.0.1,localhost",
		"DISPLAY=:99", "SSH_AUTH_SOCK=/tmp/cas-no-agent", "ROOT_ONLY_SETTING=root")
	// A descriptor root's shell left open (no close-on-exec): a file only root reads.
	leakPath := filepath.Join(t.TempDir(), "root-only")
	os.WriteFile(leakPath, []byte("root's\n"), 0o600)
	leak, err := os.Open(leakPath)
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()

	// The probe works: the hostile claude given the terminal, as the old
	// code gave it, types into it.
	t.Run("control: a child holding the terminal types into it", func(t *testing.T) {
		p := openTestPTY(t)
		cmd := exec.Command(filepath.Join(bin, "claude"), "--version")
		cmd.Env = []string{"HOME=" + victim.home}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p.slave, p.slave, p.slave
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Credential: &syscall.Credential{Uid: uint32(victim.uid), Gid: uint32(victim.gid)}}
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		hostileReports(t, victim.home, "version")
		if b, _ := os.ReadFile("/proc/sys/dev/tty/legacy_tiocsti"); strings.TrimSpace(string(b)) == "0" {
			// The kernel refuses TIOCSTI to everyone unprivileged here; the
			// terminal, descriptor and session checks below still hold.
			t.Log("dev.tty.legacy_tiocsti=0: TIOCSTI is off on this kernel")
		} else if got := p.typedIn(); !strings.Contains(got, "hostile-claude-was-here") {
			t.Fatalf("the hostile claude could not type into a terminal it held (%q): the probe below would prove nothing", got)
		}
		if out := p.printed(); !strings.Contains(out, "\x1b]0;pwned-title") {
			t.Fatalf("the raw escape sequences did not reach the terminal: %q", out)
		}
	})

	t.Run("status --user on root's terminal", func(t *testing.T) {
		code, out := onRootsTerminal(t, w, env, leak, "status", "--user", victim.name)
		if code != 0 {
			t.Errorf("status --user: exit %d; want 0\n%s", code, out)
		}
		if !strings.Contains(out, "2.1.332 (Claude Code) RED") || !strings.Contains(out, "HOSTILE-VERSION") {
			t.Errorf("status does not show the user's claude version, made printable:\n%s", out)
		}
		rs := hostileReports(t, victim.home, "version")
		if len(rs) != 1 {
			t.Fatalf("%d runs of the user's claude --version; want 1", len(rs))
		}
		checkHostileChild(t, "version", rs[0], victim.uid, rootSecrets, leakPath)
	})

	t.Run("sync --user on root's terminal", func(t *testing.T) {
		code, out := onRootsTerminal(t, w, env, leak, "sync", "--user", victim.name)
		// The check's claude failed with a 529: transient, a WARN, exit 75.
		if code != 75 {
			t.Errorf("sync --user: exit %d; want 75 (the check's 529 is transient)\n%s", code, out)
		}
		if !strings.Contains(out, "HOSTILE-ERROR") {
			t.Errorf("the check's error text is not shown:\n%s", out)
		}
		if log := w.syncLog(); !strings.Contains(log, "HOSTILE-ERROR") {
			t.Errorf("sync.log does not have the check's error text:\n%s", log)
		} else {
			assertPrintable(t, "sync.log", log)
		}
		rs := hostileReports(t, victim.home, "check")
		if len(rs) == 0 {
			t.Fatal("the user's claude was not run for the check")
		}
		for _, r := range rs {
			checkHostileChild(t, "check", r, victim.uid, rootSecrets, leakPath)
		}
	})

	t.Run("the user's links are followed as the user", func(t *testing.T) {
		// ~/.claude made a link into a directory only root may enter: root
		// resolving it would work on (and name) root's directory.
		hidden := filepath.Join(t.TempDir(), "root-only")
		os.MkdirAll(filepath.Join(hidden, "claude"), 0o700)
		dot := filepath.Join(victim.home, ".claude")
		moved := dot + ".moved"
		if err := os.Rename(dot, moved); err != nil {
			t.Fatal(err)
		}
		defer func() { os.Remove(dot); os.Rename(moved, dot) }()
		if err := os.Symlink(filepath.Join(hidden, "claude"), dot); err != nil {
			t.Fatal(err)
		}
		os.Lchown(dot, victim.uid, victim.gid)
		r := w.runWith(nil, func(c *exec.Cmd) { c.Env = env }, 2*time.Minute, "status", "--json", "--user", victim.name)
		var rep struct {
			CredentialsFile string `json:"credentials_file"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s%s", err, r.stdout, r.stderr)
		}
		if want := filepath.Join(dot, ".credentials.json"); rep.CredentialsFile != want {
			t.Errorf("credentials file %s; want %s (the link the user cannot follow, left as it is)", rep.CredentialsFile, want)
		}
		hostileReports(t, victim.home, "version")
	})

	t.Run("exec --user on root's terminal is refused", func(t *testing.T) {
		p := openTestPTY(t)
		code, _ := w.runOnPTY(p, env, true, nil, "exec", "--user", victim.name, "--", filepath.Join(bin, "claude"))
		injected := p.typedIn()
		out := p.printed()
		if code != 2 {
			t.Errorf("exec --user on a terminal: exit %d; want 2\n%s", code, out)
		}
		for _, hint := range []string{"not handing root's terminal", "machinectl shell " + victim.name + "@", "runuser --pty -u " + victim.name, "su - " + victim.name} {
			if !strings.Contains(out, hint) {
				t.Errorf("the refusal does not say %q:\n%s", hint, out)
			}
		}
		if rs := hostileReports(t, victim.home, "exec"); len(rs) != 0 || injected != "" {
			t.Errorf("the command ran (%d reports, typed %q)", len(rs), injected)
		}
	})

	t.Run("exec --user without a terminal", func(t *testing.T) {
		// Root's process still has the terminal as its controlling one
		// (and open as a descriptor), but not as stdin, stdout or stderr.
		p := openTestPTY(t)
		code, out := w.runOnPTY(p, env, false, []*os.File{leak}, "exec", "--user", victim.name, "--", filepath.Join(bin, "claude"))
		injected := p.typedIn()
		p.printed()
		if code != 0 || !strings.Contains(out, "HOSTILE-EXEC ran") {
			t.Fatalf("exec --user without a terminal: exit %d; want the command's 0\n%s", code, out)
		}
		if injected != "" {
			t.Errorf("typed into root's terminal: %q", injected)
		}
		rs := hostileReports(t, victim.home, "exec")
		if len(rs) != 1 {
			t.Fatalf("%d runs of the command; want 1", len(rs))
		}
		checkHostileChild(t, "exec", rs[0], victim.uid, rootSecrets, leakPath)
	})
}
