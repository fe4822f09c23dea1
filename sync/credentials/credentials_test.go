package credentials

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testAccess  = "sk-ant-oat01-ACCESSaccessACCESSaccess0123456789"
	testRefresh = "sk-ant-ort01-REFRESHrefreshREFRESHrefresh0123456789"
	testExpires = int64(1767225600000)
)

// loginJSON is a claudeAiOauth object the way Claude writes it.
func loginJSON(access, refresh string, expiresAt int64) string {
	return `{"accessToken":"` + access + `","refreshToken":"` + refresh + `","expiresAt":` +
		strconv.FormatInt(expiresAt, 10) + `,"scopes":["user:inference","user:profile"],"subscriptionType":"enterprise"}`
}

func fileJSON(oauth string) string {
	return `{"claudeAiOauth":` + oauth + `}`
}

func TestParseClassify(t *testing.T) {
	deep := `{"x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`
	okDeep := `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `,` +
		`"claudeAiOauth":` + loginJSON(testAccess, testRefresh, testExpires) + `}`
	tests := []struct {
		name      string
		data      string
		parseErr  bool   // Parse itself fails
		oauthErr  error  // File.OAuth error (errors.Is), or nil
		oauthBad  bool   // File.OAuth fails with some other error
		unusable  string // substring of Usable() error; "" = usable
		wantState State
	}{
		{name: "usable", data: fileJSON(loginJSON(testAccess, testRefresh, testExpires)), wantState: Usable},
		{name: "usable float expiresAt", data: fileJSON(`{"accessToken":"a","refreshToken":"r","expiresAt":1.7e12}`), wantState: Usable},
		{name: "usable with deep-ish sibling", data: okDeep, wantState: Usable},
		{name: "empty refreshToken", data: fileJSON(loginJSON(testAccess, "", testExpires)), unusable: "refreshToken is empty", wantState: Clobbered},
		{name: "claude's dead login", data: fileJSON(`{"accessToken":"","refreshToken":"","expiresAt":0}`), unusable: "accessToken is empty", wantState: Clobbered},
		{name: "missing accessToken", data: fileJSON(`{"refreshToken":"r","expiresAt":1}`), unusable: "accessToken is missing", wantState: Clobbered},
		{name: "refreshToken not a string", data: fileJSON(`{"accessToken":"a","refreshToken":5,"expiresAt":1}`), unusable: "refreshToken is not a string", wantState: Clobbered},
		{name: "expiresAt as string", data: fileJSON(`{"accessToken":"a","refreshToken":"r","expiresAt":"1767225600000"}`), unusable: "expiresAt is not a number", wantState: Clobbered},
		{name: "expiresAt missing", data: fileJSON(`{"accessToken":"a","refreshToken":"r"}`), unusable: "expiresAt is missing", wantState: Clobbered},
		{name: "expiresAt null", data: fileJSON(`{"accessToken":"a","refreshToken":"r","expiresAt":null}`), unusable: "expiresAt is not a number", wantState: Clobbered},
		{name: "claudeAiOauth null", data: `{"claudeAiOauth":null}`, oauthBad: true, wantState: Clobbered},
		{name: "claudeAiOauth array", data: `{"claudeAiOauth":[1,2]}`, oauthBad: true, wantState: Clobbered},
		{name: "claudeAiOauth string", data: `{"claudeAiOauth":"x"}`, oauthBad: true, wantState: Clobbered},
		{name: "claudeAiOauth missing", data: `{"mcpOAuth":{}}`, oauthErr: ErrNoLogin, wantState: NoLogin},
		{name: "empty object", data: `{}`, oauthErr: ErrNoLogin, wantState: NoLogin},
		{name: "truncated JSON", data: `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-abc`, parseErr: true, wantState: Clobbered},
		{name: "empty file", data: ``, parseErr: true, wantState: Clobbered},
		{name: "top-level array", data: `[{"claudeAiOauth":{}}]`, parseErr: true, wantState: Clobbered},
		{name: "invalid UTF-8 in the login", data: fileJSON(`{"accessToken":"a` + "\xff\xfe" + `b","refreshToken":"r","expiresAt":1}`), unusable: "not valid UTF-8", wantState: Clobbered},
		{name: "invalid UTF-8 in an unknown login field", data: fileJSON(`{"accessToken":"a","refreshToken":"r","expiresAt":1,"x":"` + "\xc3" + `"}`), unusable: "not valid UTF-8", wantState: Clobbered},
		{name: "invalid UTF-8 elsewhere", data: `{"pluginSecrets":"` + "\xff" + `",` + `"claudeAiOauth":` + loginJSON(testAccess, testRefresh, testExpires) + `}`, wantState: Usable},
		{name: "nesting deeper than 10000", data: deep, parseErr: true, wantState: Clobbered},
		{name: "trailing garbage", data: fileJSON(loginJSON(testAccess, testRefresh, testExpires)) + ` x`, parseErr: true, wantState: Clobbered},
		{name: "second object", data: `{}{}`, parseErr: true, wantState: Clobbered},
		{name: "trailing newline ok", data: fileJSON(loginJSON(testAccess, testRefresh, testExpires)) + "\n\n", wantState: Usable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.data))
			if tt.parseErr {
				if err == nil {
					t.Fatalf("Parse(%q) = nil error; want an error", tt.data)
				}
			} else {
				if err != nil {
					t.Fatalf("Parse(%q) = %v; want no error", tt.data, err)
				}
				o, err := f.OAuth()
				switch {
				case tt.oauthErr != nil:
					if !errors.Is(err, tt.oauthErr) {
						t.Errorf("OAuth() of %q = %v; want %v", tt.data, err, tt.oauthErr)
					}
				case tt.oauthBad:
					if err == nil || errors.Is(err, ErrNoLogin) {
						t.Errorf("OAuth() of %q = %v; want a malformed-login error", tt.data, err)
					}
				default:
					if err != nil {
						t.Fatalf("OAuth() of %q = %v; want no error", tt.data, err)
					}
					uerr := o.Usable()
					if tt.unusable == "" && uerr != nil {
						t.Errorf("Usable() of %q = %v; want nil", tt.data, uerr)
					}
					if tt.unusable != "" && (uerr == nil || !strings.Contains(uerr.Error(), tt.unusable)) {
						t.Errorf("Usable() of %q = %v; want an error containing %q", tt.data, uerr, tt.unusable)
					}
				}
			}
			l := &Local{Raw: []byte(tt.data)}
			l.classify()
			if l.State != tt.wantState {
				t.Errorf("classify(%q) = %v (%v); want %v", tt.data, l.State, l.Problem, tt.wantState)
			}
			if tt.wantState != Usable && l.Problem == nil {
				t.Errorf("classify(%q): Problem = nil; want a reason", tt.data)
			}
		})
	}
}

func TestOAuthAccessors(t *testing.T) {
	o, err := ParseOAuth([]byte(`{"accessToken":"` + testAccess + `","refreshToken":"` + testRefresh +
		`","expiresAt":1767225600000,"refreshTokenExpiresAt":1769817600000}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := o.AccessToken().Reveal(); got != testAccess {
		t.Errorf("AccessToken() = %q; want %q", got, testAccess)
	}
	if got := o.RefreshToken().Reveal(); got != testRefresh {
		t.Errorf("RefreshToken() = %q; want %q", got, testRefresh)
	}
	if got := o.ExpiresAtMs(); got != testExpires {
		t.Errorf("ExpiresAtMs() = %d; want %d", got, testExpires)
	}
	if got, want := o.ExpiresAt(), time.UnixMilli(testExpires); !got.Equal(want) {
		t.Errorf("ExpiresAt() = %v; want %v", got, want)
	}
	if got, want := o.RefreshTokenExpiresAt(), time.UnixMilli(1769817600000); !got.Equal(want) {
		t.Errorf("RefreshTokenExpiresAt() = %v; want %v", got, want)
	}
	p, _ := ParseOAuth([]byte(`{"accessToken":"a","refreshToken":"r"}`))
	if !p.ExpiresAt().IsZero() || !p.RefreshTokenExpiresAt().IsZero() {
		t.Errorf("ExpiresAt()/RefreshTokenExpiresAt() without the fields = %v/%v; want zero times", p.ExpiresAt(), p.RefreshTokenExpiresAt())
	}
	if o.Equal(p) || !o.Equal(o) {
		t.Errorf("Equal: o.Equal(p) = %v, o.Equal(o) = %v; want false, true", o.Equal(p), o.Equal(o))
	}
	if _, err := ParseOAuth([]byte(`[]`)); err == nil {
		t.Errorf("ParseOAuth(`[]`) = nil error; want an error")
	}
}

func TestFingerprint(t *testing.T) {
	a, b := Secret(testAccess), Secret(testRefresh)
	if a.Fingerprint() == b.Fingerprint() {
		t.Errorf("Fingerprint of two tokens is the same: %s", a.Fingerprint())
	}
	if len(a.Fingerprint()) != 64 || len(a.Short()) != 8 || !strings.HasPrefix(a.Fingerprint(), a.Short()) {
		t.Errorf("Fingerprint() = %q, Short() = %q; want 64 hex digits and its 8-digit prefix", a.Fingerprint(), a.Short())
	}
	if got := Secret("").Fingerprint(); got != "empty" {
		t.Errorf(`Secret("").Fingerprint() = %q; want "empty"`, got)
	}
	if strings.Contains(a.Fingerprint(), testAccess) {
		t.Errorf("Fingerprint() contains the token")
	}
}

// A whole file as a recent Claude writes it, with keys and fields we do not know.
const richFile = `{
  "mcpOAuth": {
    "github|8f3a": {"serverName": "github", "accessToken": "gho_mcpTOKEN", "expiresAt": 0, "extra": [1, 2.50, {"z": null}]}
  },
  "claudeAiOauth": {
    "accessToken": "sk-ant-oat01-ACCESSaccessACCESSaccess0123456789",
    "refreshToken": "sk-ant-ort01-REFRESHrefreshREFRESHrefresh0123456789",
    "expiresAt": 1767225600000,
    "scopes": ["user:inference", "user:profile"],
    "subscriptionType": "enterprise",
    "futureField": {"nested": [true, false], "n": 1.000},
    "accountUuid": "0000-1111"
  },
  "pluginSecrets": {"p": "s\u00e9cret \"quoted\""},
  "trustedDeviceToken": "tdt-123"
}
`

func TestUnknownKeysPreserved(t *testing.T) {
	f, err := Parse([]byte(richFile))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(f.Keys(), ","), "mcpOAuth,claudeAiOauth,pluginSecrets,trustedDeviceToken"; got != want {
		t.Errorf("Keys() = %q; want %q", got, want)
	}
	o, err := f.OAuth()
	if err != nil {
		t.Fatal(err)
	}
	newLogin, err := ParseOAuth([]byte(`{"accessToken":"sk-ant-oat01-NEW","refreshToken":"sk-ant-ort01-NEW","expiresAt":1767229200000,"newField":[1,{"a":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		login     *OAuth
		wantOAuth string
	}{
		{name: "same login", login: o,
			wantOAuth: `{"accessToken":"sk-ant-oat01-ACCESSaccessACCESSaccess0123456789","refreshToken":"sk-ant-ort01-REFRESHrefreshREFRESHrefresh0123456789","expiresAt":1767225600000,"scopes":["user:inference","user:profile"],"subscriptionType":"enterprise","futureField":{"nested":[true,false],"n":1.000},"accountUuid":"0000-1111"}`},
		{name: "new login", login: newLogin,
			wantOAuth: `{"accessToken":"sk-ant-oat01-NEW","refreshToken":"sk-ant-ort01-NEW","expiresAt":1767229200000,"newField":[1,{"a":"b"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := f.WithOAuth(tt.login).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			g, err := Parse(out)
			if err != nil {
				t.Fatalf("Parse(Marshal()) = %v", err)
			}
			if got, want := strings.Join(g.Keys(), ","), "mcpOAuth,claudeAiOauth,pluginSecrets,trustedDeviceToken"; got != want {
				t.Errorf("keys after WithOAuth = %q; want %q", got, want)
			}
			// Values of the keys we do not own come back byte for byte (compacted).
			for key, want := range map[string]string{
				"mcpOAuth":           `{"github|8f3a":{"serverName":"github","accessToken":"gho_mcpTOKEN","expiresAt":0,"extra":[1,2.50,{"z":null}]}}`,
				"pluginSecrets":      `{"p":"s\u00e9cret \"quoted\""}`,
				"trustedDeviceToken": `"tdt-123"`,
			} {
				raw, _ := g.top.get(key)
				if got := compact(t, raw); got != want {
					t.Errorf("%s after WithOAuth = %s; want %s", key, got, want)
				}
			}
			go2, err := g.OAuth()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(go2.Compact()); got != tt.wantOAuth {
				t.Errorf("claudeAiOauth after WithOAuth = %s; want %s", got, tt.wantOAuth)
			}
			if !bytes.HasSuffix(out, []byte("}\n")) || !bytes.Contains(out, []byte("\n  \"claudeAiOauth\": {")) {
				t.Errorf("Marshal() is not Claude's indented layout:\n%s", out)
			}
		})
	}
	// The original is not changed by WithOAuth.
	if o2, _ := f.OAuth(); o2.AccessToken().Reveal() != testAccess {
		t.Errorf("WithOAuth changed the file it was called on")
	}
}

func compact(t *testing.T, raw []byte) string {
	t.Helper()
	obj, err := parseObject([]byte(`{"v":` + string(raw) + `}`))
	if err != nil {
		t.Fatalf("parse %s: %v", raw, err)
	}
	b, err := obj.marshal("")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(strings.TrimPrefix(string(b), `{"v":`), "}")
}

func TestEmptyWithOAuth(t *testing.T) {
	o, _ := ParseOAuth([]byte(loginJSON(testAccess, testRefresh, testExpires)))
	out, err := Empty().WithOAuth(o).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Keys(), ","); got != OAuthKey {
		t.Errorf("Empty().WithOAuth keys = %q; want %q", got, OAuthKey)
	}
}

func TestWithAccessToken(t *testing.T) {
	o, err := ParseOAuth([]byte(`{"accessToken":"` + testAccess + `","refreshToken":"` + testRefresh +
		`","expiresAt":1767225600000,"scopes":["user:inference"],"refreshTokenExpiresAt":1769817600000,"x":{"y":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.UnixMilli(1798761600000)
	b := o.WithAccessToken("sk-ant-oat01-SETUP", exp)
	want := `{"accessToken":"sk-ant-oat01-SETUP","refreshToken":"` + testRefresh +
		`","expiresAt":1798761600000,"scopes":["user:inference"],"refreshTokenExpiresAt":1769817600000,"x":{"y":1}}`
	if got := string(b.Compact()); got != want {
		t.Errorf("WithAccessToken().Compact() = %s; want %s", got, want)
	}
	if b.Usable() != nil || b.AccessToken() != "sk-ant-oat01-SETUP" || b.ExpiresAtMs() != exp.UnixMilli() {
		t.Errorf("WithAccessToken() = usable %v, access %q, expiresAt %d", b.Usable(), b.AccessToken().Reveal(), b.ExpiresAtMs())
	}
	if o.AccessToken().Reveal() != testAccess || o.ExpiresAtMs() != testExpires {
		t.Errorf("WithAccessToken changed the original")
	}
	// Works on a login that had no expiresAt either.
	p, _ := ParseOAuth([]byte(`{"accessToken":"a","refreshToken":"r"}`))
	if q := p.WithAccessToken("t", exp); q.Usable() != nil {
		t.Errorf("WithAccessToken on a login without expiresAt: Usable() = %v; want nil", q.Usable())
	}
}

// The tokens must not appear however the values holding them are printed.
func TestNoTokenInOutput(t *testing.T) {
	f, err := Parse([]byte(richFile))
	if err != nil {
		t.Fatal(err)
	}
	o, err := f.OAuth()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]any{
		"Secret":       Secret(testAccess),
		"*Secret":      func() *Secret { s := Secret(testAccess); return &s }(),
		"*OAuth":       o,
		"OAuth":        *o,
		"*File":        f,
		"File":         *f,
		"[]Secret":     []Secret{Secret(testAccess), Secret(testRefresh)},
		"struct":       struct{ A Secret }{Secret(testAccess)},
		"struct OAuth": struct{ O *OAuth }{o},
	}
	verbs := []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%d"}
	for name, v := range values {
		for _, verb := range verbs {
			got := fmt.Sprintf(verb, v)
			for _, tok := range []string{testAccess, testRefresh, "gho_mcpTOKEN", hexOf(testAccess), hexOf(testRefresh)} {
				if strings.Contains(got, tok) {
					t.Errorf("fmt.Sprintf(%q, %s) = %q; contains a token", verb, name, got)
				}
			}
		}
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, nil))
		log.Info("msg", "v", v)
		log.Info("msg", slog.Any("v", v))
		log.With("w", v).Info("msg")
		if !strings.HasPrefix(name, "[]") && !strings.HasPrefix(name, "struct") {
			// The JSON handler marshals nested values with encoding/json, so only
			// top-level values (which resolve through LogValue) are redacted there.
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("msg", "v", v)
		}
		if strings.Contains(buf.String(), testAccess) || strings.Contains(buf.String(), testRefresh) || strings.Contains(buf.String(), "gho_mcpTOKEN") {
			t.Errorf("slog of %s = %q; contains a token", name, buf.String())
		}
	}
	if got := Secret(testAccess).Reveal(); got != testAccess {
		t.Errorf("Reveal() = %q; want the token", got)
	}
}

func hexOf(s string) string { return fmt.Sprintf("%x", []byte(s)) }

func TestParseErrorsHideTokens(t *testing.T) {
	const tok = "sk-ant-oat01-LEAKleakLEAKleak"
	inputs := []string{
		`{"claudeAiOauth":{"accessToken":"` + tok + `" "refreshToken":"x"}}`,
		`{"claudeAiOauth":{"accessToken":` + tok + `}}`,
		`{` + tok + `}`,
		`{"claudeAiOauth":{"accessToken":"` + tok,
		`"` + tok + `"`,
		`{"a":1} ` + tok,
		`{"claudeAiOauth":{"accessToken":"` + tok + `"}} {"x":1}`,
		`{"claudeAiOauth":"` + tok + `"}`,
		`{"claudeAiOauth":["` + tok + `"]}`,
		`{"claudeAiOauth":{"accessToken":"` + tok + "\x01" + `"}}`,
		`{"claudeAiOauth":{"accessToken":"` + tok + `\q"}}`,
		`{"claudeAiOauth":{"accessToken":"` + tok + `","x":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}}`,
	}
	for _, in := range inputs {
		t.Run("", func(t *testing.T) {
			var errs []error
			f, err := Parse([]byte(in))
			errs = append(errs, err)
			if err == nil {
				_, err := f.OAuth()
				errs = append(errs, err)
			}
			_, err = ParseOAuth([]byte(in))
			errs = append(errs, err)
			l := &Local{Raw: []byte(in)}
			l.classify()
			errs = append(errs, l.Problem)
			some := false
			for _, err := range errs {
				if err == nil {
					continue
				}
				some = true
				if strings.Contains(err.Error(), "LEAK") {
					t.Errorf("error for %q = %q; contains the token", in, err)
				}
			}
			if !some {
				t.Errorf("no error at all for malformed %q", in)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{Missing: "missing", NoLogin: "no-login", Clobbered: "clobbered", Usable: "usable", State(42): "unknown"} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q; want %q", int(s), got, want)
		}
	}
}

// Bytes we do not understand, even invalid UTF-8 in a key we do not own, are
// written back as they were.
func TestForeignBytesKept(t *testing.T) {
	in := `{"pluginSecrets":{"p":"caf` + "\xe9" + `"},"claudeAiOauth":` + loginJSON(testAccess, testRefresh, testExpires) + `}`
	f, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse(invalid UTF-8 in pluginSecrets) = %v; want it kept", err)
	}
	o, _ := ParseOAuth([]byte(loginJSON("sk-ant-oat01-NEW", "sk-ant-ort01-NEW", testExpires)))
	out, err := f.WithOAuth(o).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte(`"caf`+"\xe9"+`"`)) {
		t.Errorf("Marshal() = %q; want pluginSecrets' bytes unchanged", out)
	}
}
