package store

import (
	"encoding/json"
	"testing"
)

// FuzzDocDecode: whatever a Vault document holds (unexpected fields and types),
// decoding it never panics, and a backup merged over it keeps its other keys.
func FuzzDocDecode(f *testing.F) {
	f.Add([]byte(`{"claude_ai_oauth_json":"{\"accessToken\":\"a\",\"refreshToken\":\"r\",\"expiresAt\":1}","credential_expires_at_ms":"1","backed_up_at":"2026-01-01T00:00:00Z","vaultwarden_x":"y"}`))
	f.Add([]byte(`{"claude_ai_oauth_json":5,"setup_token":["x"],"setup_token_expires_at":1767225600}`))
	f.Add([]byte(`{"claude_ai_oauth_json":"not json","setup_token_expires_at":"2026-13-45"}`))
	f.Add([]byte(`{"claude_ai_oauth_json":null,"backed_up_at":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fields map[string]any
		if json.Unmarshal(data, &fields) != nil {
			return
		}
		d := NewDoc(fields, 1)
		_, _ = d.OAuth()
		_ = d.SetupToken()
		_ = d.SetupTokenExpiresAt()
		_ = d.BackedUpAt()
		_ = d.String()
		merged := d.merged(map[string]any{FieldBackedUpAt: "now"})
		for k, v := range fields {
			if k == FieldBackedUpAt {
				continue
			}
			a, _ := json.Marshal(v)
			b, _ := json.Marshal(merged[k])
			if string(a) != string(b) {
				t.Fatalf("key %q changed by the merge", k)
			}
		}
	})
}
