package engine

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
)

// The pass's decisions about the rotating login, in one table. Once the file
// is read, and after every step it then takes, the pass looks up where it
// stands (what the file holds, the latest check, the forced refresh, the
// restore) and does what that row says: a next step, or the end of the pass
// with its status, exit code and message.

// fileState is what the credentials file holds, as far as the pass knows.
type fileState uint8

const (
	fileUnreadable  fileState = 1 << iota // it could not be read (not a regular file, I/O error)
	fileGone                              // no login: no file (a logout, a new home) or no claudeAiOauth
	fileBroken                            // an unusable login (clobbered: empty refresh token, malformed)
	fileStillBroken                       // still unusable after the repair
	fileUsable                            // the login the pass is about to check, or has just checked
	fileSame                              // looked at again after a refusal: still the login checked
	fileChanged                           // looked at again: someone put another usable login there
)

// checkState is the latest inference check's answer about the login at hand.
type checkState uint8

const (
	checkNone      checkState = 1 << iota // not run on the login at hand
	checkOK                               // AUTH_OK
	checkTransient                        // timeout, 5xx, 429, network, no claude, an odd answer: says nothing about the login
	checkRefused                          // 401/403, invalid_grant, login expired
)

// refreshState is what the forced refresh did.
type refreshState uint8

const (
	refreshNone       refreshState = 1 << iota // not tried
	refreshOurs                                // it rotated the login
	refreshTheirs                              // someone else had rotated it: the file holds a newer login
	refreshNoNew                               // it ran and brought no other login
	refreshNotWritten                          // it rotated the login but the file cannot take it
	refreshDead                                // invalid_grant: only a login or a newer backup helps
	refreshLater                               // it could not run now (tryLater)
	refreshFailed                              // another error

	anyRefresh = ^refreshState(0)
)

// restoreState is what a restore of the backup did.
type restoreState uint8

const (
	restoreNone         restoreState = 1 << iota // not tried
	restoreNoStore                               // the store could not be read
	restoreNoCandidate                           // the backup cannot help (RestoreCandidate says why)
	restoreFailed                                // writing it failed
	restoreRaced                                 // someone wrote a login first; the write was abandoned
	restoreDone                                  // the backup's login is in the file
	restoreAgentPending                          // the agent's backup worker has not fixed the file
	restoreByAgent                               // the agent's backup worker fixed the file

	anyRestore = ^restoreState(0)
)

// passCase is where a pass stands. In a row of passTable each field may hold
// several states (or'ed): the row is for any of them.
type passCase struct {
	file    fileState
	check   checkState
	refresh refreshState
	restore restoreState
}

// passAction is the step a row of passTable takes.
type passAction uint8

const (
	actEnd           passAction = iota // end the pass with the row's status, code and message
	actCheck                           // run the inference check on the login at hand
	actLookAgain                       // re-read the file: did the login change under the check?
	actCheckNew                        // take the file's new login and check it, once
	actRefresh                         // a forced refresh by the single refresher
	actRestore                         // restore the backup over the refused login
	actRepair                          // restore the backup into the broken file (in the agent: wait for its worker)
	actSettle                          // take the file as the repair left it
	actBackUp                          // back the working login up; the message says what worked
	actBackUpAndFail                   // back up the login the file could not take, then end with the row's FAIL
)

// passStep is what a row does. Its messages may hold placeholders (see
// pass.words).
type passStep struct {
	act    passAction
	status eventlog.Status // the outcome's (actEnd, actBackUpAndFail), or the note's
	code   int
	say    string // the outcome's message; for actBackUp, what worked
	// note is logged before the step: a status event, or a diagnostic when
	// status is "".
	note string
}

func end(st eventlog.Status, code int, say string) passStep {
	return passStep{act: actEnd, status: st, code: code, say: say}
}
func then(act passAction) passStep { return passStep{act: act} }
func note(st eventlog.Status, note string, act passAction) passStep {
	return passStep{act: act, status: st, note: note}
}
func info(note string, act passAction) passStep { return passStep{act: act, note: note} }
func backUp(what string) passStep               { return passStep{act: actBackUp, say: what} }
func backUpAndFail(say string) passStep {
	return passStep{act: actBackUpAndFail, status: eventlog.FAIL, code: ExitFail, say: say}
}

type passRow struct {
	file    fileState
	check   checkState
	refresh refreshState
	restore restoreState
	passStep
}

// passTable holds every case of the pass past the setup-token step, and no
// two rows hold the same case. The auth rules: a refused check is met with a
// forced refresh first, a restore only when that does not help; a check that
// says nothing about the login (transient) restores nothing; a refusal of a
// login that changed under the check is no verdict on the file's login.
var passTable = []passRow{
	// The file as read.
	{fileUnreadable, checkNone, refreshNone, anyRestore, end(eventlog.FAIL, ExitFail, "{err}")},
	{fileGone, checkNone, refreshNone, restoreNone, end(eventlog.WARN, ExitLoggedOut, "{what} (a logout, or a new home); not restoring automatically. To get back in: `claude auth login`, or `claude-auth-sync restore` to restore the last backup")},
	{fileBroken, checkNone, refreshNone, restoreNone, then(actRepair)},

	// A broken file: restore the backup if it holds another login.
	{fileBroken, checkNone, refreshNone, restoreNoStore, end(eventlog.FAIL, ExitFail, "credentials file is unusable ({problem}) and the backup cannot be read: {down}; {hint}")},
	{fileBroken, checkNone, refreshNone, restoreNoCandidate, end(eventlog.FAIL, ExitFail, "credentials file is unusable ({problem}); {why}; {hint}")},
	{fileBroken, checkNone, refreshNone, restoreFailed, end(eventlog.FAIL, ExitFail, "credentials file is unusable ({problem}); restore failed: {err}")},
	{fileBroken, checkNone, refreshNone, restoreDone, note(eventlog.RECOVERED, "credentials file was unusable ({problem}); restored the login from the backup (v{version})", actSettle)},
	// Someone (the agent's worker, a refresh, Claude) made the file usable
	// while the restore waited for the locks: nothing to restore, no FAIL.
	{fileBroken, checkNone, refreshNone, restoreRaced, info("the credentials file became usable before the restore; leaving it", actSettle)},
	{fileBroken, checkNone, refreshNone, restoreAgentPending, end(eventlog.WARN, ExitTempFail, "credentials file is unusable ({problem}); the agent's restore has not fixed it yet (see its lines), the next pass looks again")},
	{fileBroken, checkNone, refreshNone, restoreByAgent, then(actSettle)},
	{fileStillBroken, checkNone, refreshNone, anyRestore, end(eventlog.FAIL, ExitFail, "credentials file is still unusable: {problem}")},

	// A usable login: check it.
	{fileUsable, checkNone, refreshNone, restoreNone, then(actCheck)},
	{fileUsable | fileSame, checkOK, refreshNone, restoreNone, backUp("inference check passed")},
	{fileUsable | fileSame, checkTransient, refreshNone, restoreNone, end(eventlog.WARN, ExitTempFail, "{reason}; not restoring, the next pass retries")},
	{fileUsable, checkRefused, refreshNone | refreshOurs | refreshTheirs, restoreNone, then(actLookAgain)},
	// A running Claude refreshed during the check, revoking the token it used.
	{fileChanged, checkRefused, refreshNone, restoreNone, info("the login changed during the check; checking the new one", actCheckNew)},
	{fileSame, checkRefused, refreshNone, restoreNone, then(actRefresh)},

	// The forced refresh.
	{fileUsable, checkNone, refreshOurs | refreshTheirs, restoreNone, then(actCheck)},
	{fileUsable, checkOK, refreshOurs, restoreNone, backUp("inference check passed after a forced refresh ({first})")},
	{fileUsable, checkOK, refreshTheirs, restoreNone, backUp("inference check passed with the login someone else refreshed ({first})")},
	{fileUsable, checkTransient, refreshOurs | refreshTheirs, restoreNone, end(eventlog.WARN, ExitTempFail, "refreshed the login, then: {reason}; the next pass retries")},
	// Rotated again while we checked: the check says nothing about the login
	// now in the file, and the refresh worked.
	{fileChanged, checkRefused, refreshOurs | refreshTheirs, restoreNone, end(eventlog.WARN, ExitTempFail, "the login kept rotating during the check ({reason}); not restoring, the next pass retries")},
	// The refresh did not help: a newer login in the backup is the way back.
	{fileSame, checkRefused, refreshOurs | refreshTheirs | refreshNoNew | refreshDead | refreshFailed, restoreNone, then(actRestore)},
	{fileSame, checkRefused, refreshLater, restoreNone, end(eventlog.WARN, ExitTempFail, "{reason}; a forced refresh could not run ({err}); not restoring, the next pass retries")},
	// A new login the file cannot take (a full file system): into the store.
	{fileSame, checkRefused, refreshNotWritten, restoreNone, backUpAndFail("{reason}; a forced refresh got a new login, but {err}; {backup}")},

	// The restore over a refused login.
	{fileSame, checkRefused, anyRefresh, restoreNoStore, end(eventlog.FAIL, ExitFail, "{reason}; cannot look for a backup: {down}; {hint}")},
	{fileSame, checkRefused, anyRefresh, restoreNoCandidate, end(eventlog.FAIL, ExitFail, "{reason}; {why}; {hint}")},
	{fileSame, checkRefused, anyRefresh, restoreFailed, end(eventlog.FAIL, ExitFail, "{reason}; restore from {store} failed: {err}")},
	{fileUsable, checkNone, anyRefresh, restoreDone, note(eventlog.RECOVERED, "{first}; restored the login from the backup (v{version})", actCheck)},
	{fileUsable, checkOK, anyRefresh, restoreDone, backUp("inference check passed after restore")},
	{fileUsable, checkTransient | checkRefused, anyRefresh, restoreDone, end(eventlog.FAIL, ExitFail, "restored login from the backup, but the check still fails: {reason}; {hint}")},
	// Someone (a refresher that was mid-request, Claude) wrote a new login
	// while the restore waited for the locks: that login is the one to check.
	{fileChanged, checkNone, anyRefresh, restoreRaced, then(actCheck)},
	{fileChanged, checkOK, anyRefresh, restoreRaced, backUp("inference check passed with the login written meanwhile ({first})")},
	{fileChanged, checkTransient | checkRefused, anyRefresh, restoreRaced, end(eventlog.WARN, ExitTempFail, "the login kept changing during the check ({first}, then {reason}); not restoring, the next pass retries")},
}

// holds says whether the row is for case c (each of c's fields one state).
func (r passRow) holds(c passCase) bool {
	return r.file&c.file != 0 && r.check&c.check != 0 && r.refresh&c.refresh != 0 && r.restore&c.restore != 0
}

// rowFor is the row for case c.
func rowFor(c passCase) (passRow, bool) {
	for _, r := range passTable {
		if r.holds(c) {
			return r, true
		}
	}
	return passRow{}, false
}

var (
	fileNames    = []string{"unreadable", "gone", "broken", "still-broken", "usable", "same", "changed"}
	checkNames   = []string{"none", "ok", "transient", "refused"}
	refreshNames = []string{"none", "ours", "theirs", "no-new", "not-written", "dead", "later", "failed"}
	restoreNames = []string{"none", "no-store", "no-candidate", "failed", "raced", "done", "agent-pending", "by-agent"}
)

// stateNames names the states in set, "a|b".
func stateNames(set uint8, names []string) string {
	var out []string
	for set != 0 {
		i := bits.TrailingZeros8(set)
		if i < len(names) {
			out = append(out, names[i])
		}
		set &^= 1 << i
	}
	return strings.Join(out, "|")
}

func (c passCase) String() string {
	return fmt.Sprintf("file %s, check %s, refresh %s, restore %s", stateNames(uint8(c.file), fileNames),
		stateNames(uint8(c.check), checkNames), stateNames(uint8(c.refresh), refreshNames), stateNames(uint8(c.restore), restoreNames))
}
