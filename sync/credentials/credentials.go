// Package credentials models Claude Code's .credentials.json: it parses and
// validates the claudeAiOauth login, merges only that object, keeps every key and
// field it does not understand, and writes the file atomically.
package credentials

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"
	"unicode/utf8"
)

// OAuthKey is the top-level key of Claude's login in the credentials file.
const OAuthKey = "claudeAiOauth"

// ErrNoLogin means the file has no claudeAiOauth object at all.
var ErrNoLogin = errors.New("no claudeAiOauth login in the credentials file")

// Secret is a token. It prints as [redacted] however it is formatted or logged;
// Reveal is the only way to the value.
type Secret string

func (s Secret) String() string             { return "[redacted]" }
func (s Secret) GoString() string           { return "[redacted]" }
func (s Secret) LogValue() slog.Value       { return slog.StringValue("[redacted]") }
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted]")) }

// Reveal returns the token itself, for the few places that must send or store it.
func (s Secret) Reveal() string { return string(s) }

// Fingerprint is a short, non-reversible name for a token, safe to log and keep.
func (s Secret) Fingerprint() string {
	if s == "" {
		return "empty"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Short is the first 8 hex digits of the fingerprint, for log lines.
func (s Secret) Short() string {
	fp := s.Fingerprint()
	if len(fp) > 8 {
		return fp[:8]
	}
	return fp
}

// OAuth is the claudeAiOauth object. Unknown fields are kept in order.
type OAuth struct {
	obj          *object
	access       Secret
	refresh      Secret
	expiresAt    int64 // ms since epoch; 0 when absent or not a number
	hasExpiresAt bool
	refreshUntil int64 // refreshTokenExpiresAt, ms; 0 when absent
	problem      error // why it is not usable; nil when usable
}

// ParseOAuth parses a claudeAiOauth object (e.g. Vault's claude_ai_oauth_json).
// A syntactically valid object with wrong or missing fields parses without error;
// Usable says what is wrong with it.
func ParseOAuth(raw []byte) (*OAuth, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	return fromObject(obj), nil
}

func fromObject(obj *object) *OAuth {
	o := &OAuth{obj: obj}
	var problems []string
	o.access, o.refresh, problems = tokenFields(obj, "claudeAiOauth")
	if raw, ok := obj.get("expiresAt"); !ok {
		problems = append(problems, "expiresAt is missing")
	} else if n, ok := number(raw); !ok {
		problems = append(problems, "expiresAt is not a number")
	} else {
		o.expiresAt, o.hasExpiresAt = n, true
	}
	if raw, ok := obj.get("refreshTokenExpiresAt"); ok {
		if n, ok := number(raw); ok {
			o.refreshUntil = n
		}
	}
	if len(problems) > 0 {
		o.problem = errors.New(joinProblems(problems))
	}
	return o
}

// tokenFields reads a login's accessToken and refreshToken, and says what is
// wrong with them (what names the object in that). encoding/json turns
// invalid UTF-8 into U+FFFD when it decodes a string, so a token with a bad
// byte would come out silently changed (and so would its backup): an object
// with a bad byte anywhere is broken. Other keys keep their bytes as they are.
func tokenFields(obj *object, what string) (access, refresh Secret, problems []string) {
	for _, k := range obj.keys {
		if !utf8.Valid(obj.vals[k]) {
			problems = append(problems, what+" is not valid UTF-8")
			break
		}
	}
	access, problems = stringField(obj, "accessToken", problems)
	refresh, problems = stringField(obj, "refreshToken", problems)
	return access, refresh, problems
}

func stringField(obj *object, name string, problems []string) (Secret, []string) {
	raw, ok := obj.get(name)
	if !ok {
		return "", append(problems, name+" is missing")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", append(problems, name+" is not a string")
	}
	if s == "" {
		return "", append(problems, name+" is empty")
	}
	return Secret(s), problems
}

func number(raw json.RawMessage) (int64, bool) {
	// json.Number also accepts a JSON string holding digits ("123"); Claude's
	// expiresAt is a number, and a string there is a broken login.
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] == '"' {
		return 0, false
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false
	}
	if i, err := n.Int64(); err == nil {
		return i, true
	}
	f, err := n.Float64()
	if err != nil || f > 1<<62 || f < -(1<<62) {
		return 0, false
	}
	return int64(f), true
}

func joinProblems(p []string) string {
	var b bytes.Buffer
	for i, s := range p {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Usable reports why the login cannot be used (nil when it can): a non-empty
// accessToken and refreshToken and a numeric expiresAt.
func (o *OAuth) Usable() error { return o.problem }

// AccessToken and RefreshToken return the tokens (possibly empty).
func (o *OAuth) AccessToken() Secret  { return o.access }
func (o *OAuth) RefreshToken() Secret { return o.refresh }

// Scopes is the login's "scopes" array; ok is false when the object has none
// (or holds something other than an array of strings there).
func (o *OAuth) Scopes() (scopes []string, ok bool) {
	raw, present := o.obj.get("scopes")
	if !present {
		return nil, false
	}
	if err := json.Unmarshal(raw, &scopes); err != nil || scopes == nil {
		return nil, false
	}
	return scopes, true
}

// ExpiresAtMs is expiresAt in ms since the epoch (0 when absent).
func (o *OAuth) ExpiresAtMs() int64 { return o.expiresAt }

// ExpiresAt is the access token's expiry (zero time when absent).
func (o *OAuth) ExpiresAt() time.Time {
	if !o.hasExpiresAt {
		return time.Time{}
	}
	return time.UnixMilli(o.expiresAt)
}

// RefreshTokenExpiresAt is the login's own deadline, zero when Claude did not say.
func (o *OAuth) RefreshTokenExpiresAt() time.Time {
	if o.refreshUntil == 0 {
		return time.Time{}
	}
	return time.UnixMilli(o.refreshUntil)
}

// Compact is the object as compact JSON, fields in their original order. It
// contains tokens: it goes to Vault or the file, never to a log.
func (o *OAuth) Compact() []byte {
	b, err := o.obj.marshal("")
	if err != nil {
		// Values came from a successful parse, so they compact.
		panic("credentials: compacting a parsed object failed")
	}
	return b
}

// Equal says whether two logins are the same object, field for field.
func (o *OAuth) Equal(p *OAuth) bool {
	if o == nil || p == nil {
		return o == p
	}
	return bytes.Equal(o.Compact(), p.Compact())
}

// WithAccessToken returns a copy whose accessToken and expiresAt are replaced and
// every other field kept (used for the setup-token backfill).
func (o *OAuth) WithAccessToken(token Secret, expiresAt time.Time) *OAuth {
	c := o.obj.clone()
	tb, _ := json.Marshal(token.Reveal())
	c.set("accessToken", tb)
	c.set("expiresAt", json.RawMessage(strconv.FormatInt(expiresAt.UnixMilli(), 10)))
	return fromObject(c)
}

// Value receivers, so a dereferenced OAuth (whose token fields are unexported,
// hence printed raw by fmt) is redacted too. LogValue stays on the pointer so
// slog never calls it through a nil pointer (a panic and a stack in the log).
func (o OAuth) String() string             { return "[redacted claudeAiOauth]" }
func (o OAuth) GoString() string           { return "[redacted claudeAiOauth]" }
func (o *OAuth) LogValue() slog.Value      { return slog.StringValue("[redacted claudeAiOauth]") }
func (o OAuth) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted claudeAiOauth]")) }

// File is a whole credentials file.
type File struct {
	top *object
}

// Parse parses a credentials file. It fails only when the bytes are not a JSON
// object; a missing or broken login is reported by OAuth.
func Parse(data []byte) (*File, error) {
	obj, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	return &File{top: obj}, nil
}

// Empty is a file with nothing in it, the base when there is no file to merge into.
func Empty() *File { return &File{top: &object{vals: map[string]json.RawMessage{}}} }

// OAuth returns the claudeAiOauth object. ErrNoLogin when the key is absent; an
// error when it is not a JSON object. A returned login may still be unusable.
func (f *File) OAuth() (*OAuth, error) {
	raw, ok := f.top.get(OAuthKey)
	if !ok {
		return nil, ErrNoLogin
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, errors.New("claudeAiOauth is null")
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, fmt.Errorf("claudeAiOauth: %w", err)
	}
	return fromObject(obj), nil
}

// WithOAuth returns a copy of the file whose claudeAiOauth is o; every other key
// is kept as it was.
func (f *File) WithOAuth(o *OAuth) *File {
	c := f.top.clone()
	c.set(OAuthKey, o.Compact())
	return &File{top: c}
}

// Keys lists the top-level keys in order (names only, never values).
func (f *File) Keys() []string { return append([]string(nil), f.top.keys...) }

// Marshal renders the file as Claude writes it: indented JSON.
func (f *File) Marshal() ([]byte, error) {
	b, err := f.top.marshal("  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func (f *File) String() string       { return "[redacted credentials file]" }
func (f *File) GoString() string     { return "[redacted credentials file]" }
func (f *File) LogValue() slog.Value { return slog.StringValue("[redacted credentials file]") }

// With returns a copy with the given fields set (values are marshalled to JSON)
// and every other field kept in place. A nil value removes nothing: it is skipped.
func (o *OAuth) With(fields map[string]any) (*OAuth, error) {
	c, err := o.obj.with(fields)
	if err != nil {
		return nil, err
	}
	return fromObject(c), nil
}
