package store

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

// The requests the store makes are the ones the fleet's policies grant and
// its other hosts read: <mount>/data/<path> with the document under "data"
// and the version read as options.cas, <mount>/metadata/<path> read for
// current_version and owner_host, and a merge patch that holds
// custom_metadata only. This Vault answers as KV v2 does for a document whose
// latest version (3) was deleted, and records what it was asked.
func TestVaultWire(t *testing.T) {
	const doc = "/v1/secret/data/workstation/claude-users/alice"
	const meta = "/v1/secret/metadata/workstation/claude-users/alice"
	type request struct{ method, path, body string }
	var (
		mu   sync.Mutex
		seen []request
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, request{r.Method, r.URL.Path, string(b)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == doc:
			w.WriteHeader(404)
			io.WriteString(w, `{"data":{"data":null,"metadata":{"created_time":"2026-01-01T00:00:00Z","custom_metadata":null,"deletion_time":"2026-01-02T00:00:00Z","destroyed":false,"version":3}}}`)
		case r.Method == http.MethodGet && r.URL.Path == meta:
			io.WriteString(w, `{"data":{"cas_required":false,"created_time":"2026-01-01T00:00:00Z","current_version":3,"custom_metadata":{"owner_host":"h1"},"delete_version_after":"0s","max_versions":0,"oldest_version":0,"updated_time":"2026-01-02T00:00:00Z","versions":{"3":{"created_time":"2026-01-01T00:00:00Z","deletion_time":"2026-01-02T00:00:00Z","destroyed":false}}}}`)
		case (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.URL.Path == doc:
			io.WriteString(w, `{"data":{"created_time":"2026-01-03T00:00:00Z","custom_metadata":{"owner_host":"h1"},"deletion_time":"","destroyed":false,"version":4}}`)
		case r.Method == http.MethodPatch && r.URL.Path == meta:
			w.WriteHeader(204)
		default:
			w.WriteHeader(405)
			io.WriteString(w, `{"errors":["unexpected request"]}`)
		}
	}))
	defer srv.Close()
	v := newTestVault(t, srv.URL)
	ctx := context.Background()

	got, err := v.Update(ctx, func(cur *Doc) (map[string]any, error) {
		if cur.Exists || cur.Version != 3 {
			t.Errorf("a deleted latest version read as exists=%v version %d; want absent at version 3", cur.Exists, cur.Version)
		}
		return map[string]any{FieldBackedUpAt: "2026-01-03T00:00:00Z"}, nil
	})
	if err != nil || got.Version != 4 {
		t.Fatalf("Update = %v, %v; want version 4", got, err)
	}
	if owner, err := v.Owner(ctx); owner != "h1" || err != nil {
		t.Errorf("Owner = %q, %v; want h1", owner, err)
	}
	if err := v.PatchMetadata(ctx, map[string]any{"host.h2": "state=ok", "host.old": nil}); err != nil {
		t.Errorf("PatchMetadata = %v", err)
	}
	if err := v.PatchMetadata(ctx, map[string]any{}); err != nil {
		t.Errorf("PatchMetadata(nothing) = %v", err)
	}

	want := []request{
		{"GET", doc, ""},
		{"GET", meta, ""},
		{"GET", doc, ""}, // a version seen in the metadata: the data again
		{"PUT", doc, `{"data":{"backed_up_at":"2026-01-03T00:00:00Z"},"options":{"cas":3}}`},
		{"GET", meta, ""},
		{"PATCH", meta, `{"custom_metadata":{"host.h2":"state=ok","host.old":null}}`},
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(want) {
		t.Fatalf("requests:\n%v\nwant:\n%v", seen, want)
	}
	for i, w := range want {
		s := seen[i]
		if s.method == http.MethodPost {
			s.method = http.MethodPut // the client's write is either
		}
		if s.method != w.method || s.path != w.path || !sameJSON(s.body, w.body) {
			t.Errorf("request %d = %s %s %s; want %s %s %s", i, s.method, s.path, s.body, w.method, w.path, w.body)
		}
	}
}

func sameJSON(a, b string) bool {
	if strings.TrimSpace(a) == "" || strings.TrimSpace(b) == "" {
		return strings.TrimSpace(a) == strings.TrimSpace(b)
	}
	var x, y any
	return json.Unmarshal([]byte(a), &x) == nil && json.Unmarshal([]byte(b), &y) == nil && reflect.DeepEqual(x, y)
}

// lookup-self as Vault answers it: the token's own policies only (an entity's
// identity policies are not what the token was minted with), its TTL and
// whether it renews.
func TestTokenInfoOf(t *testing.T) {
	s, err := vault.ParseSecret(strings.NewReader(`{"data":{"accessor":"a","display_name":"token-devvm-claude-auth-alice","entity_id":"e","expire_time":"2026-01-01T08:00:00Z","identity_policies":["workstation-claude-bob"],"orphan":true,"period":28800,"policies":["workstation-claude-alice"],"renewable":true,"ttl":28799}}`))
	if err != nil {
		t.Fatal(err)
	}
	info, err := TokenInfoOf(s)
	want := TokenInfo{DisplayName: "token-devvm-claude-auth-alice", Policies: []string{"workstation-claude-alice"}, TTL: 28799e9, Renewable: true}
	if err != nil || !reflect.DeepEqual(info, want) {
		t.Errorf("TokenInfoOf = %+v, %v; want %+v", info, err, want)
	}
	bad, _ := vault.ParseSecret(strings.NewReader(`{"data":{"policies":"workstation-claude-alice","ttl":1}}`))
	if _, err := TokenInfoOf(bad); err == nil {
		t.Errorf("TokenInfoOf(policies not a list) = nil error")
	}
}

// Vault's refusals through the KV helpers keep their meaning and the
// store's words: a check-and-set mismatch is ErrConflict, a 403 ErrForbidden,
// a 5xx ErrUnreachable, each one line without the helpers' own wrapping.
func TestVaultKVErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		sentinel error
	}{
		{"cas mismatch", 400, `{"errors":["check-and-set parameter did not match the current version"]}`, ErrConflict},
		{"forbidden", 403, `{"errors":["1 error occurred:\n\t* permission denied\n\n"]}`, ErrForbidden},
		{"sealed", 503, `{"errors":["Vault is sealed"]}`, ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if r.Method == http.MethodGet {
					io.WriteString(w, `{"data":{"data":{"a":"b"},"metadata":{"version":7,"created_time":"2026-01-01T00:00:00Z","deletion_time":"","destroyed":false}}}`)
					return
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			defer srv.Close()
			v := newTestVault(t, srv.URL)
			_, err := v.write(context.Background(), "workstation/claude-users/alice", map[string]any{"a": "c"}, 7)
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("write = %v; want %v", err, tt.sentinel)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\n\t") || strings.Contains(msg, "error writing secret") || !strings.HasPrefix(msg, "write secret/workstation/claude-users/alice: ") {
				t.Errorf("write error %q: want one line in the store's words", msg)
			}
			if err := v.PatchMetadata(context.Background(), map[string]any{"k": "v"}); tt.sentinel != ErrConflict && !errors.Is(err, tt.sentinel) {
				t.Errorf("PatchMetadata = %v; want %v", err, tt.sentinel)
			}
		})
	}
}
