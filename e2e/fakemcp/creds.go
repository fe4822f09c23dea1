package fakemcp

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
)

// jsString renders s as JavaScript's JSON.stringify does: Go's encoder
// without HTML escaping, and U+2028 / U+2029 left as they are (Go escapes
// them, JavaScript does not).
func jsString(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	out := strings.TrimSuffix(b.String(), "\n")
	out = strings.ReplaceAll(out, `\u2028`, "\u2028")
	return strings.ReplaceAll(out, `\u2029`, "\u2029")
}

// KeyJSON is the text Claude Code hashes for an MCP server's credential key:
// JSON.stringify({type, url, headers: headers || {}}), no spaces, keys in
// that order. Header names keep the order of the server's config in Claude;
// a Go map has none, so more than one header is rendered sorted by name.
func KeyJSON(transport, url string, headers map[string]string) string {
	var b strings.Builder
	b.WriteString(`{"type":` + jsString(transport) + `,"url":` + jsString(url) + `,"headers":{`)
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, k := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jsString(k) + ":" + jsString(headers[k]))
	}
	b.WriteString("}}")
	return b.String()
}

// EntryKey is Claude Code's key for an HTTP MCP server's entry in mcpOAuth:
// "<serverName>|<first 16 hex digits of sha256(KeyJSON("http", url, headers))>".
func EntryKey(serverName, url string, headers map[string]string) string {
	return EntryKeyFor(serverName, "http", url, headers)
}

// EntryKeyFor is EntryKey for another transport type (e.g. "sse").
func EntryKeyFor(serverName, transport, url string, headers map[string]string) string {
	sum := sha256.Sum256([]byte(KeyJSON(transport, url, headers)))
	return serverName + "|" + hex.EncodeToString(sum[:])[:16]
}

// DiscoveryState is what Claude caches of the OAuth discovery.
type DiscoveryState struct {
	AuthorizationServerURL string `json:"authorizationServerUrl"`
	ResourceMetadataURL    string `json:"resourceMetadataUrl,omitempty"`
}

// Entry is one mcpOAuth entry, with the fields Claude Code writes after a
// login (field order as Claude writes them).
type Entry struct {
	ServerName     string          `json:"serverName"`
	ServerURL      string          `json:"serverUrl"`
	ClientID       string          `json:"clientId,omitempty"`
	ClientSecret   string          `json:"clientSecret,omitempty"`
	AccessToken    string          `json:"accessToken"`
	RefreshToken   string          `json:"refreshToken,omitempty"`
	ExpiresAt      int64           `json:"expiresAt,omitempty"` // ms since the epoch
	Scope          string          `json:"scope,omitempty"`
	DiscoveryState *DiscoveryState `json:"discoveryState,omitempty"`
}

// Entry returns the mcpOAuth entry a login with this server leaves for an
// MCP server named serverName configured with the server's MCPURL().
func (s *Server) Entry(serverName string, l Login) Entry {
	o := s.Options()
	base := s.URL()
	e := Entry{ServerName: serverName, ServerURL: base + "/mcp", ClientID: o.ClientID,
		AccessToken: l.AccessToken, RefreshToken: l.RefreshToken, ExpiresAt: l.ExpiresAt.UnixMilli(), Scope: o.Scope,
		DiscoveryState: &DiscoveryState{AuthorizationServerURL: base, ResourceMetadataURL: base + "/.well-known/oauth-protected-resource"}}
	if o.AuthMethod != AuthNone {
		e.ClientSecret = o.ClientSecret
	}
	return e
}

// SeedCredentials writes e into the credentials file at path under its
// EntryKey (no headers), keeping every other key of the file (and of
// mcpOAuth); it creates the file with mode 0600 if missing. It returns the key.
func SeedCredentials(path string, e Entry) (string, error) {
	key := EntryKey(e.ServerName, e.ServerURL, nil)
	doc := map[string]json.RawMessage{}
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &doc); err != nil {
			return "", fmt.Errorf("fakemcp: %s: %w", path, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("fakemcp: %w", err)
	}
	mcp := map[string]json.RawMessage{}
	if raw, ok := doc["mcpOAuth"]; ok {
		if err := json.Unmarshal(raw, &mcp); err != nil {
			return "", fmt.Errorf("fakemcp: %s: mcpOAuth: %w", path, err)
		}
	}
	eb, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	mcp[key] = eb
	if doc["mcpOAuth"], err = json.Marshal(mcp); err != nil {
		return "", err
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("fakemcp: %w", err)
	}
	return key, nil
}

// ReadEntry reads the mcpOAuth entry under key from the credentials file at
// path (ok false when there is none).
func ReadEntry(path, key string) (e Entry, ok bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Entry{}, false, err
	}
	var doc struct {
		MCP map[string]Entry `json:"mcpOAuth"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return Entry{}, false, fmt.Errorf("fakemcp: %s: %w", path, err)
	}
	e, ok = doc.MCP[key]
	return e, ok, nil
}

// Mask renders a token for a log line without revealing it.
func Mask(token string) string {
	if token == "" {
		return `""`
	}
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("<%d chars sha256:%s>", len(token), hex.EncodeToString(sum[:4]))
}
