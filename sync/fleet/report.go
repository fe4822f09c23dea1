package fleet

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// statusRank orders rows worst first; a status this version does not know
// (a newer agent's) ranks with UNKNOWN.
func statusRank(s string) int {
	switch s {
	case "FAIL":
		return 0
	case "WARN":
		return 1
	case "RECOVERED":
		return 3
	case "SKIP":
		return 4
	case "OK":
		return 5
	}
	return 2
}

// compareTimes orders known times earliest first, unknown (zero) ones last.
func compareTimes(a, b time.Time) int {
	switch {
	case a.IsZero() && b.IsZero():
		return 0
	case a.IsZero():
		return 1
	case b.IsZero():
		return -1
	}
	return a.Compare(b)
}

// Sort puts the rows that need someone first: FAIL, then WARN, UNKNOWN,
// RECOVERED, SKIP, OK; within a status the nearest end first (DueAt, then the
// access token's expiry), then by user and host.
func Sort(rows []Row) {
	slices.SortStableFunc(rows, func(a, b Row) int {
		return cmp.Or(
			cmp.Compare(statusRank(a.Status), statusRank(b.Status)),
			compareTimes(a.DueAt(), b.DueAt()),
			compareTimes(a.ExpiresAt, b.ExpiresAt),
			cmp.Compare(a.User, b.User),
			cmp.Compare(a.HostID, b.HostID),
		)
	})
}

// Alert says whether the row should page someone: it FAILed, or its login
// (or setup token) ends within `within` of now, or has ended.
func (r Row) Alert(now time.Time, within time.Duration) bool {
	if r.Status == "FAIL" {
		return true
	}
	due := r.DueAt()
	return !due.IsZero() && !due.After(now.Add(within))
}

// SchemaVersion is the version of the JSON report; it grows when a field
// changes meaning or goes away (new fields do not change it).
const SchemaVersion = 1

// Report is `fleet --json`, documented field by field in docs/fleet.md.
type Report struct {
	Version     int       `json:"version"`
	GeneratedAt time.Time `json:"generated_at"`
	Vault       string    `json:"vault"`
	Mount       string    `json:"mount"`
	Base        string    `json:"base"`
	WithinDays  int       `json:"within_days"`
	Users       int       `json:"users"`
	Hosts       int       `json:"hosts"`
	// Counts is the number of rows per status.
	Counts map[string]int `json:"counts"`
	// Alerts is the number of rows with alert set; the exit status is 1
	// when it is not 0.
	Alerts int `json:"alerts"`
	// ReaderPolicy and UserPolicies: "current", "old" (the escapable glob
	// of earlier versions: run provision) or "unknown" (this token cannot
	// tell); OldPolicyUsers names the users whose policy is old.
	ReaderPolicy   string      `json:"reader_policy"`
	UserPolicies   string      `json:"user_policies"`
	OldPolicyUsers []string    `json:"old_policy_users,omitempty"`
	Rows           []ReportRow `json:"rows"`
}

// SetPolicies puts what CheckPolicies found into the report, with the
// users whose agents report an old policy in their health (what a reader
// token, which cannot read policies, learns about the users').
func (rep *Report) SetPolicies(p Policies) {
	old := slices.Clone(p.OldUsers)
	for _, r := range rep.Rows {
		if r.Policy == string(store.PolicyOld) {
			old = append(old, r.User)
		}
	}
	slices.Sort(old)
	rep.ReaderPolicy, rep.UserPolicies, rep.OldPolicyUsers = string(p.Reader), string(p.Users), slices.Compact(old)
	if len(rep.OldPolicyUsers) > 0 {
		rep.UserPolicies = string(store.PolicyOld)
	}
}

// ReportRow is one row of the report; unknown values are left out.
type ReportRow struct {
	User         string     `json:"user"`
	HostID       string     `json:"host_id,omitempty"`
	HostLabel    string     `json:"host_label,omitempty"`
	Owner        bool       `json:"owner"`
	Status       string     `json:"status"`
	StatusAt     *time.Time `json:"status_at,omitempty"`
	BackupAt     *time.Time `json:"backup_at,omitempty"`
	ExpiresAt    *time.Time `json:"expires_at,omitempty"`
	Deadline     *time.Time `json:"deadline,omitempty"`
	SetupExpires *time.Time `json:"setup_expires,omitempty"`
	DueAt        *time.Time `json:"due_at,omitempty"`
	AgentVersion string     `json:"agent_version,omitempty"`
	Doc          string     `json:"doc,omitempty"`
	Policy       string     `json:"policy,omitempty"`
	Note         string     `json:"note,omitempty"`
	// Reason says why a row is not OK: the agent's own words (its last
	// FAIL or WARN line, "no check yet …", "the agent stopped …"), or for
	// a row no agent reports, the note.
	Reason string `json:"reason,omitempty"`
	Alert  bool   `json:"alert"`
}

// NewReport sorts rows and builds the report of them as of now.
func NewReport(rows []Row, now time.Time, withinDays int) Report {
	Sort(rows)
	within := time.Duration(withinDays) * 24 * time.Hour
	rep := Report{Version: SchemaVersion, GeneratedAt: now.UTC().Truncate(time.Second), WithinDays: withinDays,
		Counts: map[string]int{}, Rows: make([]ReportRow, 0, len(rows)),
		ReaderPolicy: string(store.PolicyUnknown), UserPolicies: string(store.PolicyUnknown)}
	users := map[string]bool{}
	for _, r := range rows {
		// Whatever the reader did, nothing printed from Vault carries a
		// control character or fakes a column.
		r.User, r.HostID, r.Label = CleanField(r.User), CleanField(r.HostID), CleanField(r.Label)
		r.Status, r.Version, r.Doc, r.Policy = CleanField(r.Status), CleanField(r.Version), CleanField(r.Doc), CleanField(r.Policy)
		users[r.User] = true
		if r.HostID != "" {
			rep.Hosts++
		}
		rep.Counts[r.Status]++
		rr := ReportRow{User: r.User, HostID: r.HostID, HostLabel: r.Label, Owner: r.Owner, Status: r.Status,
			StatusAt: ptr(r.StatusAt), BackupAt: ptr(r.BackupAt), ExpiresAt: ptr(r.ExpiresAt), Deadline: ptr(r.Deadline),
			SetupExpires: ptr(r.SetupExpires), DueAt: ptr(r.DueAt()), AgentVersion: r.Version, Doc: r.Doc, Policy: r.Policy, Note: r.Note,
			Alert: r.Alert(now, within)}
		if r.Status != "OK" {
			rr.Reason = cleanReason(cmp.Or(r.Reason, r.Note, "the agent gave no reason"))
		}
		if rr.Alert {
			rep.Alerts++
		}
		rep.Rows = append(rep.Rows, rr)
	}
	rep.Users = len(users)
	return rep
}

// cleanReason makes a reason read from Vault safe to print: CleanField's
// rules word by word (spaces kept), at most maxReason bytes.
func cleanReason(v string) string {
	words := strings.Fields(v)
	for i, w := range words {
		words[i] = CleanField(w)
	}
	return clean(strings.Join(words, " "), maxReason)
}

func ptr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
