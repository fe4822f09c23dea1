package e2e_test

// Suite-wide secret checks: a sampler of every process's argv for the whole
// e2e run (TestMain starts it), a journald stand-in every world's events go
// to, and the tests that prove both can see what they look for.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tokenInArgv is the shape of every token a test can create: the fake's
// access, refresh and setup tokens (sk-ant-…) and Vault service tokens (hvs.…).
// No process may ever carry one in its argv, registered or not.
var tokenInArgv = regexp.MustCompile(`sk-ant-[A-Za-z0-9_-]{8,}|hvs\.[A-Za-z0-9_-]{16,}`)

// secretRegistry lists every secret the suite created, read at the end (fakes
// keep minting while tests run).
var secretRegistry struct {
	mu      sync.Mutex
	sources []func() []string
}

func registerSecrets(f func() []string) {
	secretRegistry.mu.Lock()
	defer secretRegistry.mu.Unlock()
	secretRegistry.sources = append(secretRegistry.sources, f)
}

func allRegisteredSecrets() map[string]bool {
	secretRegistry.mu.Lock()
	srcs := append([]func() []string(nil), secretRegistry.sources...)
	secretRegistry.mu.Unlock()
	out := map[string]bool{}
	for _, f := range srcs {
		for _, s := range f() {
			if len(s) >= 8 {
				out[s] = true
			}
		}
	}
	return out
}

// argvSampler reads /proc/*/cmdline every few milliseconds for the whole run and
// keeps each distinct command line once. A process that lives a few
// milliseconds can slip between two samples; the ones that matter here (the
// agent, exec, refresh, sync and the `claude` child of every check) live from
// tens of milliseconds to minutes, and there are thousands of them.
type argvSampler struct {
	mu      sync.Mutex
	seen    map[string]int // distinct cmdline -> a pid that had it
	polls   int
	procs   int // process observations, for the report
	stop    chan struct{}
	done    chan struct{}
	every   time.Duration
	started time.Time
}

var sampler *argvSampler

const maxDistinctArgv = 500000

func startArgvSampler(every time.Duration) *argvSampler {
	s := &argvSampler{seen: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{}), every: every, started: time.Now()}
	go s.loop()
	return s
}

func (s *argvSampler) loop() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.poll()
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *argvSampler) poll() {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	type obs struct {
		line string
		pid  int
	}
	var got []obs
	for _, e := range ents {
		pid := 0
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		got = append(got, obs{string(bytes.TrimRight(b, "\x00")), pid})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls++
	s.procs += len(got)
	for _, o := range got {
		if _, ok := s.seen[o.line]; !ok && len(s.seen) < maxDistinctArgv {
			s.seen[o.line] = o.pid
		}
	}
}

// sawArgvContaining reports whether any sampled argv contained needle.
func (s *argvSampler) sawArgvContaining(needle string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for line := range s.seen {
		if strings.Contains(line, needle) {
			return true
		}
	}
	return false
}

// leaks stops nothing; it lists every sampled argv that holds a token: any
// token-shaped string, and any registered secret.
func (s *argvSampler) leaks() []string {
	secrets := allRegisteredSecrets()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for line, pid := range s.seen {
		bad := tokenInArgv.MatchString(line)
		if !bad {
			for _, f := range strings.FieldsFunc(line, func(r rune) bool { return strings.ContainsRune("\x00 \t\n=:,;'\"&|()[]{}<>", r) }) {
				if secrets[f] {
					bad = true
					break
				}
			}
		}
		if bad {
			shown := tokenInArgv.ReplaceAllString(strings.ReplaceAll(line, "\x00", " "), "[TOKEN]")
			for sec := range secrets {
				shown = strings.ReplaceAll(shown, sec, "[SECRET]")
			}
			out = append(out, fmt.Sprintf("pid %d: %s", pid, shown))
		}
	}
	sort.Strings(out)
	return out
}

// finish stops the sampler and says whether the run was clean.
func (s *argvSampler) finish() bool {
	close(s.stop)
	<-s.done
	leaks := s.leaks()
	s.mu.Lock()
	fmt.Fprintf(os.Stderr, "e2e: argv sampler: %d polls every %s over %s, %d process observations, %d distinct command lines, %d holding a token\n",
		s.polls, s.every, time.Since(s.started).Round(time.Second), s.procs, len(s.seen), len(leaks))
	s.mu.Unlock()
	for _, l := range leaks {
		fmt.Fprintf(os.Stderr, "e2e: FAIL: a token in a process's argv: %s\n", l)
	}
	return len(leaks) == 0
}

// journalSink is a stand-in for journald's native socket: every world's agent
// and commands send their journal lines here, and the secret scan reads them.
type journalSink struct {
	t    *testing.T
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	// marks are the marker datagrams messages sent, closed when read.
	marks map[string]chan struct{}
	done  chan struct{}
}

func newJournalSink(t *testing.T) *journalSink {
	t.Helper()
	// sun_path holds 108 bytes: keep it short, outside the test's long temp dir.
	dir, err := os.MkdirTemp("", "cj")
	if err != nil {
		t.Fatal(err)
	}
	j := &journalSink{t: t, path: filepath.Join(dir, "s"), marks: map[string]chan struct{}{}, done: make(chan struct{})}
	j.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: j.path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("journal stand-in: %v", err)
	}
	// The agent may run as a test OS user: let it send.
	os.Chmod(dir, 0o755)
	os.Chmod(j.path, 0o777)
	go func() {
		defer close(j.done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := j.conn.ReadFrom(buf)
			if err != nil {
				return
			}
			j.mu.Lock()
			if got, ok := j.marks[string(buf[:n])]; ok {
				close(got)
				delete(j.marks, string(buf[:n]))
			} else {
				j.msgs = append(j.msgs, string(buf[:n]))
			}
			j.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		j.conn.Close()
		<-j.done
		os.RemoveAll(dir)
	})
	return j
}

// messages returns every datagram sent to the sink before the call (none for
// a world built without a sink): it sends a marker datagram and waits for the
// reader to get it. The socket has one receive queue, in order, so every
// datagram a sender had sent is read before the marker.
func (j *journalSink) messages() []string {
	if j == nil {
		return nil
	}
	mark := fmt.Sprintf("CAS-JOURNAL-SINK-MARK %d", time.Now().UnixNano())
	got := make(chan struct{})
	j.mu.Lock()
	j.marks[mark] = got
	j.mu.Unlock()
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.path, Net: "unixgram"})
	if err == nil {
		_, err = conn.Write([]byte(mark))
		conn.Close()
	}
	if err != nil {
		j.t.Fatalf("journal stand-in: send a marker: %v", err)
	}
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		j.t.Fatalf("journal stand-in: the reader did not get the marker within 30 s")
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.msgs...)
}

// journalMessages is the MESSAGE= field of each datagram.
func (j *journalSink) journalMessages() []string {
	var out []string
	for _, m := range j.messages() {
		for _, line := range strings.Split(m, "\n") {
			if v, ok := strings.CutPrefix(line, "MESSAGE="); ok {
				out = append(out, v)
			}
		}
	}
	return out
}

// The sampler sees a process's argv (so its silence means something): a
// process started with a marker in its argv is seen within its short life.
func TestFaultArgvSamplerSeesProcesses(t *testing.T) {
	if sampler == nil {
		t.Fatal("the argv sampler is not running")
	}
	marker := fmt.Sprintf("cas-argv-marker-%d", time.Now().UnixNano())
	// sh keeps its own argv ($0 = the marker) while it waits for sleep.
	cmd := exec.Command("sh", "-c", "sleep 0.2", marker)
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if !sampler.sawArgvContaining(marker) {
		t.Fatalf("the argv sampler did not see a process that lived 200 ms")
	}
	// And the leak detector flags a token shape in argv: check the matcher on
	// a synthetic command line (no such process is started).
	if !tokenInArgv.MatchString("claude-auth-sync\x00--token\x00sk-ant-ort01-fake-0123456789abcdef") ||
		!tokenInArgv.MatchString("vault\x00login\x00hvs.CAESIJ0123456789abcdefXYZ") {
		t.Fatalf("the argv leak pattern misses a token shape")
	}
}

// Events reach the journal stand-in as `user=<user> <STATUS> <message>` with
// identifier claude-auth-sync, and never with a token in them.
func TestFaultJournalLines(t *testing.T) {
	w := newWorld(t)
	w.login()
	w.mustCode(w.run(nil, "sync"), 0, "sync")
	msgs := w.journal.journalMessages()
	if len(msgs) == 0 {
		t.Fatalf("no journal line reached the stand-in")
	}
	re := regexp.MustCompile(`^user=` + regexp.QuoteMeta(w.name) + ` (OK|FAIL|WARN|SKIP|RECOVERED) \S`)
	for _, m := range msgs {
		if !re.MatchString(m) {
			t.Errorf("journal line %q does not read `user=%s STATUS message`", m, w.name)
		}
	}
	raw := strings.Join(w.journal.messages(), "\n")
	if !strings.Contains(raw, "SYSLOG_IDENTIFIER=claude-auth-sync\n") {
		t.Errorf("journal datagrams lack SYSLOG_IDENTIFIER=claude-auth-sync")
	}
}

// findSecrets returns the secrets that occur in any of texts. Token-shaped
// secrets (thousands in a long fault run) are found through the token shapes
// in the texts; any other secret by a plain search.
func findSecrets(texts, secrets []string) []string {
	shaped := map[string]bool{}
	lengths := map[int]bool{}
	var plain []string
	for _, s := range secrets {
		switch {
		case s == "":
		case tokenInArgv.FindString(s) == s:
			shaped[s] = true
			lengths[len(s)] = true
		default:
			plain = append(plain, s)
		}
	}
	found := map[string]bool{}
	for _, txt := range texts {
		for _, m := range tokenInArgv.FindAllString(txt, -1) {
			for l := range lengths {
				if l <= len(m) && (shaped[m[:l]] || shaped[m[len(m)-l:]]) {
					if shaped[m[:l]] {
						found[m[:l]] = true
					} else {
						found[m[len(m)-l:]] = true
					}
				}
			}
		}
		for _, s := range plain {
			if strings.Contains(txt, s) {
				found[s] = true
			}
		}
	}
	out := make([]string, 0, len(found))
	for s := range found {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Every file and directory the product writes for a user, with the most
// permissive umask (000) and as that (unprivileged) user: files 0600,
// directories 0700, all owned by the user. Exercised by sync, the agent (a
// refresh, a backup, a restore), refresh, restore, exec and setup-token mode.
func TestFaultFileModesAndOwners(t *testing.T) {
	u := newFaultUser(t)
	w := newWorld(t)
	l := w.loginExpiringIn(2 * time.Minute) // inside the lead: refreshed
	u.adopt(t, w)
	umask0 := func(cmd *exec.Cmd) {
		// The same binary and arguments, under `umask 000` first.
		cmd.Args = append([]string{"/bin/sh", "-c", `umask 000; exec "$0" "$@"`, cmd.Path}, cmd.Args[1:]...)
		cmd.Path = "/bin/sh"
		u.as(cmd)
	}
	w.mustCode(w.runWith(nil, umask0, time.Minute, "sync"), 0, "sync")
	w.mustCode(w.runWith(nil, umask0, time.Minute, "refresh"), 0, "refresh")
	w.mustCode(w.runWith(nil, umask0, time.Minute, "exec", "--", "true"), 0, "exec")
	a := w.startAgentProc(nil, umask0)
	eventually(t, 20*time.Second, "agent backup", func() bool { return w.vaultRefresh() == refreshTokenOf(t, w.localOAuthCompact()) })
	// A clobber, restored by the agent; a removal and `restore --force`.
	b := mustRead(t, w.creds)
	u.writeRaw(t, w.creds, regexp.MustCompile(`"refreshToken": *"[^"]*"`).ReplaceAll(b, []byte(`"refreshToken": ""`)))
	eventually(t, 20*time.Second, "agent restore", func() bool { return strings.Contains(w.syncLog(), "RECOVERED") })
	a.stop()
	os.Remove(w.creds)
	w.mustCode(w.runWith(nil, umask0, time.Minute, "restore", "--force"), 0, "restore")
	// Setup-token mode: the env file.
	setup := w.fake.IssueSetupToken(365 * 24 * time.Hour)
	registerSecrets(func() []string { return []string{setup} })
	w.secrets = append(w.secrets, setup)
	if _, err := rootKV().Patch(context.Background(), w.user.Path, map[string]any{"setup_token": setup}); err != nil {
		t.Fatal(err)
	}
	w.mustCode(w.runWith(nil, umask0, time.Minute, "sync"), 0, "sync in setup-token mode")
	_ = l

	checked, names := 0, []string{}
	for _, root := range []string{filepath.Dir(w.creds), w.state, filepath.Dir(w.user.TokenFile)} {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Errorf("%s: %v", p, err)
				return nil
			}
			fi, _ := os.Lstat(p)
			st := fi.Sys().(*syscall.Stat_t)
			want := fs.FileMode(0o600)
			if fi.IsDir() {
				want = 0o700
			}
			// The agent's pass-request socket (sync/passrequest) is the one
			// file here that is not a regular file or a directory.
			if typ := fi.Mode().Type(); typ&^fs.ModeDir != 0 && !(typ == fs.ModeSocket && d.Name() == "agent.sock") {
				t.Errorf("%s: unexpected file type %v", p, fi.Mode().Type())
			}
			if fi.Mode().Perm() != want || int(st.Uid) != u.uid {
				t.Errorf("%s: mode %04o owner %d; want %04o owned by %d", p, fi.Mode().Perm(), st.Uid, want, u.uid)
			}
			checked++
			names = append(names, filepath.Base(p))
			return nil
		})
	}
	if checked < 10 {
		t.Errorf("only %d paths checked; the walk missed the product's files", checked)
	}
	faultReport(t, "%d files and directories written under umask 000 as uid %d (%s): all 0600/0700, all owned by the user", checked, u.uid, strings.Join(names, " "))
}

// writeRaw writes bytes as the user's file (rename over, owned by the user).
func (u faultUser) writeRaw(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(tmp, u.uid, u.gid)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// A scoped token file readable by group or others, owned by someone else, a
// directory, or a link to a readable file is refused: `sync` FAILs saying
// why, the agent reports it once, and no login is read or written with it.
// A file that is the user's own but open to others (exposed) may still tell
// the fleet that FAIL (issue 23): its token is looked up (this user's?) and
// writes this host's health in the document's metadata, nothing else; any
// other refused file sends no request at all.
func TestFaultTokenFileRefused(t *testing.T) {
	u := newFaultUser(t)
	cases := []struct {
		name    string
		setup   func(w *world)
		want    string
		agent   bool // also run the agent (a few cases: it takes seconds)
		reports bool // exposed: the health may go out with it
	}{
		{"mode 0640", func(w *world) { os.Chmod(w.user.TokenFile, 0o640) }, "readable by others", true, true},
		{"mode 0604", func(w *world) { os.Chmod(w.user.TokenFile, 0o604) }, "readable by others", false, true},
		{"mode 0644", func(w *world) { os.Chmod(w.user.TokenFile, 0o644) }, "readable by others", false, true},
		{"mode 0666", func(w *world) { os.Chmod(w.user.TokenFile, 0o666) }, "readable by others", false, true},
		{"owned by root", func(w *world) { os.Chown(w.user.TokenFile, 0, 0); os.Chmod(w.user.TokenFile, 0o604) }, "readable by others", false, false},
		{"owned by another user, 0600", func(w *world) { os.Chown(w.user.TokenFile, 0, 0) }, "", true, false},
		{"a link to a readable file", func(w *world) {
			pub := filepath.Join(w.home, "token-copy")
			os.Rename(w.user.TokenFile, pub)
			os.Chmod(pub, 0o644)
			os.Symlink(pub, w.user.TokenFile)
		}, "is a symlink", false, false},
		{"a link to a private file", func(w *world) {
			own := filepath.Join(w.home, "token-elsewhere")
			os.Rename(w.user.TokenFile, own)
			os.Symlink(own, w.user.TokenFile)
		}, "is a symlink", false, false},
		{"a directory", func(w *world) {
			os.Remove(w.user.TokenFile)
			os.Mkdir(w.user.TokenFile, 0o700)
			os.Chown(w.user.TokenFile, u.uid, u.gid)
		}, "not a regular file", true, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			proxy := newFaultProxy(t, vsrv.Addr)
			w.withVaultAddr(proxy.srv.URL)
			w.login()
			u.adopt(t, w)
			c.setup(w)
			r := w.runWith(nil, u.as, time.Minute, "sync")
			w.mustCode(r, 1, "sync with a refused token file")
			if !strings.Contains(w.syncLog(), "FAIL vault token") || (c.want != "" && !strings.Contains(w.syncLog(), c.want)) {
				t.Errorf("sync.log does not say why the token file is refused (%q):\n%s", c.want, w.syncLog())
			}
			onlyHealth := func(who string) {
				t.Helper()
				seen := proxy.requestsSeen()
				if !c.reports && len(seen) != 0 {
					t.Errorf("%d requests reached vault from %s with a refused token file: %v", len(seen), who, seen)
				}
				for _, r := range seen {
					if !regexp.MustCompile(`^(GET /v1/auth/token/lookup-self|POST /v1/sys/capabilities-self|(GET|PATCH) /v1/secret/metadata/.*)$`).MatchString(r) {
						t.Errorf("%s with an exposed token file asked vault %q: only the health may go out with it", who, r)
					}
				}
			}
			onlyHealth("sync")
			if !c.agent {
				return
			}
			a := w.startAgentProc(nil, u.as)
			// The start-up pass done, and the agent retrying (--retry-max 1s).
			w.waitFirstPass(t)
			w.waitRetries(t, 2, "the agent with a refused token file")
			before := strings.Count(w.syncLog(), "FAIL vault token")
			w.waitRetries(t, 3, "the agent with a refused token file")
			a.stop()
			// sync's, then the agent's start pass and its token routine: each once.
			if n := strings.Count(w.syncLog(), "FAIL vault token"); n != before || n > 3 {
				t.Errorf("FAIL lines for the token file: %d, then %d after the agent's retries; want each part to say it once:\n%s", before, n, w.syncLog())
			}
			onlyHealth("the agent")
		})
	}
}
