package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/e2e/standin"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

// The scripts in testdata/script run the real command line (Main, in a copy of
// the test binary named claude-auth-sync) against a stand-in `claude` (another
// copy, named claude) that calls a fake Anthropic served by this test process.

// Environment the CLI wrapper reads: where to append a copy of everything the
// command prints (nosecret reads it) and where to record its exit code
// (lastexit reads it).
const (
	envOutputLog = "CAS_TEST_OUTPUT_LOG"
	envExitFile  = "CAS_TEST_EXIT_FILE"
)

func TestMain(m *testing.M) {
	// The scripts' user alice is the test's own account under another name
	// (one Vault identity per script); other names go to the user databases.
	realLookup := config.LookupAccount
	config.LookupAccount = func(name string) (*config.Account, error) {
		if name == "alice" {
			return &config.Account{Name: name, UID: os.Geteuid(), GID: os.Getegid()}, nil
		}
		return realLookup(name)
	}
	testscript.Main(m, map[string]func(){
		"claude-auth-sync": func() { os.Exit(runCLI()) },
		"claude":           func() { os.Exit(standin.Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

// runCLI runs Main as the binary's main does, keeping a copy of its output and
// its exit code for the script's assertions.
func runCLI() int {
	var stdout, stderr io.Writer = os.Stdout, os.Stderr
	if p := os.Getenv(envOutputLog); p != "" {
		if f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			defer f.Close()
			stdout, stderr = io.MultiWriter(os.Stdout, f), io.MultiWriter(os.Stderr, f)
		}
	}
	exitFile := os.Getenv(envExitFile)
	if exitFile != "" {
		_ = os.Remove(exitFile)
	}
	code := Main(os.Args[1:], stdout, stderr)
	if exitFile != "" {
		_ = os.WriteFile(exitFile, []byte(strconv.Itoa(code)+"\n"), 0o600)
	}
	return code
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		Setup:               setupScript,
		RequireExplicitExec: true,
		RequireUniqueNames:  true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"login":       cmdLogin,
			"clobber":     cmdClobber,
			"truncate":    cmdTruncate,
			"fakeapi":     cmdFakeAPI,
			"mode":        cmdMode,
			"private":     cmdPrivate,
			"issymlink":   cmdIsSymlink,
			"sametoken":   cmdSameToken,
			"holdlock":    cmdHoldLock,
			"releaselock": cmdReleaseLock,
			"journal":     cmdJournal,
			"lastexit":    cmdLastExit,
			"nosecret":    cmdNoSecret,
		},
	})
}

type fixtureKey struct{}

// fixture is one script's world: its own fake Anthropic, journal and locks.
type fixture struct {
	fake     *fakeanthropic.Server
	home     string
	state    string
	creds    string
	work     string
	journal  *journal
	mu       sync.Mutex
	locks    map[string]*flock.Flock
	exitFile string
	outLog   string
}

func fix(ts *testscript.TestScript) *fixture { return ts.Value(fixtureKey{}).(*fixture) }

func setupScript(env *testscript.Env) error {
	f := &fixture{fake: fakeanthropic.New(), work: env.WorkDir, locks: map[string]*flock.Flock{}}
	f.home = filepath.Join(env.WorkDir, "home")
	f.state = filepath.Join(f.home, ".local", "state", "claude-auth-sync")
	f.creds = filepath.Join(f.home, ".claude", ".credentials.json")
	f.exitFile = filepath.Join(env.WorkDir, ".last-exit")
	f.outLog = filepath.Join(env.WorkDir, ".output-log")
	if err := os.MkdirAll(f.home, 0o755); err != nil {
		return err
	}

	srv := httptest.NewServer(f.fake.Handler())
	env.Defer(srv.Close)

	j, err := listenJournal(env.WorkDir)
	if err != nil {
		return err
	}
	env.Defer(j.close)
	f.journal = j

	env.Defer(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, l := range f.locks {
			_ = l.Unlock()
		}
	})

	env.Setenv("HOME", f.home)
	env.Setenv("ANTHROPIC_BASE_URL", srv.URL)
	env.Setenv("CLAUDE_AUTH_OAUTH_TOKEN_URL", srv.URL+"/v1/oauth/token")
	env.Setenv("CLAUDE_AUTH_SYSTEM_CONFIG", filepath.Join(env.WorkDir, "no-config"))
	env.Setenv("CLAUDE_AUTH_JOURNAL_SOCKET", j.path)
	env.Setenv("CLAUDE_AUTH_USER", "alice")
	// A bare name: found on PATH, where testscript put the stand-in.
	env.Setenv("CLAUDE_AUTH_CLAUDE_BIN", "claude")
	env.Setenv("VAULT_ADDR", "")
	env.Setenv(envOutputLog, f.outLog)
	env.Setenv(envExitFile, f.exitFile)
	// Shorthands for the scripts.
	env.Setenv("CREDS", f.creds)
	env.Setenv("STATE", f.state)
	env.Values[fixtureKey{}] = f
	return nil
}

// journal is a unixgram socket standing in for journald's native socket.
type journal struct {
	path string
	conn *net.UnixConn
	dir  string // a short temp dir when $WORK is too long for a socket path

	mu       sync.Mutex
	grams    []string
	sentinel chan string
	done     chan struct{}
}

const sentinelField = "CAS_TEST_SENTINEL="

func listenJournal(work string) (*journal, error) {
	j := &journal{sentinel: make(chan string, 1), done: make(chan struct{})}
	j.path = filepath.Join(work, "journal.sock")
	if len(j.path) > 100 { // sun_path is 108 bytes
		d, err := os.MkdirTemp("", "cas-j")
		if err != nil {
			return nil, err
		}
		j.dir = d
		j.path = filepath.Join(d, "journal.sock")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: j.path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	j.conn = conn
	go j.read()
	return j, nil
}

func (j *journal) read() {
	defer close(j.done)
	buf := make([]byte, 1<<16)
	for {
		n, _, err := j.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		g := string(buf[:n])
		if strings.HasPrefix(g, sentinelField) {
			j.sentinel <- g
			continue
		}
		j.mu.Lock()
		j.grams = append(j.grams, g)
		j.mu.Unlock()
	}
}

// sync returns every datagram received so far. Datagrams are queued in order,
// so once our own sentinel comes back, everything sent before it has been read.
func (j *journal) sync() ([]string, error) {
	mark := fmt.Sprintf("%s%d", sentinelField, time.Now().UnixNano())
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: j.path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	_, err = c.Write([]byte(mark))
	c.Close()
	if err != nil {
		return nil, err
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-j.sentinel:
			if got != mark {
				continue
			}
			j.mu.Lock()
			defer j.mu.Unlock()
			return append([]string(nil), j.grams...), nil
		case <-timeout:
			return nil, errors.New("journal listener did not see its own sentinel")
		}
	}
}

func (j *journal) close() {
	j.conn.Close()
	<-j.done
	os.Remove(j.path)
	if j.dir != "" {
		os.RemoveAll(j.dir)
	}
}

// journalLine renders a datagram as one line: the other fields sorted, then
// MESSAGE last (its value may hold spaces).
func journalLine(g string) string {
	var fields []string
	msg := ""
	for _, l := range strings.Split(strings.TrimRight(g, "\n"), "\n") {
		if v, ok := strings.CutPrefix(l, "MESSAGE="); ok {
			msg = v
			continue
		}
		fields = append(fields, l)
	}
	sort.Strings(fields)
	return strings.Join(append(fields, "MESSAGE="+msg), " ")
}

// journal FILE: write what the journal received so far to FILE, one datagram a
// line (e.g. "CLAUDE_AUTH_STATUS=OK … SYSLOG_IDENTIFIER=claude-auth-sync MESSAGE=user=alice OK …").
func cmdJournal(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: journal FILE")
	}
	grams, err := fix(ts).journal.sync()
	ts.Check(err)
	var b strings.Builder
	for _, g := range grams {
		b.WriteString(journalLine(g))
		b.WriteByte('\n')
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(b.String()), 0o600))
}

// login [FILE]: a fresh interactive login from this script's fake, written to
// FILE (default $CREDS) with mode 0600.
func cmdLogin(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: login [FILE]")
	}
	path := fix(ts).creds
	if len(args) == 1 {
		path = ts.MkAbs(args[0])
	}
	ts.Check(os.MkdirAll(filepath.Dir(path), 0o700))
	data := fakeanthropic.CredentialsJSON(fix(ts).fake.Issue())
	ts.Check(os.WriteFile(path, append(data, '\n'), 0o600))
	ts.Check(os.Chmod(path, 0o600))
}

// clobber [FILE]: persist refreshToken "" the way a losing racer does (the rest
// of the file is kept; a symlink is written through).
func cmdClobber(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: clobber [FILE]")
	}
	path := fix(ts).creds
	if len(args) == 1 {
		path = ts.MkAbs(args[0])
	}
	data, err := os.ReadFile(path)
	ts.Check(err)
	var doc map[string]json.RawMessage
	ts.Check(json.Unmarshal(data, &doc))
	var oauth map[string]json.RawMessage
	ts.Check(json.Unmarshal(doc["claudeAiOauth"], &oauth))
	oauth["refreshToken"] = json.RawMessage(`""`)
	b, err := json.Marshal(oauth)
	ts.Check(err)
	doc["claudeAiOauth"] = b
	out, err := json.MarshalIndent(doc, "", "  ")
	ts.Check(err)
	ts.Check(os.WriteFile(path, out, 0o600))
}

// truncate FILE N: cut FILE to its first N bytes (a torn write).
func cmdTruncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: truncate FILE N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	ts.Check(err)
	ts.Check(os.Truncate(ts.MkAbs(args[0]), n))
}

// fakeapi fail CODE | ok | reply TEXT | revoke [FILE]
func cmdFakeAPI(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: fakeapi fail CODE | ok | reply TEXT | revoke [FILE]")
	}
	fake := fix(ts).fake
	switch args[0] {
	case "fail":
		if len(args) != 2 {
			ts.Fatalf("usage: fakeapi fail CODE")
		}
		code, err := strconv.Atoi(args[1])
		ts.Check(err)
		fake.SetFailStatus(code)
	case "ok":
		fake.SetFailStatus(0)
		fake.SetReply("AUTH_OK")
	case "reply":
		if len(args) != 2 {
			ts.Fatalf("usage: fakeapi reply TEXT")
		}
		fake.SetReply(args[1])
	case "revoke":
		// Revoke the access token in the credentials file.
		path := fix(ts).creds
		if len(args) == 2 {
			path = ts.MkAbs(args[1])
		}
		tok, err := tokensOf(path)
		ts.Check(err)
		fake.Revoke(tok.access)
	case "spend":
		// Spend the file's refresh token at the fake (someone else refreshed
		// with it and the file kept it): a refresh with it gets invalid_grant.
		path := fix(ts).creds
		if len(args) == 2 {
			path = ts.MkAbs(args[1])
		}
		tok, err := tokensOf(path)
		ts.Check(err)
		if _, err := fake.Rotate(tok.refresh); err != nil {
			ts.Fatalf("spend: %v", err)
		}
	default:
		ts.Fatalf("fakeapi: unknown action %q", args[0])
	}
}

// mode FILE PERM: FILE's permission bits (after symlinks) are exactly PERM (octal).
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	fi, err := os.Stat(ts.MkAbs(args[0]))
	ts.Check(err)
	got := fi.Mode().Perm()
	if (got == fs.FileMode(want)) == neg {
		ts.Fatalf("%s has mode %#o; want %s%#o", args[0], got, map[bool]string{true: "not ", false: ""}[neg], want)
	}
}

// private DIR: DIR and every directory below it are 0700, every file 0600.
func cmdPrivate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: private DIR")
	}
	n := 0
	err := filepath.WalkDir(ts.MkAbs(args[0]), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		} else if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file or directory (%s)", p, fi.Mode())
		}
		if fi.Mode().Perm() != want {
			return fmt.Errorf("%s has mode %#o, want %#o", p, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	ts.Check(err)
	ts.Logf("%d entries private", n)
}

// issymlink FILE: FILE itself is a symbolic link.
func cmdIsSymlink(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: issymlink FILE")
	}
	fi, err := os.Lstat(ts.MkAbs(args[0]))
	ts.Check(err)
	if (fi.Mode()&fs.ModeSymlink != 0) == neg {
		ts.Fatalf("%s: symlink is %v", args[0], !neg)
	}
}

type tokens struct{ access, refresh string }

// tokensOf reads the login from a credentials file (claudeAiOauth) or from a
// local store document (data.claude_ai_oauth_json).
func tokensOf(path string) (tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tokens{}, err
	}
	var doc struct {
		OAuth *struct {
			AccessToken  string `json:"accessToken"`
			RefreshToken string `json:"refreshToken"`
		} `json:"claudeAiOauth"`
		Data *struct {
			OAuthJSON string `json:"claude_ai_oauth_json"`
		} `json:"data"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return tokens{}, fmt.Errorf("%s: %v", path, err)
	}
	if doc.OAuth == nil && doc.Data != nil && doc.Data.OAuthJSON != "" {
		if err := json.Unmarshal([]byte(`{"claudeAiOauth":`+doc.Data.OAuthJSON+`}`), &doc); err != nil {
			return tokens{}, fmt.Errorf("%s: claude_ai_oauth_json: %v", path, err)
		}
	}
	if doc.OAuth == nil {
		return tokens{}, fmt.Errorf("%s holds no login", path)
	}
	return tokens{doc.OAuth.AccessToken, doc.OAuth.RefreshToken}, nil
}

// sametoken access|refresh A B: the logins in A and B (credentials files or
// store documents) have the same, non-empty token; with ! they differ.
func cmdSameToken(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 || (args[0] != "access" && args[0] != "refresh") {
		ts.Fatalf("usage: sametoken access|refresh A B")
	}
	a, err := tokensOf(ts.MkAbs(args[1]))
	ts.Check(err)
	b, err := tokensOf(ts.MkAbs(args[2]))
	ts.Check(err)
	ta, tb := a.access, b.access
	if args[0] == "refresh" {
		ta, tb = a.refresh, b.refresh
	}
	if ta == "" || tb == "" {
		ts.Fatalf("%s token empty (%s: %v, %s: %v)", args[0], args[1], ta != "", args[2], tb != "")
	}
	if (ta == tb) == neg {
		ts.Fatalf("%s tokens of %s and %s: same=%v", args[0], args[1], args[2], ta == tb)
	}
}

// holdlock NAME: take our flock NAME in the state dir, as another pass would.
func cmdHoldLock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: holdlock NAME")
	}
	f := fix(ts)
	ts.Check(os.MkdirAll(f.state, 0o700))
	l := flock.New(filepath.Join(f.state, args[0]), flock.SetPermissions(0o600))
	ok, err := l.TryLock()
	ts.Check(err)
	if !ok {
		ts.Fatalf("holdlock: %s is held by someone else", args[0])
	}
	f.mu.Lock()
	f.locks[args[0]] = l
	f.mu.Unlock()
}

// releaselock NAME
func cmdReleaseLock(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: releaselock NAME")
	}
	f := fix(ts)
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.locks[args[0]]
	if l == nil {
		ts.Fatalf("releaselock: %s is not held", args[0])
	}
	ts.Check(l.Unlock())
	delete(f.locks, args[0])
}

// lastexit N: the last claude-auth-sync run exited with N.
func cmdLastExit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: lastexit N")
	}
	b, err := os.ReadFile(fix(ts).exitFile)
	if err != nil {
		ts.Fatalf("no exit code recorded (did claude-auth-sync run to its end?): %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != args[0] {
		ts.Fatalf("claude-auth-sync exited %s, want %s", got, args[0])
	}
}

// nosecret: no token the fake ever issued (logins and refreshes) appears in
// anything claude-auth-sync printed in this script, in the journal, or in any
// file in the state dir except the backup (backup.json) and the kept copy of a
// replaced file (previous-credentials.json), which hold logins by design.
func cmdNoSecret(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 0 {
		ts.Fatalf("usage: nosecret")
	}
	f := fix(ts)
	issued := f.fake.Issued()
	var needles []string
	for _, tok := range issued {
		needles = append(needles, tok)
		// The random part alone, in case a prefix was cut off.
		if i := strings.LastIndex(tok, "-"); i >= 0 && len(tok)-i > 16 {
			needles = append(needles, tok[i+1:])
		}
	}

	sources := map[string][]byte{
		"stdout of the last command":        []byte(ts.ReadFile("stdout")),
		"stderr of the last command":        []byte(ts.ReadFile("stderr")),
		"everything claude-auth-sync wrote": readIfExists(ts, f.outLog),
	}
	grams, err := f.journal.sync()
	ts.Check(err)
	sources["the journal"] = []byte(strings.Join(grams, "\n"))
	for _, dir := range []string{f.state, filepath.Join(f.home, ".config", "claude-auth-sync")} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return filepath.SkipDir
			}
			if err != nil {
				return err
			}
			if d.IsDir() || !d.Type().IsRegular() {
				return nil
			}
			if filepath.Dir(p) == f.state && (d.Name() == "backup.json" || d.Name() == "previous-credentials.json") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sources[p] = b
			return nil
		})
		ts.Check(err)
	}
	var leaks []string
	for name, data := range sources {
		for i, n := range needles {
			if bytes.Contains(data, []byte(n)) {
				leaks = append(leaks, fmt.Sprintf("%s holds issued token #%d", name, i))
				break
			}
		}
	}
	sort.Strings(leaks)
	if neg {
		if len(leaks) == 0 {
			ts.Fatalf("no token found in %d sources; expected a leak", len(sources))
		}
		return
	}
	if len(leaks) > 0 {
		ts.Fatalf("secrets leaked:\n%s", strings.Join(leaks, "\n"))
	}
	ts.Logf("no issued token (%d issued) in %d sources", len(issued), len(sources))
}

func readIfExists(ts *testscript.TestScript, path string) []byte {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ts.Check(err)
	return b
}
