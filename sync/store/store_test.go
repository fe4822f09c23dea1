package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

const (
	testAccess  = "sk-ant-oat01-ACCESSaccessACCESSaccess0123456789"
	testRefresh = "sk-ant-ort01-REFRESHrefreshREFRESHrefresh0123456789"
	testSetup   = "sk-ant-oat01-SETUPsetupSETUPsetup0123456789"
)

const loginJSON = `{"accessToken":"` + testAccess + `","refreshToken":"` + testRefresh +
	`","expiresAt":1767225600000,"scopes":["user:inference"],"futureField":{"a":[1,2]}}`

func TestDocOAuth(t *testing.T) {
	tests := []struct {
		name     string
		fields   map[string]any
		wantNil  bool
		wantErr  bool
		usable   bool
		wantJSON string
	}{
		{name: "no field", fields: map[string]any{"vaultwarden_master_password": "x"}, wantNil: true},
		{name: "nil doc fields", fields: nil, wantNil: true},
		{name: "empty string", fields: map[string]any{FieldOAuthJSON: ""}, wantNil: true},
		{name: "null", fields: map[string]any{FieldOAuthJSON: nil}, wantNil: true},
		{name: "usable", fields: map[string]any{FieldOAuthJSON: loginJSON}, usable: true, wantJSON: loginJSON},
		{name: "unusable object", fields: map[string]any{FieldOAuthJSON: `{"accessToken":"a","refreshToken":"","expiresAt":1}`}},
		{name: "number instead of string", fields: map[string]any{FieldOAuthJSON: 42.0}, wantErr: true},
		{name: "json.Number instead of string", fields: map[string]any{FieldOAuthJSON: json.Number("42")}, wantErr: true},
		{name: "object instead of string", fields: map[string]any{FieldOAuthJSON: map[string]any{"accessToken": "a"}}, wantErr: true},
		{name: "invalid JSON", fields: map[string]any{FieldOAuthJSON: `{"accessToken":`}, wantErr: true},
		{name: "JSON array", fields: map[string]any{FieldOAuthJSON: `[]`}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDoc(tt.fields, 3)
			o, err := d.OAuth()
			switch {
			case tt.wantErr:
				if err == nil {
					t.Errorf("OAuth() of %v = %v, nil; want an error", tt.fields[FieldOAuthJSON], o)
				}
				return
			case err != nil:
				t.Fatalf("OAuth() = %v; want no error", err)
			case tt.wantNil:
				if o != nil {
					t.Errorf("OAuth() = %v; want nil", o)
				}
				return
			case o == nil:
				t.Fatalf("OAuth() = nil; want a login")
			}
			if got := o.Usable() == nil; got != tt.usable {
				t.Errorf("OAuth().Usable() = %v; want usable=%v", o.Usable(), tt.usable)
			}
			if tt.wantJSON != "" && string(o.Compact()) != tt.wantJSON {
				t.Errorf("OAuth().Compact() = %s; want %s", o.Compact(), tt.wantJSON)
			}
		})
	}
}

func TestDocErrorsHideTokens(t *testing.T) {
	d := NewDoc(map[string]any{FieldOAuthJSON: `{"accessToken":"` + testAccess + `" broken`}, 1)
	_, err := d.OAuth()
	if err == nil || strings.Contains(err.Error(), testAccess) {
		t.Errorf("OAuth() of a broken field = %v; want an error without the token", err)
	}
}

func TestSetupToken(t *testing.T) {
	tests := []struct {
		fields map[string]any
		want   credentials.Secret
	}{
		{map[string]any{FieldSetupToken: testSetup}, testSetup},
		{map[string]any{FieldSetupToken: ""}, ""},
		{map[string]any{FieldSetupToken: nil}, ""},
		{map[string]any{FieldSetupToken: 12.0}, ""},
		{map[string]any{}, ""},
	}
	for _, tt := range tests {
		if got := NewDoc(tt.fields, 1).SetupToken(); got != tt.want {
			t.Errorf("SetupToken() of %v = %q; want %q", tt.fields, got.Reveal(), tt.want.Reveal())
		}
	}
}

func TestSetupTokenExpiresAt(t *testing.T) {
	want := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		v    any
		want time.Time
	}{
		{"RFC3339", "2027-03-01T12:00:00Z", want},
		{"RFC3339 with offset", "2027-03-01T13:00:00+01:00", want},
		{"ms as string", "1803902400000", want},
		{"seconds as string", "1803902400", want},
		{"ms as json.Number", json.Number("1803902400000"), want},
		{"seconds as float64", 1803902400.0, want},
		{"ms as float64", 1803902400000.0, want},
		{"absent", nil, time.Time{}},
		{"empty", "", time.Time{}},
		{"garbage", "next spring", time.Time{}},
		{"bool", true, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := map[string]any{FieldSetupToken: testSetup}
			if tt.v != nil {
				fields[FieldSetupTokenExpiresAt] = tt.v
			}
			got := NewDoc(fields, 1).SetupTokenExpiresAt()
			if !got.Equal(tt.want) {
				t.Errorf("SetupTokenExpiresAt(%v) = %v; want %v", tt.v, got, tt.want)
			}
		})
	}
}

func TestBackedUpAt(t *testing.T) {
	want := time.Date(2026, 5, 4, 3, 2, 1, 0, time.UTC)
	if got := NewDoc(map[string]any{FieldBackedUpAt: "2026-05-04T03:02:01Z"}, 1).BackedUpAt(); !got.Equal(want) {
		t.Errorf("BackedUpAt() = %v; want %v", got, want)
	}
	if got := NewDoc(map[string]any{FieldBackedUpAt: "yesterday"}, 1).BackedUpAt(); !got.IsZero() {
		t.Errorf("BackedUpAt() of garbage = %v; want zero", got)
	}
}

func TestNewDoc(t *testing.T) {
	tests := []struct {
		fields  map[string]any
		version int
		exists  bool
	}{
		{nil, 0, false},
		{map[string]any{}, 0, false},
		{nil, 4, true}, // a version with no data (deleted latest) still exists as a version
		{map[string]any{"k": "v"}, 1, true},
	}
	for _, tt := range tests {
		d := NewDoc(tt.fields, tt.version)
		if d.Exists != tt.exists || d.Version != tt.version {
			t.Errorf("NewDoc(%v, %d) = Exists %v Version %d; want %v %d", tt.fields, tt.version, d.Exists, d.Version, tt.exists, tt.version)
		}
	}
	keys := NewDoc(map[string]any{"a": "1", "b": "2"}, 1).Keys()
	slices.Sort(keys)
	if strings.Join(keys, ",") != "a,b" {
		t.Errorf("Keys() = %v; want [a b]", keys)
	}
}

func TestBackupFields(t *testing.T) {
	o, err := credentials.ParseOAuth([]byte(`{ "accessToken" : "` + testAccess + `",
		"refreshToken": "` + testRefresh + `", "expiresAt": 1767225600000, "scopes": [ "user:inference" ] }`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 9, 30, 0, 0, time.FixedZone("CET", 3600))
	got := BackupFields(o, now)
	want := map[string]any{
		FieldOAuthJSON:   `{"accessToken":"` + testAccess + `","refreshToken":"` + testRefresh + `","expiresAt":1767225600000,"scopes":["user:inference"]}`,
		FieldExpiresAtMs: "1767225600000",
		FieldBackedUpAt:  "2026-01-01T08:30:00Z",
	}
	if len(got) != len(want) {
		t.Errorf("BackupFields() has %d keys %v; want exactly %d", len(got), keysOf(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k].(string)
		if !ok {
			t.Errorf("BackupFields()[%q] = %T; want a string", k, got[k])
			continue
		}
		if g != w {
			t.Errorf("BackupFields()[%q] = %q; want %q", k, g, w)
		}
	}
	// Its JSON is the reference tool's shape: all strings.
	b, _ := json.Marshal(got)
	var back map[string]string
	if err := json.Unmarshal(b, &back); err != nil {
		t.Errorf("BackupFields() does not round-trip as string fields: %v", err)
	}
}

func keysOf(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestSanitizedDisplayName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"devvm-claude-auth-first.last", "token-devvm-claude-auth-first-last"},
		{"devvm-claude-auth-alice", "token-devvm-claude-auth-alice"},
		{"devvm-claude-auth-a_b@c d", "token-devvm-claude-auth-a-b-c-d"},
		{"devvm-claude-auth-Bob99", "token-devvm-claude-auth-Bob99"},
	}
	for _, tt := range tests {
		if got := SanitizedDisplayName(tt.in); got != tt.want {
			t.Errorf("SanitizedDisplayName(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	if got := DisplayNameFor("first.last"); got != "devvm-claude-auth-first.last" {
		t.Errorf("DisplayNameFor(%q) = %q; want %q", "first.last", got, "devvm-claude-auth-first.last")
	}
	if got := PolicyFor("first.last"); got != "workstation-claude-first.last" {
		t.Errorf("PolicyFor(%q) = %q; want %q", "first.last", got, "workstation-claude-first.last")
	}
}

func TestCheckDrift(t *testing.T) {
	tests := []struct {
		name string
		user string
		info TokenInfo
		ok   bool
	}{
		{name: "right policy and name", user: "alice", ok: true,
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"default", "workstation-claude-alice"}}},
		{name: "first.last user", user: "first.last", ok: true,
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-first-last", Policies: []string{"default", "workstation-claude-first.last"}}},
		{name: "first.last with unsanitised name", user: "first.last",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-first.last", Policies: []string{"default", "workstation-claude-first.last"}}},
		{name: "missing policy", user: "alice",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"default"}}},
		{name: "other user's policy only", user: "alice",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"default", "workstation-claude-bob"}}},
		{name: "other user's policy added", user: "alice",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"default", "workstation-claude-alice", "workstation-claude-bob"}}},
		{name: "root", user: "alice",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"root", "workstation-claude-alice"}}},
		{name: "wrong display name", user: "alice",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-bob", Policies: []string{"default", "workstation-claude-alice"}}},
		{name: "empty display name", user: "alice",
			info: TokenInfo{Policies: []string{"default", "workstation-claude-alice"}}},
		{name: "prefix user", user: "al",
			info: TokenInfo{DisplayName: "token-devvm-claude-auth-al", Policies: []string{"default", "workstation-claude-alice"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDrift(tt.info, tt.user)
			if tt.ok && err != nil {
				t.Errorf("CheckDrift(%+v, %q) = %v; want nil", tt.info, tt.user, err)
			}
			if !tt.ok && (err == nil || !errors.Is(err, ErrForeignToken)) {
				t.Errorf("CheckDrift(%+v, %q) = %v; want %v", tt.info, tt.user, err, ErrForeignToken)
			}
		})
	}
}

func TestDocPrintsNoSecret(t *testing.T) {
	d := NewDoc(map[string]any{FieldOAuthJSON: loginJSON, FieldSetupToken: testSetup, "vaultwarden_master_password": "hunter2hunter2"}, 7)
	for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q"} {
		for _, v := range []any{d, *d} {
			got := fmt.Sprintf(verb, v)
			if strings.Contains(got, "sk-ant-") || strings.Contains(got, "hunter2") {
				t.Errorf("fmt.Sprintf(%q, %T) = %q; contains a secret", verb, v, got)
			}
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("doc", "doc", d, "value", *d)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("doc", "doc", d)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("nil doc", "doc", (*Doc)(nil))
	if strings.Contains(buf.String(), "panic") {
		t.Errorf("slog of a nil Doc = %q; want no panic", buf.String())
	}
	if strings.Contains(buf.String(), "sk-ant-") || strings.Contains(buf.String(), "hunter2") {
		t.Errorf("slog of a Doc = %q; contains a secret", buf.String())
	}
}

// TestCheckSegment: a name becomes exactly one safe segment of a Vault path
// or is refused as a configuration error, before any request.
func TestCheckSegment(t *testing.T) {
	for _, ok := range []string{"alice", "first.last", "a_b-c", "0a1b2c3d4e5f", "..a", "a..", "élodie"} {
		if err := CheckSegment("user", ok); err != nil {
			t.Errorf("CheckSegment(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../v", "%2e%2e", "a%2fb", "+", "*", "a*", "a b", "a\tb", "a\nb", "a\x1b[31m", "a\x7f", "a\u0085", "a\\b", "a#b", "a?b"} {
		if err := CheckSegment("user", bad); !errors.Is(err, ErrPathSegment) {
			t.Errorf("CheckSegment(%q) = %v; want ErrPathSegment", bad, err)
		}
	}
	for _, bad := range []string{"workstation//claude-users", "workstation/./x", "workstation/../x", "/x", "x/"} {
		if err := CheckPath("path", bad); !errors.Is(err, ErrPathSegment) {
			t.Errorf("CheckPath(%q) = %v; want ErrPathSegment", bad, err)
		}
	}
	if _, err := NewVault(VaultConfig{Address: "http://127.0.0.1:1", Mount: "secret", Path: "workstation/claude-users/alice", HostID: "..", User: "alice"}); !errors.Is(err, ErrMisconfigured) {
		t.Errorf("NewVault with host id \"..\" = %v; want ErrMisconfigured", err)
	}
	if _, err := NewVault(VaultConfig{Address: "http://127.0.0.1:1", Mount: "secret", Path: "workstation/claude-users/%2e%2e", User: "x"}); !errors.Is(err, ErrMisconfigured) {
		t.Errorf("NewVault with a path holding %%2e%%2e = %v; want ErrMisconfigured", err)
	}
}
