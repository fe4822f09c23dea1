package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// The fleet: one user on several workstations, each host's health in the
// main document's custom_metadata, `fleet` reading it for an admin with a
// read-only token. The agents' side (writing health, the per-host documents)
// is simulated here by writing as root exactly what the format says an agent
// writes.

// fleetBase is a KV base path of the test's own, so other tests' users (on
// the shared dev server) do not appear in its fleet.
func fleetBase(t *testing.T) string {
	var rnd [4]byte
	rand.Read(rnd[:])
	return "fleet-e2e-" + hex.EncodeToString(rnd[:]) + "/claude-users"
}

// fleetRig is a provision rig whose config puts the users' documents under
// base, and that keeps a fleet-reader token in readerFile.
func newFleetRig(t *testing.T, base string) (rig *provisionRig, readerFile string) {
	t.Helper()
	rig = newProvisionRig(t)
	cfg, _ := os.ReadFile(rig.config)
	cfg = append(cfg, []byte("CLAUDE_AUTH_VAULT_PATH=secret/"+base+"/{user}\n")...)
	if err := os.WriteFile(rig.config, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	return rig, filepath.Join(rig.dir, "fleet-reader-token")
}

// hostHealth is the custom_metadata value an agent writes, spelled out from
// the format (not made by the code under test).
func hostHealth(label, status string, fields map[string]time.Time, version, doc string) string {
	parts := []string{"label=" + label, "status=" + status}
	for _, k := range []string{"status_at", "backup_at", "expires_at", "deadline", "setup_expires"} {
		if t, ok := fields[k]; ok {
			parts = append(parts, k+"="+strconv.FormatInt(t.Unix(), 10))
		}
	}
	return strings.Join(append(parts, "version="+version, "doc="+doc), ";")
}

// putUser writes a user's main document (as an agent's backup would) and
// merges custom into its metadata (as the agents' health writes do).
func putUser(t *testing.T, c *vault.Client, base, user string, custom map[string]any) {
	t.Helper()
	if err := writeUser(c, base, user, custom); err != nil {
		t.Fatal(err)
	}
}

func writeUser(c *vault.Client, base, user string, custom map[string]any) error {
	if _, err := c.KVv2("secret").Put(context.Background(), base+"/"+user, map[string]any{"claude_ai_oauth_json": `{"note":"not a real login"}`, "backed_up_at": time.Now().UTC().Format(time.RFC3339)}); err != nil {
		return fmt.Errorf("write %s's document: %v", user, err)
	}
	if custom == nil {
		return nil
	}
	return mergeMeta(c, base+"/"+user, custom)
}

// mergeMeta merges custom into the document's custom_metadata, as an agent
// does: a JSON merge patch of that field alone.
func mergeMeta(c *vault.Client, path string, custom map[string]any) error {
	if _, err := c.Logical().JSONMergePatch(context.Background(), "secret/metadata/"+path, map[string]any{"custom_metadata": custom}); err != nil {
		return fmt.Errorf("patch the metadata of %s: %v", path, err)
	}
	return nil
}

func patchMeta(t *testing.T, c *vault.Client, path string, custom map[string]any) {
	t.Helper()
	if err := mergeMeta(c, path, custom); err != nil {
		t.Fatal(err)
	}
}

// runFleet runs the real binary's fleet command as root (the admin) with the
// rig's config; the output is kept for the secret scan.
func runFleet(t *testing.T, rig *provisionRig, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "claude-auth-sync"), append([]string{"fleet", "--config", rig.config}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + rig.dir}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("fleet: %v", err)
	}
	rig.outputs = append(rig.outputs, out.String(), errb.String())
	return result{code, out.String(), errb.String()}
}

func mustFleet(t *testing.T, rig *provisionRig, want int, env []string, args ...string) result {
	t.Helper()
	r := runFleet(t, rig, env, args...)
	if r.code != want {
		t.Fatalf("fleet %v: exit %d; want %d\nstdout:\n%s\nstderr:\n%s", args, r.code, want, r.stdout, r.stderr)
	}
	return r
}

// fleetJSON is the part of `fleet --json` the tests look at.
type fleetJSON struct {
	Version    int            `json:"version"`
	Users      int            `json:"users"`
	Hosts      int            `json:"hosts"`
	Alerts     int            `json:"alerts"`
	WithinDays int            `json:"within_days"`
	Counts     map[string]int `json:"counts"`
	Rows       []struct {
		User      string     `json:"user"`
		HostID    string     `json:"host_id"`
		HostLabel string     `json:"host_label"`
		Owner     bool       `json:"owner"`
		Status    string     `json:"status"`
		Deadline  *time.Time `json:"deadline"`
		DueAt     *time.Time `json:"due_at"`
		Doc       string     `json:"doc"`
		Note      string     `json:"note"`
		Alert     bool       `json:"alert"`
	} `json:"rows"`
}

func decodeFleet(t *testing.T, out string) fleetJSON {
	t.Helper()
	var f fleetJSON
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("fleet --json is not JSON: %v\n%s", err, out)
	}
	return f
}

func (f fleetJSON) order() []string {
	var out []string
	for _, r := range f.Rows {
		out = append(out, r.Status+" "+r.User+" "+r.HostID)
	}
	return out
}

// TestFleetCommand: provision mints a fleet-reader token; agents' health for
// four users (a FAIL on a second host, a login ending in 3 days, a healthy
// user on two hosts, a user no agent reports for) is read by `fleet` and
// `fleet --json` with that token: rows sorted worst first, exit 1 while a
// FAIL or a near deadline is there, 0 once all is well. The reader token
// lists and reads metadata only: every data path is 403, and Vault's audit
// log shows fleet asked for no data path.
func TestFleetCommand(t *testing.T) {
	base := fleetBase(t)
	rig, readerFile := newFleetRig(t, base)
	u := newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n")
	ctx := context.Background()

	// Without an admin token provision says what it needs for the reader.
	res := rig.mustRun(false, 0, "--fleet-reader-token", readerFile)
	if !strings.Contains(res.stdout, "\nfleet-reader WARN needs an admin token (VAULT_TOKEN or --admin-token-file) for a new Vault token (no token file)") {
		t.Errorf("provision without an admin token, the reader line:\n%s", res.stdout)
	}
	if _, err := os.Lstat(readerFile); !os.IsNotExist(err) {
		t.Fatalf("a run without an admin token wrote the reader token file (%v)", err)
	}
	res = rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	line := regexp.MustCompile(`(?m)^fleet-reader .*$`).FindString(res.stdout)
	// "wrote", or "rewrote" when an earlier run in this Vault left the policy.
	if !regexp.MustCompile(`^fleet-reader OK (re)?wrote policy claude-auth-sync-fleet-reader`).MatchString(line) {
		t.Errorf("provision's reader line does not write the policy: %q", line)
	}
	for _, want := range []string{"minted a token (no token file; periodic 768h, orphan, only policy claude-auth-sync-fleet-reader)", "installed " + readerFile + " (0600)"} {
		if !strings.Contains(line, want) {
			t.Errorf("provision's reader line lacks %q: %q", want, line)
		}
	}
	mode, uid, _ := statOwner(t, readerFile)
	if mode != 0o600 || uid != 0 {
		t.Errorf("reader token file: mode %v uid %d; want 0600 root's", mode, uid)
	}
	b, _ := os.ReadFile(readerFile)
	readerTok := strings.TrimSpace(string(b))
	rig.secrets = append(rig.secrets, readerTok)
	registerSecrets(func() []string { return []string{readerTok} })
	s, err := vsrv.Root().Auth().Token().Lookup(readerTok)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Data["policies"]); got != "[claude-auth-sync-fleet-reader]" {
		t.Errorf("reader token policies = %s; want only claude-auth-sync-fleet-reader", got)
	}
	if got := fmt.Sprint(s.Data["period"]); got != "2764800" {
		t.Errorf("reader token period = %s; want 768h", got)
	}
	// Again: the live token is kept, the file untouched.
	id := identify(t, readerFile)
	res = rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	// (Nothing changed, so no fleet-reader line: the summary counts it.)
	if strings.Contains(res.stdout, "fleet-reader ") || !strings.Contains(res.stdout, " unchanged, ") || identify(t, readerFile) != id {
		t.Errorf("second run replaced the reader token or said something else:\n%s", res.stdout)
	}

	// The agents' health, as they would leave it.
	root := vsrv.Root()
	now := time.Now()
	hostA, hostB := "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "f9e8d7c6b5a4938271605f4e3d2c1b0a"
	ok := func(label string, deadline time.Duration, doc string) string {
		return hostHealth(label, "OK", map[string]time.Time{"status_at": now.Add(-5 * time.Minute), "backup_at": now.Add(-5 * time.Minute),
			"expires_at": now.Add(5 * time.Hour), "deadline": now.Add(deadline)}, "1.4.0", doc)
	}
	putUser(t, root, base, "alice", map[string]any{"owner_host": hostA,
		"host." + hostA: ok("ws-01", 27*24*time.Hour, "main"),
		"host." + hostB: ok("ws-02", 40*24*time.Hour, "hosts"),
		"vaultwarden_x": "another tool's key"})
	if _, err := root.KVv2("secret").Put(ctx, base+"/alice/hosts/"+hostB, map[string]any{"claude_ai_oauth_json": "{}"}); err != nil {
		t.Fatal(err)
	}
	putUser(t, root, base, "bob", map[string]any{"owner_host": hostA,
		"host." + hostA: ok("ws-01", 20*24*time.Hour, "main"),
		"host." + hostB: hostHealth("ws-02", "FAIL", map[string]time.Time{"status_at": now.Add(-2 * time.Hour), "backup_at": now.Add(-3 * 24 * time.Hour),
			"expires_at": now.Add(-2 * 24 * time.Hour), "deadline": now.Add(25 * 24 * time.Hour)}, "1.4.0", "hosts") + ";a_newer_key=ignored"})
	putUser(t, root, base, "carol", map[string]any{"owner_host": hostA, "host." + hostA: ok("ws-01", 3*24*time.Hour, "main")})
	putUser(t, root, base, "dave", nil) // a backup from an agent that does not report yet

	// The audit log shows every path fleet asks for.
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	auditName := "fleet-" + strings.Split(base, "/")[0]
	if err := root.Sys().EnableAuditWithOptions(auditName, &vault.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": auditLog}}); err != nil {
		t.Fatalf("enable an audit device: %v", err)
	}
	auditOn := true
	disableAudit := func() {
		if auditOn {
			auditOn = false
			if err := root.Sys().DisableAudit(auditName); err != nil {
				t.Errorf("disable the audit device: %v", err)
			}
		}
	}
	defer disableAudit()

	reader := []string{}
	res = mustFleet(t, rig, 1, reader, "--token-file", readerFile)
	t.Logf("fleet:\n%s", res.stdout)
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	wantOrder := []string{`^STATUS +USER +HOST +REPORTED +BACKUP +ACCESS TOKEN +DEADLINE +VERSION +DOC`,
		`^FAIL +bob +ws-02 \(f9e8d7c6\) +2 h ago +3 d ago +2 d ago +in 2[45] d +1\.4\.0 +hosts +the agent gave no reason$`, // an older agent's health has no reason field
		`^UNKNOWN +dave +- +- +- +- +- +- +- +no health yet`,
		`^OK +carol +ws-01 \(0a1b2c3d\) +[45] min ago +[45] min ago +in [45] h +in [23] d +1\.4\.0 +main\*$`,
		`^OK +bob +ws-01 \(0a1b2c3d\) .* in (19|20) d +1\.4\.0 +main\*$`,
		`^OK +alice +ws-01 \(0a1b2c3d\) .* in 2[67] d +1\.4\.0 +main\*$`,
		`^OK +alice +ws-02 \(f9e8d7c6\) .* in (39|40) d +1\.4\.0 +hosts$`,
		`^4 users, 5 hosts: 1 FAIL, 1 UNKNOWN, 4 OK; 2 to act on \(FAIL, or a login ending within 7 d\)$`}
	if len(lines) != len(wantOrder) {
		t.Fatalf("fleet printed %d lines; want %d:\n%s", len(lines), len(wantOrder), res.stdout)
	}
	for i, re := range wantOrder {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("fleet line %d = %q; want it to match %s", i, lines[i], re)
		}
	}

	res = mustFleet(t, rig, 1, reader, "--token-file", readerFile, "--json")
	f := decodeFleet(t, res.stdout)
	if got, want := strings.Join(f.order(), "\n"), strings.Join([]string{"FAIL bob " + hostB, "UNKNOWN dave ", "OK carol " + hostA,
		"OK bob " + hostA, "OK alice " + hostA, "OK alice " + hostB}, "\n"); got != want {
		t.Errorf("fleet --json rows:\n%s\nwant:\n%s", got, want)
	}
	if f.Version != 1 || f.Users != 4 || f.Hosts != 5 || f.Alerts != 2 || f.Counts["FAIL"] != 1 || f.Counts["OK"] != 4 || f.Counts["UNKNOWN"] != 1 {
		t.Errorf("fleet --json header: %+v", f)
	}
	if r := f.Rows[2]; !r.Alert || !r.Owner || r.Doc != "main" || r.DueAt == nil || r.Deadline == nil {
		t.Errorf("carol's row (deadline in 3 days): %+v", r)
	}
	if r := f.Rows[0]; !r.Alert || r.Owner || r.Doc != "hosts" || r.HostLabel != "ws-02" {
		t.Errorf("bob's FAIL row: %+v", r)
	}
	disableAudit()
	checkAuditPaths(t, auditLog, base)

	// The reader token reads no login: every data path is 403, and it cannot
	// change the metadata it reads.
	rc := clientWith(readerTok)
	for _, p := range []string{"secret/data/" + base + "/alice", "secret/data/" + base + "/alice/hosts/" + hostB, "secret/data/" + base + "/nobody"} {
		if _, err := rc.Logical().ReadWithContext(ctx, p); !forbidden(err) {
			t.Errorf("the reader token reads %s: %v; want 403", p, err)
		}
		if _, err := rc.Logical().WriteWithContext(ctx, p, map[string]any{"data": map[string]any{"x": "1"}}); !forbidden(err) {
			t.Errorf("the reader token writes %s: %v; want 403", p, err)
		}
	}
	if _, err := rc.Logical().JSONMergePatch(ctx, "secret/metadata/"+base+"/alice", map[string]any{"custom_metadata": map[string]any{"x": "1"}}); !forbidden(err) {
		t.Errorf("the reader token patches metadata: %v; want 403", err)
	}
	if _, err := rc.Logical().ReadWithContext(ctx, "secret/metadata/workstation/claude-users/"+u.name); !forbidden(err) {
		t.Errorf("the reader token reads metadata outside its base: %v; want 403", err)
	}

	// Exit codes follow the fleet's state: the FAIL recovers (1, carol's
	// deadline), then carol logs in again (0); --within 2 ignores 3 days.
	patchMeta(t, root, base+"/bob", map[string]any{"host." + hostB: ok("ws-02", 25*24*time.Hour, "hosts")})
	res = mustFleet(t, rig, 1, reader, "--token-file", readerFile, "--json")
	if f := decodeFleet(t, res.stdout); f.Alerts != 1 || f.Rows[0].User != "dave" || f.Rows[1].User != "carol" || !f.Rows[1].Alert {
		t.Errorf("after bob's recovery: %s", strings.Join(f.order(), ", "))
	}
	mustFleet(t, rig, 0, reader, "--token-file", readerFile, "--within", "2")
	patchMeta(t, root, base+"/carol", map[string]any{"host." + hostA: ok("ws-01", 30*24*time.Hour, "main")})
	res = mustFleet(t, rig, 0, reader, "--token-file", readerFile)
	if !strings.Contains(res.stdout, "4 users, 5 hosts: 1 UNKNOWN, 5 OK\n") {
		t.Errorf("all well:\n%s", res.stdout)
	}
	// A deadline that has passed counts whatever --within says.
	patchMeta(t, root, base+"/carol", map[string]any{"host." + hostA: ok("ws-01", -time.Hour, "main")})
	mustFleet(t, rig, 1, reader, "--token-file", readerFile, "--within", "0")

	// The same with the admin's token from VAULT_TOKEN.
	mustFleet(t, rig, 1, []string{"VAULT_TOKEN=" + vsrv.RootTokenValue()})

	// Refusals: a base the reader may not list (77), the user's own token
	// (77), no token (78), a path without {user} last (78), Vault away (75).
	if r := mustFleet(t, rig, 77, reader, "--token-file", readerFile, "--vault-path", "secret/elsewhere/{user}"); !strings.Contains(r.stderr, "403") {
		t.Errorf("a base the reader may not list: %s", r.stderr)
	}
	mustFleet(t, rig, 77, []string{"VAULT_TOKEN=" + rig.readToken(u)})
	if r := mustFleet(t, rig, 78, reader); !strings.Contains(r.stderr, "no Vault token") {
		t.Errorf("no token: %s", r.stderr)
	}
	mustFleet(t, rig, 78, reader, "--token-file", readerFile, "--vault-path", "secret/{user}/claude")
	mustFleet(t, rig, 75, reader, "--token-file", readerFile, "--vault-addr", "http://127.0.0.1:1")
	mustFleet(t, rig, 2, reader, "--within", "-1")
	// The token file is the admin's own, private, and not a link.
	link := filepath.Join(rig.dir, "reader-link")
	os.Symlink(readerFile, link)
	if r := mustFleet(t, rig, 78, reader, "--token-file", link); !strings.Contains(r.stderr, "is a symlink") {
		t.Errorf("a symlinked token file: %s", r.stderr)
	}
	os.Chmod(readerFile, 0o640)
	mustFleet(t, rig, 78, reader, "--token-file", readerFile)
	os.Chmod(readerFile, 0o600)
	// The reader token survives it all (fleet renews it; it is periodic).
	if s, err := vsrv.Root().Auth().Token().Lookup(readerTok); err != nil || fmt.Sprint(s.Data["ttl"]) == "0" {
		t.Errorf("the reader token after the runs: %v", err)
	}
}

// checkAuditPaths: in Vault's audit log, no request fleet made (the reader
// token's display name) touched a data path, and it did list the base.
func checkAuditPaths(t *testing.T, auditLog, base string) {
	t.Helper()
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var listed, read int
	for sc.Scan() {
		var e struct {
			Type string `json:"type"`
			Auth struct {
				DisplayName string `json:"display_name"`
			} `json:"auth"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Type != "request" || e.Auth.DisplayName != "token-claude-auth-sync-fleet-reader" {
			continue
		}
		switch p := e.Request.Path; {
		case strings.HasPrefix(p, "secret/data/"):
			t.Errorf("fleet asked Vault for a data path: %s %s", e.Request.Operation, p)
		case e.Request.Operation == "list" && strings.TrimSuffix(p, "/") == "secret/metadata/"+base:
			listed++
		case e.Request.Operation == "read" && strings.HasPrefix(p, "secret/metadata/"+base+"/"):
			read++
		}
	}
	if listed != 2 || read != 8 {
		t.Errorf("the audit log shows %d lists and %d metadata reads by the reader; want 2 and 8 (two runs, four users)", listed, read)
	}
}

// TestFleetUserPolicy: the user's policy as provision writes it, tried with
// the user's own token on the real server: it writes its main document and
// its own per-host documents, patches only custom_metadata of its main
// document, and gets 403 for another user's documents and metadata, for
// max_versions, cas_required and delete_version_after, and for listing the
// users. A policy an older version wrote is rewritten by one run.
func TestFleetUserPolicy(t *testing.T) {
	base := fleetBase(t)
	rig, _ := newFleetRig(t, base)
	alice, bob := newOSUser(t, "cas-f-"), newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + alice.name + ": {}\n  " + bob.name + ": {}\n")
	rig.mustRun(true, 0)
	ctx := context.Background()
	ac := clientWith(rig.readToken(alice))
	mine, theirs := base+"/"+alice.name, base+"/"+bob.name
	hostID := "0a1b2c3d4e5f60718293a4b5c6d7e8f9"

	kv := ac.KVv2("secret")
	if _, err := kv.Put(ctx, mine, map[string]any{"claude_ai_oauth_json": "{}"}); err != nil {
		t.Fatalf("alice writes her main document: %v", err)
	}
	if _, err := kv.Put(ctx, mine+"/hosts/"+hostID, map[string]any{"claude_ai_oauth_json": "{}"}); err != nil {
		t.Errorf("alice creates her per-host document: %v", err)
	}
	if _, err := kv.Put(ctx, mine+"/hosts/"+hostID, map[string]any{"claude_ai_oauth_json": "{}", "backed_up_at": "now"}, vault.WithCheckAndSet(1)); err != nil {
		t.Errorf("alice updates her per-host document: %v", err)
	}
	if s, err := kv.Get(ctx, mine+"/hosts/"+hostID); err != nil || s.Data["backed_up_at"] != "now" {
		t.Errorf("alice reads her per-host document: %v", err)
	}
	if _, err := ac.Logical().ReadWithContext(ctx, "secret/metadata/"+mine+"/hosts/"+hostID); err != nil {
		t.Errorf("alice reads her per-host document's metadata: %v", err)
	}
	health := "label=ws-01;status=OK;status_at=" + strconv.FormatInt(time.Now().Unix(), 10) + ";doc=main"
	patch := func(path string, body map[string]any) error {
		_, err := ac.Logical().JSONMergePatch(ctx, "secret/metadata/"+path, body)
		return err
	}
	if err := patch(mine, map[string]any{"custom_metadata": map[string]any{"host." + hostID: health, "owner_host": hostID}}); err != nil {
		t.Fatalf("alice patches her custom_metadata: %v", err)
	}
	// A second host's key merges in beside the first.
	if err := patch(mine, map[string]any{"custom_metadata": map[string]any{"host.other": "status=WARN"}}); err != nil {
		t.Fatalf("alice patches a second host's key: %v", err)
	}
	md, err := vsrv.Root().KVv2("secret").GetMetadata(ctx, mine)
	if err != nil || md.CustomMetadata["host."+hostID] != health || md.CustomMetadata["host.other"] != "status=WARN" || md.CustomMetadata["owner_host"] != hostID {
		t.Errorf("alice's custom_metadata after two patches: %v, %v", md, err)
	}
	// A retired host's key goes with a null.
	if err := patch(mine, map[string]any{"custom_metadata": map[string]any{"host.other": nil}}); err != nil {
		t.Fatalf("alice removes a host's key: %v", err)
	}
	md, err = vsrv.Root().KVv2("secret").GetMetadata(ctx, mine)
	if _, there := md.CustomMetadata["host.other"]; err != nil || there || md.CustomMetadata["host."+hostID] != health {
		t.Errorf("alice's custom_metadata after removing a key: %v, %v", md.CustomMetadata, err)
	}
	for name, body := range map[string]map[string]any{
		"max_versions":            {"max_versions": 1},
		"cas_required":            {"cas_required": true},
		"delete_version_after":    {"delete_version_after": "1s"},
		"custom_metadata and max": {"custom_metadata": map[string]any{"a": "b"}, "max_versions": 1},
	} {
		if err := patch(mine, body); !forbidden(err) {
			t.Errorf("alice patches %s of her metadata: %v; want 403", name, err)
		}
	}
	if _, err := ac.Logical().WriteWithContext(ctx, "secret/metadata/"+mine, map[string]any{"custom_metadata": map[string]any{"a": "b"}}); !forbidden(err) {
		t.Errorf("alice POSTs her metadata (replacing every key): %v; want 403", err)
	}
	if _, err := ac.Logical().DeleteWithContext(ctx, "secret/metadata/"+mine+"/hosts/"+hostID); !forbidden(err) {
		t.Errorf("alice deletes her per-host document's metadata: %v; want 403", err)
	}
	if err := patch(mine+"/hosts/"+hostID, map[string]any{"custom_metadata": map[string]any{"a": "b"}}); !forbidden(err) {
		t.Errorf("alice patches her per-host document's metadata: %v; want 403", err)
	}

	// bob's documents exist; alice may touch none of them.
	bc := clientWith(rig.readToken(bob)).KVv2("secret")
	if _, err := bc.Put(ctx, theirs, map[string]any{"claude_ai_oauth_json": "{}"}); err != nil {
		t.Fatalf("bob writes his document: %v", err)
	}
	for _, p := range []string{"secret/data/" + theirs, "secret/data/" + theirs + "/hosts/" + hostID, "secret/metadata/" + theirs, "secret/metadata/" + theirs + "/hosts/" + hostID} {
		if _, err := ac.Logical().ReadWithContext(ctx, p); !forbidden(err) {
			t.Errorf("alice reads %s: %v; want 403", p, err)
		}
	}
	for _, p := range []string{theirs, theirs + "/hosts/" + hostID, mine + "x", mine + "x/hosts/" + hostID} {
		if _, err := kv.Put(ctx, p, map[string]any{"x": "1"}); !forbidden(err) {
			t.Errorf("alice writes %s: %v; want 403", p, err)
		}
	}
	if err := patch(theirs, map[string]any{"custom_metadata": map[string]any{"host." + hostID: "status=FAIL"}}); !forbidden(err) {
		t.Errorf("alice patches bob's custom_metadata: %v; want 403", err)
	}
	if _, err := ac.Logical().ListWithContext(ctx, "secret/metadata/"+base); !forbidden(err) {
		t.Errorf("alice lists the users: %v; want 403", err)
	}

	// A fleet whose policies an older version wrote converges in one run.
	old := fmt.Sprintf("path \"secret/data/%[1]s\" {\n  capabilities = [\"create\", \"read\", \"update\"]\n}\npath \"secret/metadata/%[1]s\" {\n  capabilities = [\"read\"]\n}\npath \"auth/token/lookup-self\" {\n  capabilities = [\"read\"]\n}\npath \"auth/token/renew-self\" {\n  capabilities = [\"update\"]\n}\n", mine)
	if err := vsrv.Root().Sys().PutPolicy("workstation-claude-"+alice.name, old); err != nil {
		t.Fatal(err)
	}
	if err := patch(mine, map[string]any{"custom_metadata": map[string]any{"host." + hostID: health}}); !forbidden(err) {
		t.Fatalf("with the old policy alice patches her metadata: %v; want 403 (the test proves nothing)", err)
	}
	res := rig.mustRun(true, 0)
	if l := lineFor(res.stdout, alice.name); !strings.Contains(l, " OK rewrote policy workstation-claude-"+alice.name) {
		t.Errorf("provision over the old policy: %q", l)
	}
	if l := lineFor(res.stdout, bob.name); l != "" { // unchanged: no line
		t.Errorf("provision, bob: %q", l)
	}
	if err := patch(mine, map[string]any{"custom_metadata": map[string]any{"host." + hostID: health}}); err != nil {
		t.Errorf("after one provision run alice patches her metadata: %v", err)
	}
	if res := rig.mustRun(true, 0); !strings.Contains(res.stdout, "0 changed") {
		t.Errorf("the run after that changed something:\n%s", res.stdout)
	}

	// An upgrade from the escapable glob of earlier versions, with a token
	// such a version minted (it carries the default policy): the hourly run
	// without an admin token says which policy needs rewriting, and nothing
	// about bob's; the run with one rewrites it and the reader's.
	if err := vsrv.Root().Sys().PutPolicy("workstation-claude-"+alice.name, fmt.Sprintf(oldUserPolicy, mine)); err != nil {
		t.Fatal(err)
	}
	if err := vsrv.Root().Sys().PutPolicy(fleet.ReaderPolicy, fmt.Sprintf(oldReaderPolicy, base)); err != nil {
		t.Fatal(err)
	}
	oldTok := mintLikeProvision(t, store.DisplayNameFor(alice.name), false, "workstation-claude-"+alice.name)
	rig.secrets = append(rig.secrets, oldTok)
	if err := os.WriteFile(alice.tokenFile(), []byte(oldTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res = rig.mustRun(false, 0)
	if l := lineFor(res.stdout, alice.name); !strings.Contains(l, " WARN needs an admin token") || !strings.Contains(l, "a rewrite of policy workstation-claude-"+alice.name+" (it is the old one") {
		t.Errorf("the hourly run over the old policy: %q", l)
	}
	if l := lineFor(res.stdout, bob.name); strings.Contains(l, "rewrite") {
		t.Errorf("the hourly run, bob (current policy): %q", l)
	}
	res = rig.mustRun(true, 0)
	if l := lineFor(res.stdout, alice.name); !strings.Contains(l, " OK rewrote policy workstation-claude-"+alice.name) {
		t.Errorf("provision over the old glob: %q", l)
	}
	if !strings.Contains(res.stdout, "fleet-reader OK rewrote policy "+fleet.ReaderPolicy) {
		t.Errorf("provision without --fleet-reader-token did not rewrite the old reader policy:\n%s", res.stdout)
	}
	if got, _ := vsrv.Root().Sys().GetPolicy(fleet.ReaderPolicy); got != fleet.ReaderPolicyHCL("secret", base) {
		t.Errorf("the reader policy after provision:\n%s", got)
	}
	res = rig.mustRun(false, 0)
	if l := lineFor(res.stdout, alice.name); l != "" { // unchanged: no line
		t.Errorf("the hourly run after the rewrite: %q", l)
	}
}

// TestFleetScale: `fleet --json` over 1,000 users (CAS_FLEET_USERS) with two
// hosts each, one in the main document and one in its own per-host document,
// read with a fleet-reader token on the loopback Vault. The time is reported
// (FLEET-REPORT), never asserted.
func TestFleetScale(t *testing.T) {
	n := 1000
	if v := os.Getenv("CAS_FLEET_USERS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	base := fleetBase(t)
	rig, readerFile := newFleetRig(t, base)
	u := newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n")
	rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	b, _ := os.ReadFile(readerFile)
	rig.secrets = append(rig.secrets, strings.TrimSpace(string(b)))

	start := time.Now()
	root := vsrv.Root()
	now := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				user := fmt.Sprintf("user%04d", i)
				h1, h2 := fmt.Sprintf("%032x", 2*i), fmt.Sprintf("%032x", 2*i+1)
				st := "OK"
				if i%100 == 7 {
					st = "FAIL"
				}
				err := writeUser(root, base, user, map[string]any{"owner_host": h1,
					"host." + h1: hostHealth("ws-a", "OK", map[string]time.Time{"status_at": now, "backup_at": now, "expires_at": now.Add(8 * time.Hour), "deadline": now.Add(time.Duration(10+i%50) * 24 * time.Hour)}, "1.4.0", "main"),
					"host." + h2: hostHealth("ws-b", st, map[string]time.Time{"status_at": now, "backup_at": now, "expires_at": now.Add(8 * time.Hour), "deadline": now.Add(time.Duration(20+i%50) * 24 * time.Hour)}, "1.4.0", "hosts")})
				if err == nil {
					_, err = root.KVv2("secret").Put(context.Background(), base+"/"+user+"/hosts/"+h2, map[string]any{"claude_ai_oauth_json": "{}"})
				}
				if err != nil {
					t.Errorf("user %s: %v", user, err)
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("wrote %d users x 2 hosts (3 writes each) in %v", n, time.Since(start).Round(time.Millisecond))

	if t.Failed() {
		t.FailNow()
	}
	fails := (n + 92) / 100 // users 7, 107, 207 …
	wantCode := 0
	if fails > 0 {
		wantCode = 1
	}
	var times []string
	for range 3 {
		start := time.Now()
		res := mustFleet(t, rig, wantCode, nil, "--token-file", readerFile, "--json")
		times = append(times, time.Since(start).Round(time.Millisecond).String())
		f := decodeFleet(t, res.stdout)
		if f.Users != n || f.Hosts != 2*n || f.Counts["FAIL"] != fails || (fails > 0 && f.Rows[0].Status != "FAIL") {
			t.Fatalf("fleet --json over %d users: users %d hosts %d counts %v first %+v", n, f.Users, f.Hosts, f.Counts, f.Rows[0])
		}
	}
	t.Logf("FLEET-REPORT fleet --json, %d users x 2 hosts (1 LIST, %d metadata reads 16 at once, the token's lookup and renew; loopback Vault dev server, 2 cores): %s (3 runs, whole process)", n, n, strings.Join(times, ", "))
}

// TestFleetReaderFile: provision writes the reader token only where nobody
// else can interfere: a link at the file's name, a directory others may
// write or that is not root's are refused (FAIL, nothing written, nothing
// minted); a token others could read is replaced and revoked; a user's token
// in the file is replaced by a reader token.
func TestFleetReaderFile(t *testing.T) {
	base := fleetBase(t)
	rig, _ := newFleetRig(t, base)
	u := newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n")
	rig.mustRun(true, 0)
	readerLine := func(res result) string { return regexp.MustCompile(`(?m)^fleet-reader .*$`).FindString(res.stdout) }

	refuse := func(name, file, want string) {
		t.Helper()
		before := accessorCount(t)
		res := rig.run(true, "--fleet-reader-token", file)
		if l := readerLine(res); res.code != 1 || !strings.Contains(l, "fleet-reader FAIL refusing the reader token file: ") || !strings.Contains(l, want) {
			t.Errorf("%s: exit %d, line %q; want exit 1 and a refusal with %q", name, res.code, l, want)
		}
		if n := accessorCount(t); n != before {
			t.Errorf("%s: %d tokens minted", name, n-before)
		}
	}
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	refuse("a world-writable dir", filepath.Join(open, "reader"), "is writable by group or others (mode 0777)")
	if entries, _ := os.ReadDir(open); len(entries) != 0 {
		t.Errorf("something was written into the world-writable dir: %v", entries)
	}
	refuse("a user's dir", filepath.Join(u.home, "reader"), fmt.Sprintf("is owned by uid %d, not by root (uid 0)", u.uid))

	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, []byte("root's own file\n"), 0o644)
	link := filepath.Join(dir, "reader")
	os.Symlink(target, link)
	refuse("a symlink", link, link+" is a symlink")
	if b, _ := os.ReadFile(target); string(b) != "root's own file\n" {
		t.Errorf("the link's target was written: %q", b)
	}
	os.Remove(link)

	// A user's token in the file is not a reader token: replaced.
	file := filepath.Join(dir, "reader")
	os.WriteFile(file, []byte(rig.readToken(u)+"\n"), 0o600)
	res := rig.mustRun(true, 0, "--fleet-reader-token", file)
	if l := readerLine(res); !strings.Contains(l, "fleet-reader OK minted a token (the token file holds a token with policies workstation-claude-"+u.name+", not only claude-auth-sync-fleet-reader") {
		t.Errorf("a user's token in the reader file: %q", l)
	}
	first := strings.TrimSpace(string(must(os.ReadFile(file))))
	rig.secrets = append(rig.secrets, first)

	// Readable by others (the dir open to them): replaced, and the old one revoked.
	os.Chmod(dir, 0o755)
	os.Chmod(file, 0o644)
	res = rig.mustRun(true, 0, "--fleet-reader-token", file)
	if l := readerLine(res); !strings.Contains(l, "fleet-reader WARN minted a token (the token file was readable by other users (mode 0644") || !strings.Contains(l, "revoked the exposed token") {
		t.Errorf("an exposed reader token: %q", l)
	}
	second := strings.TrimSpace(string(must(os.ReadFile(file))))
	rig.secrets = append(rig.secrets, second)
	if second == first {
		t.Fatal("the exposed reader token was kept")
	}
	if _, err := clientWith(first).Auth().Token().LookupSelf(); !forbidden(err) {
		t.Errorf("the exposed reader token after provision: %v; want 403 (revoked)", err)
	}
	if mode, uid, _ := statOwner(t, file); mode != 0o600 || uid != 0 {
		t.Errorf("the new reader token file: %v uid %d", mode, uid)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestFleetReaderPolicyOld: the reader token under the reader policy of an
// earlier version (its glob; the token has no default policy, so Vault
// refuses it capabilities-self and fleet reads the probe path instead):
// fleet says so, the hourly provision (no admin token) says the policy needs
// rewriting, and the run with an admin token rewrites it.
func TestFleetReaderPolicyOld(t *testing.T) {
	base := fleetBase(t)
	rig, readerFile := newFleetRig(t, base)
	u := newOSUser(t, "cas-f-")
	rig.writeRoster("users:\n  " + u.name + ": {}\n")
	rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	b, _ := os.ReadFile(readerFile)
	rig.secrets = append(rig.secrets, strings.TrimSpace(string(b)))
	readerPolicy := func() string {
		t.Helper()
		var rep struct {
			ReaderPolicy string `json:"reader_policy"`
		}
		res := mustFleet(t, rig, 0, nil, "--json", "--token-file", readerFile)
		if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
			t.Fatalf("fleet --json: %v\n%s", err, res.stdout)
		}
		return rep.ReaderPolicy
	}
	if got := readerPolicy(); got != "current" {
		t.Errorf("fleet with the current reader policy: reader_policy %q", got)
	}
	if err := vsrv.Root().Sys().PutPolicy(fleet.ReaderPolicy, fmt.Sprintf(oldReaderPolicy, base)); err != nil {
		t.Fatal(err)
	}
	if got := readerPolicy(); got != "old" {
		t.Errorf("fleet with the old reader policy: reader_policy %q; want old", got)
	}
	text := mustFleet(t, rig, 0, nil, "--token-file", readerFile)
	if first, _, _ := strings.Cut(text.stdout, "\n"); !strings.HasPrefix(first, "WARN policy "+fleet.ReaderPolicy+" is the old one") {
		t.Errorf("fleet's first line with the old reader policy: %q", first)
	}
	res := rig.mustRun(false, 0, "--fleet-reader-token", readerFile)
	if l := regexp.MustCompile(`(?m)^fleet-reader .*$`).FindString(res.stdout); !strings.Contains(l, "fleet-reader WARN needs an admin token") || !strings.Contains(l, "a rewrite of policy "+fleet.ReaderPolicy) {
		t.Errorf("the hourly run over the old reader policy: %q", l)
	}
	res = rig.mustRun(true, 0, "--fleet-reader-token", readerFile)
	if l := regexp.MustCompile(`(?m)^fleet-reader .*$`).FindString(res.stdout); !strings.HasPrefix(l, "fleet-reader OK rewrote policy "+fleet.ReaderPolicy) {
		t.Errorf("provision over the old reader policy: %q", l)
	}
	if got := readerPolicy(); got != "current" {
		t.Errorf("fleet after provision: reader_policy %q; want current", got)
	}
}
