package credentials

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// MCPKey is the top-level key of Claude Code's MCP server logins: an object
// of entries keyed `<serverName>|<16 hex of a hash of the server's config>`.
const MCPKey = "mcpOAuth"

// MCPClientConfigKey holds, per entry key, a client secret given to
// `claude mcp add --client-secret` (clientSecret).
const MCPClientConfigKey = "mcpOAuthClientConfig"

// ErrNoMCPEntry: the file has no mcpOAuth entry under the key asked for.
var ErrNoMCPEntry = errors.New("no such mcpOAuth entry")

// MCPEntry is one mcpOAuth entry: an MCP server's login. Like OAuth it keeps
// every field it does not know, in order, byte for byte.
type MCPEntry struct {
	obj       *object
	access    Secret
	refresh   Secret
	secret    Secret
	expiresAt int64 // ms; 0 when absent
	problem   error
}

// maxExpiresAtMs is 9999-12-31T23:59:59.999Z.
const maxExpiresAtMs = 253402300799999

// ParseMCPEntry parses one mcpOAuth entry.
func ParseMCPEntry(raw []byte) (*MCPEntry, error) {
	obj, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	return mcpFromObject(obj), nil
}

func mcpFromObject(obj *object) *MCPEntry {
	e := &MCPEntry{obj: obj}
	var problems []string
	e.access, e.refresh, problems = tokenFields(obj, "the entry")
	e.secret = Secret(e.str("clientSecret"))
	if raw, ok := obj.get("expiresAt"); ok {
		// Milliseconds within years 1970-9999 (a time JSON can carry);
		// anything else counts as no expiry.
		if n, ok := number(raw); ok && n > 0 && n <= maxExpiresAtMs {
			e.expiresAt = n
		}
	}
	if len(problems) > 0 {
		e.problem = errors.New(joinProblems(problems))
	}
	return e
}

// str is a string field's value ("" when absent or not a string).
func (e *MCPEntry) str(name string) string {
	raw, ok := e.obj.get(name)
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// Usable says why the entry holds no login to refresh (nil when it holds
// both tokens).
func (e *MCPEntry) Usable() error { return e.problem }

// AccessToken, RefreshToken and ClientSecret are the entry's secrets (possibly empty).
func (e *MCPEntry) AccessToken() Secret  { return e.access }
func (e *MCPEntry) RefreshToken() Secret { return e.refresh }
func (e *MCPEntry) ClientSecret() Secret { return e.secret }

// ExpiresAt is the access token's expiry (zero when the entry has none: the
// server sent no expires_in).
func (e *MCPEntry) ExpiresAt() time.Time {
	if e.expiresAt <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(e.expiresAt)
}

// ServerName, ServerURL, ClientID and Scope are the entry's plain fields.
func (e *MCPEntry) ServerName() string { return e.str("serverName") }
func (e *MCPEntry) ServerURL() string  { return e.str("serverUrl") }
func (e *MCPEntry) ClientID() string   { return e.str("clientId") }
func (e *MCPEntry) Scope() string      { return e.str("scope") }

// Discovery is what the entry's discoveryState says of its authorization
// server (empty strings when absent).
type Discovery struct {
	AuthorizationServerURL string `json:"authorizationServerUrl"`
	AuthServerMetadataURL  string `json:"authServerMetadataUrl"`
	ResourceMetadataURL    string `json:"resourceMetadataUrl"`
}

// Discovery reads the entry's discoveryState.
func (e *MCPEntry) Discovery() Discovery {
	var d Discovery
	if raw, ok := e.obj.get("discoveryState"); ok {
		_ = json.Unmarshal(raw, &d)
	}
	return d
}

// Compact is the entry as compact JSON (secret).
func (e *MCPEntry) Compact() []byte {
	b, _ := e.obj.marshal("")
	return b
}

// With returns a copy with fields set (nil values skipped) and the keys in
// drop removed; every other field is kept in place.
func (e *MCPEntry) With(fields map[string]any, drop ...string) (*MCPEntry, error) {
	c, err := e.obj.with(fields, drop...)
	if err != nil {
		return nil, err
	}
	return mcpFromObject(c), nil
}

func (e MCPEntry) String() string             { return "[redacted mcpOAuth entry]" }
func (e MCPEntry) GoString() string           { return "[redacted mcpOAuth entry]" }
func (e *MCPEntry) LogValue() slog.Value      { return slog.StringValue("[redacted mcpOAuth entry]") }
func (e MCPEntry) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte("[redacted mcpOAuth entry]")) }

// MCPKeys lists the file's mcpOAuth entry keys in file order (nil when it
// has none, or mcpOAuth is not an object).
func (f *File) MCPKeys() []string {
	obj, err := f.mcpObject(MCPKey)
	if err != nil || obj == nil {
		return nil
	}
	return append([]string(nil), obj.keys...)
}

// MCPEntry is the entry under key: ErrNoMCPEntry when there is none.
func (f *File) MCPEntry(key string) (*MCPEntry, error) {
	obj, err := f.mcpObject(MCPKey)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, ErrNoMCPEntry
	}
	raw, ok := obj.get(key)
	if !ok {
		return nil, ErrNoMCPEntry
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, ErrNoMCPEntry
	}
	eo, err := parseObject(raw)
	if err != nil {
		return nil, fmt.Errorf("mcpOAuth entry: %w", err)
	}
	e := mcpFromObject(eo)
	if e.secret == "" {
		// A secret given to `claude mcp add --client-secret` lives beside.
		if cfg, err := f.mcpObject(MCPClientConfigKey); err == nil && cfg != nil {
			if raw, ok := cfg.get(key); ok {
				var c struct {
					ClientSecret string `json:"clientSecret"`
				}
				if json.Unmarshal(raw, &c) == nil {
					e.secret = Secret(c.ClientSecret)
				}
			}
		}
	}
	return e, nil
}

// WithMCPEntry returns a copy of the file whose mcpOAuth[key] is e, every
// other entry and key kept as it was. The file must hold an mcpOAuth object.
func (f *File) WithMCPEntry(key string, e *MCPEntry) (*File, error) {
	obj, err := f.mcpObject(MCPKey)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, ErrNoMCPEntry
	}
	m := obj.clone()
	m.set(key, e.Compact())
	b, err := m.marshal("")
	if err != nil {
		return nil, err
	}
	c := f.top.clone()
	c.set(MCPKey, b)
	return &File{top: c}, nil
}

// mcpObject parses a top-level object (nil, nil when the key is absent).
func (f *File) mcpObject(key string) (*object, error) {
	raw, ok := f.top.get(key)
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	obj, err := parseObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return obj, nil
}
