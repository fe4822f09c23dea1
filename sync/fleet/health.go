// Package fleet is the admin's view of every workstation's agents: the
// non-secret health each agent leaves in its user's Vault metadata (Health,
// one custom_metadata key per host), the reader that gathers it for all users
// without touching a secret (Read), the report `claude-auth-sync fleet`
// prints, and the read-only policy that reader needs.
package fleet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxHealthLen is the longest encoded Health: Vault's bound on one
// custom_metadata value.
const MaxHealthLen = 512

// OwnerKey is the main document's custom_metadata key naming the host whose
// login that document holds; every other host of the user backs up to
// <path>/hosts/<host id>.
const OwnerKey = "owner_host"

// hostKeyPrefix starts the custom_metadata key of one host's health.
const hostKeyPrefix = "host."

// Where a host's login is backed up.
const (
	DocMain  = "main"  // the user's main document (this host owns it)
	DocHosts = "hosts" // its own <path>/hosts/<host id>
)

// MetadataKey is the custom_metadata key of hostID's health in the user's
// main document.
func MetadataKey(hostID string) string { return hostKeyPrefix + hostID }

// HostOfKey is the host id of a health key, ok false for any other key.
func HostOfKey(key string) (hostID string, ok bool) {
	id, ok := strings.CutPrefix(key, hostKeyPrefix)
	return id, ok && id != ""
}

// Health is one host's last word about one user's login: nothing in it is a
// secret. A zero time or an empty string means unknown, and is left out of
// the encoding.
type Health struct {
	Label        string    // the host's readable name
	Status       string    // FAIL, WARN, UNKNOWN (no check yet), STOPPED, RECOVERED, SKIP or OK: the agent's verdict
	StatusAt     time.Time // when the agent last reported (its last line)
	BackupAt     time.Time // this host's last backup
	ExpiresAt    time.Time // the access token's expiry
	Deadline     time.Time // the login's refreshTokenExpiresAt
	SetupExpires time.Time // the setup token's end (setup-token mode only)
	Version      string    // the agent's version
	Doc          string    // DocMain or DocHosts
	// Policy is "old" when the agent's token still carries the escapable
	// policy of earlier versions (store.PolicyOld); else left out.
	Policy string
	// Reason says why Status is not OK: the line the agent's journal got
	// ("no check yet …" for UNKNOWN, "the agent stopped …" for STOPPED).
	Reason string
}

// Field caps: with them no Health can encode longer than MaxHealthLen.
const (
	maxLabel   = 64
	maxVersion = 64
	maxWord    = 16 // status and doc
	maxReason  = 160
)

// Encode is the custom_metadata value: "key=value" pairs joined by ";", in
// a fixed order, unknown values left out. Values never hold ";", "=" or a
// control character (they become "_"), and are cut to their caps.
func (h Health) Encode() string {
	var parts []string
	str := func(key, v string, max int) {
		if v = clean(v, max); v != "" {
			parts = append(parts, key+"="+v)
		}
	}
	unix := func(key string, t time.Time) {
		if !t.IsZero() {
			parts = append(parts, key+"="+strconv.FormatInt(t.Unix(), 10))
		}
	}
	str("label", h.Label, maxLabel)
	str("status", h.Status, maxWord)
	unix("status_at", h.StatusAt)
	unix("backup_at", h.BackupAt)
	unix("expires_at", h.ExpiresAt)
	unix("deadline", h.Deadline)
	unix("setup_expires", h.SetupExpires)
	str("version", h.Version, maxVersion)
	str("doc", h.Doc, maxWord)
	str("policy", h.Policy, maxWord)
	str("reason", h.Reason, maxReason)
	return strings.Join(parts, ";")
}

// clean makes v safe as a value: no separator, no control character, valid
// UTF-8, at most max bytes (cut on a character boundary).
func clean(v string, max int) string {
	v = strings.ToValidUTF8(v, "_")
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == ';' || r == '=' {
			return '_'
		}
		return r
	}, strings.TrimSpace(v))
	for len(v) > max {
		_, size := utf8.DecodeLastRuneInString(v)
		v = v[:len(v)-size]
	}
	return v
}

// MaxField is the longest string fleet shows from a value it read (a
// label, a host id, a status word, a version): the writer's cap.
const MaxField = 64

// CleanField makes a string read from Vault (anyone with the old policy,
// or a user's own token, may have written it) safe to print in a column:
// escape sequences and every other control or format character (bidi
// overrides, zero-width marks) removed, whitespace and invalid UTF-8
// replaced with '_' so a field cannot fake columns, cut to MaxField bytes.
func CleanField(v string) string {
	v = strings.ToValidUTF8(v, "_")
	var b strings.Builder
	for i := 0; i < len(v); {
		r, size := utf8.DecodeRuneInString(v[i:])
		i += size
		switch {
		case r == 0x1b:
			i = skipEscape(v, i)
		case r == 0x9b: // C1 CSI, as ESC [
			i = skipCSI(v, i)
		case r < 0x20 || (r >= 0x7f && r < 0xa0) || unicode.Is(unicode.Cf, r):
		case unicode.IsSpace(r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	v = strings.Trim(b.String(), "_")
	for len(v) > MaxField {
		_, size := utf8.DecodeLastRuneInString(v)
		v = v[:len(v)-size]
	}
	return v
}

// skipEscape returns where the escape sequence whose ESC ends at i ends: a
// CSI ("[" parameters, a final byte 0x40-0x7e), an OSC, DCS, SOS, PM or APC
// string (up to BEL or ST), or the one character after ESC.
func skipEscape(v string, i int) int {
	if i >= len(v) {
		return i
	}
	switch v[i] {
	case '[':
		return skipCSI(v, i+1)
	case ']', 'P', 'X', '^', '_':
		for i++; i < len(v); i++ {
			if v[i] == 0x07 {
				return i + 1
			}
			if v[i] == 0x1b && i+1 < len(v) && v[i+1] == '\\' {
				return i + 2
			}
		}
		return i
	}
	return i + 1
}

// skipCSI returns the end of a CSI sequence whose parameters start at i:
// after its final byte (0x40-0x7e).
func skipCSI(v string, i int) int {
	for ; i < len(v); i++ {
		if v[i] >= 0x40 && v[i] <= 0x7e {
			return i + 1
		}
	}
	return i
}

// maxUnix is the end of year 9999, the last second RFC 3339 (and so the
// JSON report) can write.
const maxUnix = 253402300799

// ErrHealth marks a value that is not a Health.
var ErrHealth = errors.New("not a health value")

// ParseHealth reads an encoded Health. Keys it does not know are skipped (a
// newer agent may say more), and so are parts without "="; a known time that
// is not whole seconds is an error.
func ParseHealth(s string) (Health, error) {
	var h Health
	if strings.TrimSpace(s) == "" {
		return h, fmt.Errorf("%w: empty", ErrHealth)
	}
	if len(s) > MaxHealthLen {
		return h, fmt.Errorf("%w: %d bytes, more than %d", ErrHealth, len(s), MaxHealthLen)
	}
	times := map[string]*time.Time{
		"status_at": &h.StatusAt, "backup_at": &h.BackupAt, "expires_at": &h.ExpiresAt,
		"deadline": &h.Deadline, "setup_expires": &h.SetupExpires,
	}
	strs := map[string]*string{"label": &h.Label, "status": &h.Status, "version": &h.Version, "doc": &h.Doc, "policy": &h.Policy,
		"reason": &h.Reason}
	for _, part := range strings.Split(s, ";") {
		key, val, ok := strings.Cut(part, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			continue
		}
		if p, ok := strs[key]; ok {
			*p = clean(val, MaxHealthLen) // fleet's report cleans it for display
			continue
		}
		if p, ok := times[key]; ok {
			val = strings.TrimSpace(val)
			if val == "" {
				continue
			}
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 || n > maxUnix {
				return Health{}, fmt.Errorf("%w: %s=%q is not unix seconds", ErrHealth, CleanField(key), CleanField(val))
			}
			*p = time.Unix(n, 0).UTC()
		}
	}
	return h, nil
}
