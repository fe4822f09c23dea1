package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
	"github.com/claude-auth-sync/claude-auth-sync/sync/refresh"
)

const (
	access3  = "sk-ant-oat01-access3ACCESSaccessACCESS0003"
	refresh3 = "sk-ant-ort01-refresh3REFRESHrefreshREFR0003"
)

var login3 = oauthJSON(access3, refresh3, exp9h)

// answer is one inference check's answer; during, when set, runs while the
// check runs (a Claude that rotates the login under it).
type answer struct {
	kind   check.Kind
	during func(h *harness)
}

// scriptedClaude answers the checks in turn (the last answer repeats).
type scriptedClaude struct {
	h       *harness
	answers []answer
	n       int
}

func (s *scriptedClaude) Run(context.Context, ...string) check.Result {
	a := s.answers[min(s.n, len(s.answers)-1)]
	s.n++
	if a.during != nil {
		a.during(s.h)
	}
	switch a.kind {
	case check.OK:
		return check.Result{Kind: check.OK, Reason: "inference check answered AUTH_OK"}
	case check.Transient:
		return check.Result{Kind: check.Transient, Reason: "claude check timed out after 1m30s"}
	}
	k, reason := check.Classify(1, `API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth token has expired."}}`, "")
	return check.Result{Kind: k, Reason: reason, ExitCode: 1}
}

var (
	ok        = answer{kind: check.OK}
	transient = answer{kind: check.Transient}
	refused   = answer{kind: check.Auth}
)

// rotatesTo is a refused check during which the file's login becomes login.
func rotatesTo(login string) answer {
	return answer{kind: check.Auth, during: func(h *harness) { h.writeCreds(credsFile(login)) }}
}

// forcedRefresh is the forced refresh's answer, as the agent's refresh child
// (Refresher.Via) would give it; write, when set, is the login it leaves in the
// file.
type forcedRefresh struct {
	write string
	res   func(t *testing.T) refresh.ClaudeResult
	err   error
}

func refreshedTo(login string, ours bool) *forcedRefresh {
	return &forcedRefresh{write: login, res: func(t *testing.T) refresh.ClaudeResult {
		return refresh.ClaudeResult{Refreshed: ours, OAuth: mustOAuth(t, login), Message: "refreshed"}
	}}
}

func refreshFails(err error) *forcedRefresh { return &forcedRefresh{err: err} }

// prevIsDir makes previous-credentials.json a directory: every write of the
// credentials file, which keeps the file it replaces there, fails.
func prevIsDir(t *testing.T, h *harness, _ *PassOptions) {
	if err := os.MkdirAll(filepath.Join(h.cfg.StateDir, "previous-credentials.json", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
}

func storeDown(_ *testing.T, h *harness, _ *PassOptions) {
	h.eng.Store = &flakyStore{File: h.store, readErr: errDown}
}

// agentLeaves is the agent's backup worker, leaving the file holding creds
// ("" = not fixed).
func agentLeaves(creds string) func(*testing.T, *harness, *PassOptions) {
	return func(t *testing.T, h *harness, opt *PassOptions) {
		opt.AwaitRestore = func(context.Context) *credentials.Local {
			if creds == "" {
				return nil
			}
			h.writeCreds(creds)
			return h.readCreds()
		}
	}
}

var clobbered = credsFile(oauthJSON(access1, "", exp8h))

// passTableCase is a pass run into a row of passTable, from the file, the
// backup, the checks' answers and the forced refresh's.
type passTableCase struct {
	name    string
	creds   string // the file; "" = none
	backup  string // the backup's login; "" = none
	checks  []answer
	refresh *forcedRefresh // nil: the refresher's own, whose endpoint knows no login (invalid_grant)
	setup   func(*testing.T, *harness, *PassOptions)
	end     passCase // where the pass ends
	status  eventlog.Status
	code    int
	msgHas  string
	logHas  string // a line of sync.log
}

var passTableCases = []passTableCase{
	{name: "file unreadable", setup: func(t *testing.T, h *harness, _ *PassOptions) {
		if err := os.Mkdir(h.cfg.CredentialsFile, 0o700); err != nil {
			t.Fatal(err)
		}
	}, end: passCase{fileUnreadable, checkNone, refreshNone, restoreNone}, status: eventlog.FAIL, code: ExitFail, msgHas: "not a regular file"},
	{name: "no file", backup: login2,
		end: passCase{fileGone, checkNone, refreshNone, restoreNone}, status: eventlog.WARN, code: ExitLoggedOut, msgHas: "no credentials file at"},

	{name: "broken, store down", creds: clobbered, setup: storeDown,
		end: passCase{fileBroken, checkNone, refreshNone, restoreNoStore}, status: eventlog.FAIL, code: ExitFail, msgHas: "and the backup cannot be read"},
	{name: "broken, no backup", creds: clobbered,
		end: passCase{fileBroken, checkNone, refreshNone, restoreNoCandidate}, status: eventlog.FAIL, code: ExitFail, msgHas: "there is no backup"},
	{name: "broken, restore fails", creds: clobbered, backup: login2, setup: prevIsDir,
		end: passCase{fileBroken, checkNone, refreshNone, restoreFailed}, status: eventlog.FAIL, code: ExitFail, msgHas: "restore failed: keep a copy"},
	{name: "broken, restored", creds: clobbered, backup: login2, checks: []answer{ok},
		end: passCase{fileUsable, checkOK, refreshNone, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed",
		logHas: "RECOVERED credentials file was unusable"},
	{name: "broken, someone restores first", creds: clobbered, backup: login3, checks: []answer{ok},
		setup: func(t *testing.T, h *harness, _ *PassOptions) {
			// The file is open to others: the WARN about it is the moment
			// another restorer wins, between the read and the restore.
			if err := os.Chmod(h.cfg.CredentialsFile, 0o644); err != nil {
				t.Fatal(err)
			}
			h.eng.Log.AfterEvent = func(eventlog.Status) { h.eng.Log.AfterEvent = nil; h.writeCreds(credsFile(login2)) }
		},
		end: passCase{fileUsable, checkOK, refreshNone, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed"},
	{name: "broken, the agent has not fixed it", creds: clobbered, setup: agentLeaves(""),
		end: passCase{fileBroken, checkNone, refreshNone, restoreAgentPending}, status: eventlog.WARN, code: ExitTempFail, msgHas: "the agent's restore has not fixed it yet"},
	{name: "broken, the agent fixed it", creds: clobbered, checks: []answer{ok}, setup: agentLeaves(credsFile(login2)),
		end: passCase{fileUsable, checkOK, refreshNone, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed"},
	{name: "broken, still broken after the repair", creds: clobbered, setup: agentLeaves(clobbered),
		end: passCase{fileStillBroken, checkNone, refreshNone, restoreByAgent}, status: eventlog.FAIL, code: ExitFail, msgHas: "still unusable"},

	{name: "check passes", creds: credsFile(login1), checks: []answer{ok},
		end: passCase{fileUsable, checkOK, refreshNone, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed; backed up"},
	{name: "check transient", creds: credsFile(login1), backup: login2, checks: []answer{transient},
		end: passCase{fileUsable, checkTransient, refreshNone, restoreNone}, status: eventlog.WARN, code: ExitTempFail, msgHas: "timed out after 1m30s; not restoring"},
	{name: "rotated during the check, the new login works", creds: credsFile(login1), checks: []answer{rotatesTo(login2), ok},
		end: passCase{fileSame, checkOK, refreshNone, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed; backed up"},
	{name: "rotated during the check, the new login transient", creds: credsFile(login1), checks: []answer{rotatesTo(login2), transient},
		end: passCase{fileSame, checkTransient, refreshNone, restoreNone}, status: eventlog.WARN, code: ExitTempFail, msgHas: "not restoring"},

	{name: "forced refresh works", creds: credsFile(login1), checks: []answer{refused, ok}, refresh: refreshedTo(login2, true),
		end: passCase{fileUsable, checkOK, refreshOurs, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed after a forced refresh (credential refused"},
	{name: "someone else refreshed", creds: credsFile(login1), checks: []answer{refused, ok}, refresh: refreshedTo(login2, false),
		end: passCase{fileUsable, checkOK, refreshTheirs, restoreNone}, status: eventlog.OK, code: ExitOK, msgHas: "with the login someone else refreshed"},
	{name: "refreshed, then transient", creds: credsFile(login1), checks: []answer{refused, transient}, refresh: refreshedTo(login2, true),
		end: passCase{fileUsable, checkTransient, refreshOurs, restoreNone}, status: eventlog.WARN, code: ExitTempFail, msgHas: "refreshed the login, then: claude check timed out"},
	{name: "refreshed, then rotated again", creds: credsFile(login1), backup: login2, checks: []answer{refused, rotatesTo(login3)}, refresh: refreshedTo(login2, true),
		end: passCase{fileChanged, checkRefused, refreshOurs, restoreNone}, status: eventlog.WARN, code: ExitTempFail, msgHas: "the login kept rotating"},
	{name: "refresh cannot run", creds: credsFile(login1), backup: login2, checks: []answer{refused}, refresh: refreshFails(fmt.Errorf("refresh: %w: HTTP 503", oauth.ErrTransient)),
		end: passCase{fileSame, checkRefused, refreshLater, restoreNone}, status: eventlog.WARN, code: ExitTempFail, msgHas: "a forced refresh could not run (refresh: token endpoint unavailable: HTTP 503)"},
	{name: "refreshed, the file cannot take it", creds: credsFile(login1), checks: []answer{refused},
		refresh: &forcedRefresh{res: func(t *testing.T) refresh.ClaudeResult { return refresh.ClaudeResult{OAuth: mustOAuth(t, login2)} }, err: fmt.Errorf("%w: disk full", refresh.ErrNotWritten)},
		end:     passCase{fileSame, checkRefused, refreshNotWritten, restoreNone}, status: eventlog.FAIL, code: ExitFail, msgHas: "a forced refresh got a new login, but the refreshed login could not be written to the credentials file: disk full; the new login; backed up"},

	{name: "refused, store down", creds: credsFile(login1), checks: []answer{refused}, setup: storeDown,
		end: passCase{fileSame, checkRefused, refreshDead, restoreNoStore}, status: eventlog.FAIL, code: ExitFail, msgHas: "cannot look for a backup"},
	{name: "refused, no backup", creds: credsFile(login1), checks: []answer{refused},
		end: passCase{fileSame, checkRefused, refreshDead, restoreNoCandidate}, status: eventlog.FAIL, code: ExitFail, msgHas: "there is no backup"},
	{name: "refused, restore fails", creds: credsFile(login1), backup: login2, checks: []answer{refused}, setup: prevIsDir,
		end: passCase{fileSame, checkRefused, refreshDead, restoreFailed}, status: eventlog.FAIL, code: ExitFail, msgHas: "restore from"},
	{name: "refused, restored", creds: credsFile(login1), backup: login2, checks: []answer{refused, ok},
		end: passCase{fileUsable, checkOK, refreshDead, restoreDone}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed after restore",
		logHas: "RECOVERED credential refused: API Error: 401"},
	{name: "refreshed, refused again, restored", creds: credsFile(login1), backup: login3, checks: []answer{refused, refused, ok}, refresh: refreshedTo(login2, true),
		end: passCase{fileUsable, checkOK, refreshOurs, restoreDone}, status: eventlog.OK, code: ExitOK, msgHas: "after restore"},
	{name: "refresh brings nothing new, restored", creds: credsFile(login1), backup: login2, checks: []answer{refused, ok},
		refresh: &forcedRefresh{res: func(t *testing.T) refresh.ClaudeResult {
			return refresh.ClaudeResult{OAuth: mustOAuth(t, login1), Message: "someone already refreshed"}
		}},
		end: passCase{fileUsable, checkOK, refreshNoNew, restoreDone}, status: eventlog.OK, code: ExitOK, msgHas: "after restore"},
	{name: "refresh fails, restored", creds: credsFile(login1), backup: login2, checks: []answer{refused, ok}, refresh: refreshFails(errors.New("the refresh child reported nothing")),
		end: passCase{fileUsable, checkOK, refreshFailed, restoreDone}, status: eventlog.OK, code: ExitOK, msgHas: "after restore"},
	{name: "restored, still refused", creds: credsFile(login1), backup: login2, checks: []answer{refused},
		end: passCase{fileUsable, checkRefused, refreshDead, restoreDone}, status: eventlog.FAIL, code: ExitFail, msgHas: "restored login from the backup, but the check still fails"},
	{name: "a login written during the restore works", creds: credsFile(login1), backup: login3, checks: []answer{refused, ok},
		refresh: &forcedRefresh{write: login2, err: fmt.Errorf("%w: invalid_grant", refresh.ErrLoginDead)},
		end:     passCase{fileChanged, checkOK, refreshDead, restoreRaced}, status: eventlog.OK, code: ExitOK, msgHas: "inference check passed with the login written meanwhile (credential refused"},
	{name: "a login written during the restore fails too", creds: credsFile(login1), backup: login3, checks: []answer{refused},
		refresh: &forcedRefresh{write: login2, err: fmt.Errorf("%w: invalid_grant", refresh.ErrLoginDead)},
		end:     passCase{fileChanged, checkRefused, refreshDead, restoreRaced}, status: eventlog.WARN, code: ExitTempFail, msgHas: "the login kept changing during the check"},
}

// TestPassTable runs a pass into every row of passTable.
func TestPassTable(t *testing.T) {
	seen, ran := map[int]bool{}, 0
	for _, tt := range passTableCases {
		t.Run(tt.name, func(t *testing.T) {
			ran++
			for _, c := range tt.run(t) {
				seen[rowIndex(c)] = true
			}
		})
	}
	if ran < len(passTableCases) {
		return // -run picked some: the rows they reach are no measure
	}
	for i, r := range passTable {
		if !seen[i] {
			t.Errorf("no test reached row %d (%s): %q", i, r.passCase(), r.say+r.note)
		}
	}
}

// run is one pass of the case; it returns the cases the pass went through.
func (tt passTableCase) run(t *testing.T) []passCase {
	h := newHarness(t)
	if tt.backup != "" {
		h.putBackup(tt.backup)
	}
	if tt.creds != "" {
		h.writeCreds(tt.creds)
	}
	checks := tt.checks
	if checks == nil {
		checks = []answer{refused} // a check that should not run fails the pass
	}
	h.eng.Checker = &scriptedClaude{h: h, answers: checks}
	if r := tt.refresh; r != nil {
		h.eng.Refresher.Via = func(context.Context, bool, string) (refresh.ClaudeResult, error) {
			if r.write != "" {
				h.writeCreds(credsFile(r.write))
			}
			var res refresh.ClaudeResult
			if r.res != nil {
				res = r.res(t)
			}
			return res, r.err
		}
	}
	var opt PassOptions
	if tt.setup != nil {
		tt.setup(t, h, &opt)
	}
	o, trail := h.eng.runPass(context.Background(), opt)
	if o.Status != tt.status || o.Code != tt.code || !strings.Contains(o.Message, tt.msgHas) {
		t.Errorf("Pass() = %s %d %q; want %s %d containing %q", o.Status, o.Code, o.Message, tt.status, tt.code, tt.msgHas)
	}
	if len(trail) == 0 || trail[len(trail)-1] != tt.end {
		t.Errorf("Pass() went through %v; want it to end in %v", trail, tt.end)
	}
	if tt.logHas != "" && !strings.Contains(h.syncLog(), tt.logHas) {
		t.Errorf("sync.log = %q; want a line with %q", h.syncLog(), tt.logHas)
	}
	return trail
}

func rowIndex(c passCase) int {
	for i, r := range passTable {
		if r.holds(c) {
			return i
		}
	}
	return -1
}

func (r passRow) passCase() passCase { return passCase{r.file, r.check, r.refresh, r.restore} }

// Every case a pass can stand in has at most one row, and every message's
// placeholders are ones the pass fills.
func TestPassTableIsATable(t *testing.T) {
	for file := fileUnreadable; file <= fileChanged; file <<= 1 {
		for chk := checkNone; chk <= checkRefused; chk <<= 1 {
			for ref := refreshNone; ref != 0; ref <<= 1 {
				for res := restoreNone; res != 0; res <<= 1 {
					c := passCase{file, chk, ref, res}
					var rows []int
					for i, r := range passTable {
						if r.holds(c) {
							rows = append(rows, i)
						}
					}
					if len(rows) > 1 {
						t.Errorf("case %v has rows %v; want one at most", c, rows)
					}
				}
			}
		}
	}
	known := map[string]bool{}
	for _, k := range []string{"reason", "first", "err", "why", "down", "hint", "store", "version", "problem", "what", "backup"} {
		known["{"+k+"}"] = true
	}
	for i, r := range passTable {
		for _, ph := range regexp.MustCompile(`\{[^}]*\}`).FindAllString(r.say+r.note, -1) {
			if !known[ph] {
				t.Errorf("row %d says %q: %s is not a placeholder the pass fills", i, r.say+r.note, ph)
			}
		}
	}
}
