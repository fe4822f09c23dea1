package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

func TestRelTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "in 0 s"},
		{-time.Second, "1 s ago"},
		{45 * time.Second, "in 45 s"},
		{-3 * time.Minute, "3 min ago"},
		{59*time.Minute + 59*time.Second, "in 59 min"},
		{-3 * time.Hour, "3 h ago"},
		{5*time.Hour - time.Second, "in 4 h"}, // cut, never a unit too many
		{47 * time.Hour, "in 47 h"},
		{-2 * 24 * time.Hour, "2 d ago"},
		{27*24*time.Hour + 23*time.Hour, "in 27 d"},
		{400 * 24 * time.Hour, "in 400 d"},
	} {
		at := now.Add(tc.d)
		if got := relTime(&at, now); got != tc.want {
			t.Errorf("relTime(now%+v) = %q; want %q", tc.d, got, tc.want)
		}
	}
	if got := relTime(nil, now); got != "-" {
		t.Errorf("relTime(nil) = %q; want -", got)
	}
}

func sampleReport(now time.Time) fleet.Report {
	d := func(days float64) time.Time { return now.Add(time.Duration(days * float64(24*time.Hour))) }
	rows := []fleet.Row{
		{User: "alice", HostID: "0a1b2c3d4e5f", Owner: true, Health: fleet.Health{Label: "ws-01", Status: "OK", StatusAt: d(-0.01),
			BackupAt: d(-0.01), ExpiresAt: d(0.2), Deadline: d(27.5), Version: "1.4.0", Doc: fleet.DocMain}},
		{User: "bob", HostID: "f9e8", Health: fleet.Health{Label: "gpu box", Status: "FAIL", StatusAt: d(-0.1), ExpiresAt: d(-2),
			Deadline: d(25), Version: "1.4.0", Doc: fleet.DocHosts, Reason: "vault token: the token file is exposed"}},
		{User: "carol", HostID: "77", Health: fleet.Health{Status: "OK", SetupExpires: d(3.5), Doc: fleet.DocMain}},
		{User: "dave", Health: fleet.Health{Status: fleet.StatusUnknown}, Note: "no health yet"},
		{User: "erin", HostID: "99", Health: fleet.Health{Status: "DEGRADED"}},
	}
	return fleet.NewReport(rows, now, 7)
}

func TestPrintFleet(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	printFleet(&buf, sampleReport(now))
	want := `STATUS    USER   HOST                   REPORTED   BACKUP     ACCESS TOKEN  DEADLINE             VERSION  DOC    REASON
FAIL      bob    gpu_box (f9e8)         2 h ago    -          2 d ago       in 25 d              1.4.0    hosts  vault token: the token file is exposed
UNKNOWN   dave   -                      -          -          -             -                    -        -      no health yet
DEGRADED  erin   ? (99)                 -          -          -             -                    -        -      the agent gave no reason
OK        carol  ? (77)                 -          -          -             in 3 d (setup token)  -        main
OK        alice  ws-01 (0a1b2c3d)       14 min ago  14 min ago  in 4 h        in 27 d              1.4.0    main*
5 users, 4 hosts: 1 FAIL, 1 UNKNOWN, 2 OK, 1 DEGRADED; 2 to act on (FAIL, or a login ending within 7 d)
`
	// The table's columns are tabwriter's business; compare cell by cell.
	cells := func(s string) [][]string {
		var out [][]string
		for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
			out = append(out, regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(l), -1))
		}
		return out
	}
	if got := cells(buf.String()); !reflect.DeepEqual(got, cells(want)) {
		t.Errorf("printFleet:\n%s\nwant:\n%s", buf.String(), want)
	}
	for i, l := range strings.Split(buf.String(), "\n") {
		if strings.HasSuffix(l, " ") {
			t.Errorf("line %d ends in a space: %q", i+1, l)
		}
	}
	// The columns line up: every row's USER starts where the header's does.
	lines := strings.Split(buf.String(), "\n")
	col := strings.Index(lines[0], "USER")
	for _, l := range lines[1:6] {
		if l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("USER not aligned at column %d: %q", col, l)
		}
	}
}

func TestFleetExitCodes(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		err  error
		rows []fleet.Row
		want int
	}{
		{"all well", nil, []fleet.Row{{User: "a", HostID: "h", Health: fleet.Health{Status: "OK", Deadline: now.Add(30 * 24 * time.Hour)}}}, 0},
		{"nobody", nil, nil, 0},
		{"WARN and UNKNOWN only", nil, []fleet.Row{{User: "a", Health: fleet.Health{Status: "WARN"}}, {User: "b", Health: fleet.Health{Status: "UNKNOWN"}}}, 0},
		{"a FAIL", nil, []fleet.Row{{User: "a", Health: fleet.Health{Status: "FAIL"}}}, 1},
		{"deadline in 3 days", nil, []fleet.Row{{User: "a", Health: fleet.Health{Status: "OK", Deadline: now.Add(3 * 24 * time.Hour)}}}, 1},
		{"deadline passed", nil, []fleet.Row{{User: "a", Health: fleet.Health{Status: "OK", Deadline: now.Add(-time.Hour)}}}, 1},
		{"setup token ends in 2 days", nil, []fleet.Row{{User: "a", Health: fleet.Health{Status: "OK", Deadline: now.Add(-90 * 24 * time.Hour), SetupExpires: now.Add(48 * time.Hour)}}}, 1},
		{"403", fmt.Errorf("list: %w (403)", store.ErrForbidden), nil, 77},
		{"unreachable", fmt.Errorf("list: %w", store.ErrUnreachable), nil, 75},
		{"tls", fmt.Errorf("list: %w: set VAULT_CACERT", store.ErrMisconfigured), nil, 78},
		{"config", fmt.Errorf("%w: no Vault token", config.ErrConfig), nil, 78},
		{"something else", errors.New("vault answered 400: bad"), nil, 75},
	} {
		got := 0
		if tc.err != nil {
			got = fleetErrorCode(tc.err)
		} else {
			got = fleetExitCode(fleet.NewReport(tc.rows, now, 7))
		}
		if got != tc.want {
			t.Errorf("%s: exit %d; want %d", tc.name, got, tc.want)
		}
	}
}

// fakeFleetVault answers LIST and metadata reads for two users; list403
// refuses the list.
func fakeFleetVault(t *testing.T, health string, list403 bool) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") != "fleet-test-token" || list403 {
			w.WriteHeader(403)
			fmt.Fprint(w, `{"errors":["permission denied"]}`)
			return
		}
		switch {
		case strings.Contains(r.URL.Path, "/auth/token/"):
			fmt.Fprint(w, `{"data":{"period":0,"renewable":false}}`)
		case strings.Contains(r.URL.Path, "/sys/policies/acl/"):
			// Not an admin's token: fleet cannot read the policies.
			w.WriteHeader(403)
			fmt.Fprint(w, `{"errors":["permission denied"]}`)
		case r.Method == "LIST" || r.URL.Query().Get("list") == "true":
			fmt.Fprint(w, `{"data":{"keys":["alice","bob","bob/"]}}`)
		case strings.HasSuffix(r.URL.Path, "/secret/metadata/workstation/claude-users/alice"):
			json.NewEncoder(w).Encode(map[string]any{"data": map[string]any{"custom_metadata": map[string]any{"host.h1": health}}})
		case strings.HasSuffix(r.URL.Path, "/secret/metadata/workstation/claude-users/bob"):
			fmt.Fprint(w, `{"data":{"custom_metadata":null}}`)
		default:
			t.Errorf("fleet asked for %s %s", r.Method, r.URL.Path)
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestFleetMain: the command line end to end against a fake Vault: exit
// codes, and --json against docs/fleet.md's field table.
func TestFleetMain(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	os.WriteFile(cfg, nil, 0o644)
	tokFile := filepath.Join(dir, "token")
	os.WriteFile(tokFile, []byte("fleet-test-token\n"), 0o600)
	t.Setenv("CLAUDE_AUTH_SYSTEM_CONFIG", cfg)
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("CLAUDE_AUTH_VAULT_PATH", "")
	t.Setenv("CLAUDE_AUTH_VAULT_MOUNT", "")
	soon := fmt.Sprint(time.Now().Add(3 * 24 * time.Hour).Unix())
	late := fmt.Sprint(time.Now().Add(30 * 24 * time.Hour).Unix())
	ok := fakeFleetVault(t, "label=ws;status=OK;deadline="+late, false)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want int
	}{
		{"usage: negative days", []string{"--within", "-1"}, nil, 2},
		{"usage: stray argument", []string{"alice"}, nil, 2},
		{"usage: unknown flag", []string{"--json=x"}, nil, 2},
		{"no VAULT_ADDR", []string{"--token-file", tokFile}, nil, 78},
		{"no token", []string{"--vault-addr", ok}, nil, 78},
		{"not an address", []string{"--vault-addr", "vault:8200", "--token-file", tokFile}, nil, 78},
		{"user not last", []string{"--vault-addr", ok, "--token-file", tokFile, "--vault-path", "secret/{user}/x"}, nil, 78},
		{"unreachable", []string{"--vault-addr", "http://127.0.0.1:1", "--token-file", tokFile}, nil, 75},
		{"refused", []string{"--token-file", tokFile}, map[string]string{"VAULT_ADDR": fakeFleetVault(t, "", true)}, 77},
		{"wrong token", nil, map[string]string{"VAULT_ADDR": ok, "VAULT_TOKEN": "another"}, 77},
		{"all well", []string{"--token-file", tokFile}, map[string]string{"VAULT_ADDR": ok}, 0},
		{"all well, VAULT_TOKEN", nil, map[string]string{"VAULT_ADDR": ok, "VAULT_TOKEN": "fleet-test-token"}, 0},
		{"deadline soon", []string{"--token-file", tokFile}, map[string]string{"VAULT_ADDR": fakeFleetVault(t, "status=OK;deadline="+soon, false)}, 1},
		{"deadline soon, --within 2", []string{"--token-file", tokFile, "--within", "2"}, map[string]string{"VAULT_ADDR": fakeFleetVault(t, "status=OK;deadline="+soon, false)}, 0},
		{"a FAIL", []string{"--token-file", tokFile, "--json"}, map[string]string{"VAULT_ADDR": fakeFleetVault(t, "status=FAIL", false)}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if code := Main(append([]string{"fleet"}, tc.args...), &out, &errb); code != tc.want {
				t.Errorf("fleet %q: exit %d; want %d\nstdout: %s\nstderr: %s", tc.args, code, tc.want, out.String(), errb.String())
			}
			if s := out.String() + errb.String(); strings.Contains(s, "fleet-test-token") {
				t.Errorf("the token was printed:\n%s", s)
			}
		})
	}
}

// fleetDocRow is a row of docs/fleet.md's JSON field table.
var fleetDocRow = regexp.MustCompile("^\\| `([a-z_.]+)` \\| ([a-z ]+?) \\| ?(optional)? ?\\|")

// TestFleetJSONSchema: docs/fleet.md documents every field `fleet --json`
// prints, with its type, and every field it documents exists; the always
// there fields are there even on a row that knows nothing.
func TestFleetJSONSchema(t *testing.T) {
	f, err := os.Open("../../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc := map[string]docField{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := fleetDocRow.FindStringSubmatch(sc.Text()); m != nil {
			doc[m[1]] = docField{typ: m[2], optional: m[3] != ""}
		}
	}
	if len(doc) < 20 {
		t.Fatalf("docs/fleet.md: only %d field rows", len(doc))
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var full fleet.Row
	fill(reflect.ValueOf(&full).Elem())
	for name, rows := range map[string][]fleet.Row{
		"every field set": {full},
		"nothing known":   {{User: "dave", Health: fleet.Health{Status: fleet.StatusUnknown}}},
	} {
		rep := fleet.NewReport(rows, now, 7)
		rep.Vault, rep.Mount, rep.Base = "https://v:8200", "secret", "b"
		if name == "every field set" {
			rep.SetPolicies(fleet.Policies{Reader: store.PolicyOld, Users: store.PolicyOld, OldUsers: []string{"alice"}})
		}
		b, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]any
		json.Unmarshal(b, &top)
		got := map[string]string{}
		jsonFields(t, "", top, got)
		delete(got, "counts."+full.Status)
		delete(got, "counts.UNKNOWN")
		if got["rows"] == "array" {
			got["rows"] = "array of objects"
		}
		jsonFields(t, "rows", top["rows"].([]any)[0], got)
		for p, typ := range got {
			d, ok := doc[p]
			switch {
			case !ok:
				t.Errorf("%s: fleet --json prints %s (%s), which docs/fleet.md does not document", name, p, typ)
			case !compatible(d.typ, typ):
				t.Errorf("%s: fleet --json prints %s as %s; docs/fleet.md says %s", name, p, typ, d.typ)
			}
		}
		for p, d := range doc {
			if _, ok := got[p]; !ok && (!d.optional || name == "every field set") {
				t.Errorf("%s: docs/fleet.md documents %s; fleet --json left it out", name, p)
			}
		}
	}
}
