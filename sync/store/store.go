// Package store keeps the backup copy of a user's login: the Vault KV v2 document
// the fleet already uses, or a local file when no Vault is configured.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// Field names of the reference tool's Vault document. Other keys at the same
// path (vaultwarden_* …) belong to other tools and are always written back.
const (
	FieldOAuthJSON           = "claude_ai_oauth_json"
	FieldExpiresAtMs         = "credential_expires_at_ms"
	FieldBackedUpAt          = "backed_up_at"
	FieldSetupToken          = "setup_token"
	FieldSetupTokenExpiresAt = "setup_token_expires_at"
)

var (
	// ErrUnreachable: the store could not be asked (network, timeout, sealed, 5xx).
	ErrUnreachable = errors.New("vault unreachable")
	// ErrForbidden: the store answered 403 (wrong path, foreign or revoked token).
	ErrForbidden = errors.New("permission denied by vault")
	// ErrConflict: another writer changed the document between our read and write.
	ErrConflict = errors.New("check-and-set conflict")
	// ErrTokenFile: the scoped Vault token file is missing, empty or not private.
	ErrTokenFile = errors.New("vault token file unusable")
	// ErrTokenExposed (with ErrTokenFile): the token file's mode let other
	// users in. The token must be taken as known to them: only a new one
	// mends it (provision mints it and revokes this one).
	ErrTokenExposed = errors.New("readable by others")
	// ErrForeignToken: the token is not this user's scoped token.
	ErrForeignToken = errors.New("vault token is not this user's")
	// ErrMisconfigured: Vault cannot be reached as configured and waiting will
	// not change that (an https address on an http listener or the reverse, a
	// certificate nobody told us to trust, an address that is not one).
	ErrMisconfigured = errors.New("vault configuration error")
	// ErrNoDocument: the metadata to patch does not exist yet (a new user
	// before the first backup).
	ErrNoDocument = errors.New("no document yet")
	// ErrSkip, returned by an Update function, ends the update without a write.
	ErrSkip = errors.New("nothing to write")
)

// Doc is the document at the user's path, as read.
type Doc struct {
	Exists  bool // false when the path has no current version
	Version int  // KV version read (0 when none)
	fields  map[string]any
	// setup, when set, holds the setup-token fields of the user's main
	// document: a host document has none of its own (one per user).
	setup map[string]any
	path  string // where it was read (Vault), for the write that follows
}

// NewDoc builds a document from raw fields (used by stores and tests).
func NewDoc(fields map[string]any, version int) *Doc {
	if fields == nil {
		fields = map[string]any{}
	}
	return &Doc{Exists: len(fields) > 0 || version > 0, Version: version, fields: fields}
}

func (d *Doc) str(key string) (string, bool, error) {
	v, ok := d.field(key)
	if !ok || v == nil {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", true, fmt.Errorf("field %s is a %T, want a string", key, v)
	}
	return s, true, nil
}

// field is a field's value; the setup token's come from the main document
// when this is a host document.
func (d *Doc) field(key string) (any, bool) {
	if d.setup != nil && (key == FieldSetupToken || key == FieldSetupTokenExpiresAt) {
		v, ok := d.setup[key]
		return v, ok
	}
	v, ok := d.fields[key]
	return v, ok
}

// OAuth decodes claude_ai_oauth_json. It returns (nil, nil) when the document has
// no login, and an error when the field is there but is not a JSON object.
func (d *Doc) OAuth() (*credentials.OAuth, error) {
	s, ok, err := d.str(FieldOAuthJSON)
	if err != nil {
		return nil, err
	}
	if !ok || s == "" {
		return nil, nil
	}
	o, err := credentials.ParseOAuth([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("field %s: %w", FieldOAuthJSON, err)
	}
	return o, nil
}

// SetupToken returns the admin-set setup token ("" when not in setup-token mode).
func (d *Doc) SetupToken() credentials.Secret {
	s, _, err := d.str(FieldSetupToken)
	if err != nil {
		return ""
	}
	return credentials.Secret(s)
}

// SetupTokenProblem says why a setup_token field that is there cannot be used
// ("" when it is absent, null or a string). It never quotes the value.
func (d *Doc) SetupTokenProblem() string {
	if _, _, err := d.str(FieldSetupToken); err != nil {
		return err.Error()
	}
	return ""
}

// SetupTokenExpiresAt parses setup_token_expires_at: RFC 3339, or ms/seconds
// since the epoch. Zero when absent or unreadable.
func (d *Doc) SetupTokenExpiresAt() time.Time {
	s, ok, err := d.str(FieldSetupTokenExpiresAt)
	if err != nil || !ok || s == "" {
		raw, _ := d.field(FieldSetupTokenExpiresAt)
		if v, ok := raw.(json.Number); ok {
			s = v.String()
		} else if f, ok := raw.(float64); ok {
			s = strconv.FormatFloat(f, 'f', 0, 64)
		} else {
			return time.Time{}
		}
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > 1e11 {
			return time.UnixMilli(n)
		}
		return time.Unix(n, 0)
	}
	return time.Time{}
}

// BackedUpAt is backed_up_at (zero when absent or unreadable).
func (d *Doc) BackedUpAt() time.Time {
	s, _, _ := d.str(FieldBackedUpAt)
	t, _ := time.Parse(time.RFC3339, s)
	return t
}

// Keys lists the document's field names (never values).
func (d *Doc) Keys() []string {
	keys := make([]string, 0, len(d.fields))
	for k := range d.fields {
		keys = append(keys, k)
	}
	return keys
}

// merged returns the document's fields with set applied on top.
func (d *Doc) merged(set map[string]any) map[string]any {
	out := make(map[string]any, len(d.fields)+len(set))
	for k, v := range d.fields {
		out[k] = v
	}
	for k, v := range set {
		out[k] = v
	}
	return out
}

// Doc holds secrets in unexported fields (which fmt prints raw), so it prints as
// its version only; value receivers cover a dereferenced Doc too, and LogValue
// is nil-safe for slog.
func (d Doc) String() string             { return fmt.Sprintf("[redacted vault document v%d]", d.Version) }
func (d Doc) GoString() string           { return d.String() }
func (d Doc) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(d.String())) }
func (d *Doc) LogValue() slog.Value {
	if d == nil {
		return slog.StringValue("<nil>")
	}
	return slog.StringValue(d.String())
}

// BackupFields are the fields a backup writes: exactly the reference tool's.
func BackupFields(o *credentials.OAuth, now time.Time) map[string]any {
	return map[string]any{
		FieldOAuthJSON:   string(o.Compact()),
		FieldExpiresAtMs: strconv.FormatInt(o.ExpiresAtMs(), 10),
		FieldBackedUpAt:  now.UTC().Format(time.RFC3339),
	}
}

// Store is where backups live.
type Store interface {
	// Describe names the store for humans ("vault https://… secret/…", "local file …").
	Describe() string
	// Read returns the latest version (Exists false when there is none).
	Read(ctx context.Context) (*Doc, error)
	// Update reads the latest version, calls fn with it, merges the fields fn
	// returns over the document at top level and writes with check-and-set on the
	// version read. On a conflict it reads again and calls fn again, a bounded
	// number of times. fn returning ErrSkip ends the update without a write.
	Update(ctx context.Context, fn func(cur *Doc) (map[string]any, error)) (*Doc, error)
}

// maxConflicts bounds the read-merge-write loop under concurrent writers.
const maxConflicts = 5
