package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// The admin's view of a fleet whose health real passes wrote: many users on
// two workstations, each host's pass run by the real binary with the user's
// own scoped token and that workstation's host id, then `fleet` read with a
// fleet-reader token.

// viewHost is one user's home on one workstation: only what a pass needs.
type viewHost struct {
	user, home, label, id string
	env                   []string
	deadline              time.Time // the login's refreshTokenExpiresAt
	wantStatus            string
	code                  int
	out                   string
}

func (h *viewHost) creds() string { return filepath.Join(h.home, ".claude", ".credentials.json") }

func (h *viewHost) syncLog() string {
	b, _ := os.ReadFile(filepath.Join(h.home, ".local", "state", "claude-auth-sync", "sync.log"))
	return string(b)
}

// loginWithDeadline is a credentials file holding l whose login ends at
// deadline (refreshTokenExpiresAt, as newer Claude versions write it).
func loginWithDeadline(l fakeanthropic.Login, deadline time.Time) []byte {
	var f map[string]any
	_ = json.Unmarshal(fakeanthropic.CredentialsJSON(l), &f)
	f["claudeAiOauth"].(map[string]any)["refreshTokenExpiresAt"] = deadline.UnixMilli()
	b, _ := json.MarshalIndent(f, "", "  ")
	return b
}

// provisionAt gives user a scoped token for the document at path (inside
// secret/), with the policy and token provision makes, written to file.
func provisionAt(ctx context.Context, root *vault.Client, user, path, file string) (string, error) {
	if err := root.Sys().PutPolicyWithContext(ctx, store.PolicyFor(user), store.PolicyHCL("secret", path)); err != nil {
		return "", fmt.Errorf("policy of %s: %v", user, err)
	}
	renewable := true
	sec, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{
		Policies: []string{store.PolicyFor(user)}, Period: "768h", DisplayName: store.DisplayNameFor(user), Renewable: &renewable,
	})
	if err != nil {
		return "", fmt.Errorf("token of %s: %v", user, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, os.WriteFile(file, []byte(sec.Auth.ClientToken+"\n"), 0o600)
}

// pass runs one `claude-auth-sync sync` as the host (from any goroutine).
func (h *viewHost) pass() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), "sync")
	cmd.Env = h.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	h.code, h.out = 0, out.String()
	if ee, ok := err.(*exec.ExitError); ok {
		h.code = ee.ExitCode()
	} else if err != nil {
		h.code, h.out = -1, err.Error()
	}
}

// runPasses runs every host's pass, at most workers at once.
func runPasses(hosts []*viewHost, workers int) {
	jobs := make(chan *viewHost)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for h := range jobs {
				h.pass()
			}
		})
	}
	for _, h := range hosts {
		jobs <- h
	}
	close(jobs)
	wg.Wait()
}

// TestFleetViewOfManyUsers: 200 users (CAS_FLEET_VIEW_USERS) on two
// workstations; each host's health written by a real pass (the binary, the
// user's own scoped token, the workstation's host id, the stand-in claude
// against the fake Anthropic). A few users' second host holds a login the
// fake rejects and has no backup of its own (FAIL, and host 1's login is not
// taken); a few users' first host holds a login whose deadline is within 7
// days. `fleet` and `fleet --json` with a fleet-reader token: a row per user
// and host with its label and status, FAIL first, then the nearest deadline,
// exit 1; the reader token gets 403 on the data paths. The time of `fleet
// --json` is reported (FLEET-REPORT), never asserted.
func TestFleetViewOfManyUsers(t *testing.T) {
	n := 200
	if v := os.Getenv("CAS_FLEET_VIEW_USERS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 40 {
			t.Fatalf("CAS_FLEET_VIEW_USERS=%q: want a number of at least 40", v)
		}
	}
	const workers = 6
	ctx := context.Background()
	root := vsrv.Root()
	base := fleetBase(t)
	rig, readerFile := newFleetRig(t, base)
	admin := newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + admin.name + ": {}\n")
	rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	readerTok := strings.TrimSpace(string(must(os.ReadFile(readerFile))))
	rig.secrets = append(rig.secrets, readerTok)
	registerSecrets(func() []string { return []string{readerTok} })

	fake := fakeanthropic.New()
	api := httptest.NewServer(fake.Handler())
	t.Cleanup(api.Close)
	journal := newJournalSink(t)
	var mu sync.Mutex
	var secrets []string // every Vault token and made-up login of the test
	registerSecrets(func() []string { mu.Lock(); defer mu.Unlock(); return append(fake.Issued(), secrets...) })

	// Two workstations: one machine id each, shared by all their users.
	ws := []struct{ id, label string }{{randomHostID(), "ws-a"}, {randomHostID(), "ws-b"}}
	now := time.Now()
	var tag [3]byte
	copy(tag[:], randomHostID())
	start := time.Now()
	homes := t.TempDir()
	hosts := make([][2]*viewHost, n)
	setup := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range setup {
				user := fmt.Sprintf("fv%s-%03d", tag[:], i)
				for k, w := range ws {
					h := &viewHost{user: user, home: filepath.Join(homes, w.label, user), label: w.label, id: w.id, wantStatus: "OK"}
					tok, err := provisionAt(ctx, root, user, base+"/"+user, filepath.Join(h.home, ".config", "claude-auth-sync", "vault-token"))
					if err != nil {
						t.Error(err)
						continue
					}
					// Every login ends on a day of its own, far off; a few
					// within 7 days; a few of the second host's are logins
					// the fake never issued (rejected: a FAIL).
					h.deadline = now.Add(10*24*time.Hour + time.Duration(2*i+k)*time.Minute).Truncate(time.Second)
					l := fake.Issue()
					switch {
					case k == 0 && i%40 == 23:
						h.deadline = now.Add(time.Duration(1+i%6)*24*time.Hour + time.Duration(i)*time.Minute).Truncate(time.Second)
					case k == 1 && i%40 == 7:
						l = fakeanthropic.Login{AccessToken: "sk-ant-oat01-rejected-" + randomHostID(), RefreshToken: "sk-ant-ort01-rejected-" + randomHostID(), ExpiresAt: now.Add(time.Hour)}
						h.wantStatus = "FAIL"
					}
					mu.Lock()
					secrets = append(secrets, tok, l.AccessToken, l.RefreshToken)
					mu.Unlock()
					if err := os.MkdirAll(filepath.Dir(h.creds()), 0o700); err != nil {
						t.Error(err)
						continue
					}
					if err := os.WriteFile(h.creds(), loginWithDeadline(l, h.deadline), 0o600); err != nil {
						t.Error(err)
						continue
					}
					h.env = []string{
						"HOME=" + h.home, "PATH=" + binDir + ":/usr/bin:/bin",
						"VAULT_ADDR=" + vsrv.Addr, "CLAUDE_AUTH_USER=" + user,
						"CLAUDE_AUTH_VAULT_PATH=secret/" + base + "/{user}",
						"ANTHROPIC_BASE_URL=" + api.URL, "CLAUDE_AUTH_CLAUDE_BIN=" + filepath.Join(binDir, "claude"),
						"CLAUDE_AUTH_OAUTH_TOKEN_URL=" + api.URL + "/v1/oauth/token",
						"CLAUDE_AUTH_SYSTEM_CONFIG=" + filepath.Join(h.home, "no-system-config"),
						"CLAUDE_AUTH_JOURNAL_SOCKET=" + journal.path,
						"CLAUDE_AUTH_HOST_ID=" + w.id, "CLAUDE_AUTH_HOST_LABEL=" + w.label,
					}
					hosts[i][k] = h
				}
			}
		})
	}
	for i := range n {
		setup <- i
	}
	close(setup)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	setupTook := time.Since(start)

	// The first workstation's passes, then the second's: each user's main
	// document is the first workstation's.
	start = time.Now()
	for k := range ws {
		round := make([]*viewHost, n)
		for i := range n {
			round[i] = hosts[i][k]
		}
		runPasses(round, workers)
	}
	passesTook := time.Since(start)
	var all []*viewHost
	for i := range n {
		all = append(all, hosts[i][0], hosts[i][1])
	}
	for _, h := range all {
		want := 0
		if h.wantStatus == "FAIL" {
			want = 1
		}
		if h.code != want {
			t.Errorf("%s on %s: sync exit %d; want %d\n%s", h.user, h.label, h.code, want, h.out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i := range n {
		a, b := hosts[i][0], hosts[i][1]
		if b.wantStatus != "FAIL" {
			continue
		}
		// The FAIL host kept its own dead login: the main document's (the
		// first host's) is not its own to restore.
		if got := refreshInFile(b.creds()); !strings.HasPrefix(got, "sk-ant-ort01-rejected-") {
			t.Errorf("%s on %s: the rejected login was replaced (by %s's?)", b.user, b.label, a.label)
		}
		if _, err := root.KVv2("secret").Get(ctx, base+"/"+b.user+"/hosts/"+b.id); err == nil {
			t.Errorf("%s on %s: a per-host document exists after a FAIL with nothing to back up", b.user, b.label)
		}
	}

	// The expected rows: FAIL first, then by the nearest deadline.
	rank := map[string]int{"FAIL": 0, "OK": 1}
	sort.SliceStable(all, func(x, y int) bool {
		if rank[all[x].wantStatus] != rank[all[y].wantStatus] {
			return rank[all[x].wantStatus] < rank[all[y].wantStatus]
		}
		return all[x].deadline.Before(all[y].deadline)
	})
	soon := now.Add(7 * 24 * time.Hour)
	fails, alerts := 0, 0
	for _, h := range all {
		if h.wantStatus == "FAIL" {
			fails++
		}
		if h.wantStatus == "FAIL" || h.deadline.Before(soon) {
			alerts++
		}
	}

	reader := []string{"--token-file", readerFile}
	var times []string
	var res result
	for range 3 {
		start := time.Now()
		res = mustFleet(t, rig, 1, nil, append(reader, "--json")...)
		times = append(times, time.Since(start).Round(time.Millisecond).String())
	}
	f := decodeFleet(t, res.stdout)
	if f.Users != n || f.Hosts != 2*n || f.Alerts != alerts || f.Counts["FAIL"] != fails || f.Counts["OK"] != 2*n-fails || len(f.Counts) != 2 {
		t.Errorf("fleet --json: users %d hosts %d alerts %d counts %v; want %d, %d, %d, %d FAIL and %d OK", f.Users, f.Hosts, f.Alerts, f.Counts, n, 2*n, alerts, fails, 2*n-fails)
	}
	if len(f.Rows) != len(all) {
		t.Fatalf("fleet --json has %d rows; want %d", len(f.Rows), len(all))
	}
	for i, r := range f.Rows {
		h := all[i]
		first := h.id == ws[0].id
		wantDoc := map[bool]string{true: "main", false: "hosts"}[first]
		alert := h.wantStatus == "FAIL" || h.deadline.Before(soon)
		if r.User != h.user || r.HostID != h.id || r.HostLabel != h.label || r.Status != h.wantStatus || r.Doc != wantDoc || r.Owner != first ||
			r.Alert != alert || r.Deadline == nil || r.Deadline.Unix() != h.deadline.Unix() || r.Note != "" {
			t.Errorf("fleet --json row %d = %+v; want %s on %s (%s), %s, doc %s, deadline %s, alert %v", i, r, h.user, h.label, h.id, h.wantStatus, wantDoc, h.deadline.UTC().Format(time.RFC3339), alert)
		}
	}

	text := mustFleet(t, rig, 1, nil, reader...)
	lines := strings.Split(strings.TrimSpace(text.stdout), "\n")
	if len(lines) != len(all)+2 {
		t.Fatalf("fleet printed %d lines; want a header, %d rows and a summary:\n%s", len(lines), len(all), text.stdout)
	}
	// Each line: the row's status, user and host; REPORTED and BACKUP in
	// the past (the same second reads "in 0 s"; a FAIL host never backed
	// up), the access token and the deadline ahead, the version, the doc.
	ago := `(\d+ (s|min|h|d) ago|in 0 s)`
	for i, h := range all {
		backup, doc := ago, `main\*`
		if h.wantStatus == "FAIL" {
			backup = "-"
		}
		if h.id != ws[0].id {
			doc = "hosts"
		}
		// Every non-OK row says why: the FAIL line its pass wrote.
		reason := ""
		if h.wantStatus != "OK" {
			reason = ` +\S.*`
		}
		re := regexp.MustCompile(`^` + h.wantStatus + ` +` + h.user + ` +` + h.label + ` \(` + h.id[:8] + `\) +` + ago + ` +` + backup +
			` +in \d+ (s|min|h) +in \d+ d +dev +` + doc + reason + `$`)
		if !re.MatchString(lines[i+1]) {
			t.Errorf("fleet line %d = %q; want it to match %s", i+1, lines[i+1], re)
		}
	}
	summary := fmt.Sprintf("%d users, %d hosts: %d FAIL, %d OK; %d to act on (FAIL, or a login ending within 7 d)", n, 2*n, fails, 2*n-fails, alerts)
	if lines[len(lines)-1] != summary {
		t.Errorf("fleet summary %q; want %q", lines[len(lines)-1], summary)
	}

	// The reader token reads no login.
	rc := clientWith(readerTok)
	u := all[0]
	for _, p := range []string{"secret/data/" + base + "/" + u.user, "secret/data/" + base + "/" + u.user + "/hosts/" + ws[1].id} {
		if _, err := rc.Logical().ReadWithContext(ctx, p); !forbidden(err) {
			t.Errorf("the reader token reads %s: %v; want 403", p, err)
		}
	}

	// No secret in any pass's output, log or journal line.
	texts := journal.messages()
	for _, h := range all {
		texts = append(texts, h.out, h.syncLog())
	}
	mu.Lock()
	leaked := findSecrets(texts, append(fake.Issued(), secrets...))
	mu.Unlock()
	for _, s := range leaked {
		t.Errorf("a secret (%d chars, prefix %q) appears in a pass's output or logs", len(s), s[:min(8, len(s))])
	}
	t.Logf("FLEET-REPORT fleet --json, %d users x 2 hosts whose health real passes wrote (%d FAIL, %d alerts; loopback Vault dev server, 2 cores): %s (3 runs, whole process); setup %s, %d passes %d at once %s",
		n, fails, alerts, strings.Join(times, ", "), setupTook.Round(time.Millisecond), 2*n, workers, passesTook.Round(time.Millisecond))
}
