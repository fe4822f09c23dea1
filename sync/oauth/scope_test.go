package oauth

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

func TestRequestScope(t *testing.T) {
	for _, c := range []struct {
		override string
		login    []string
		want     string
		narrowed []string
	}{
		{"", []string{"user:profile", "user:inference", "user:plugins", "user:projects:read"}, "user:profile user:inference user:plugins user:projects:read", nil},
		{"", nil, "", nil},
		{"", []string{}, "", nil},
		{"user:inference  user:profile", []string{"user:inference", "user:profile", "user:plugins"}, "user:inference user:profile", []string{"user:plugins"}},
		{"user:inference user:profile user:plugins", []string{"user:profile"}, "user:inference user:profile user:plugins", nil},
	} {
		cl := &Client{Scopes: c.override}
		if got := cl.RequestScope(c.login); got != c.want {
			t.Errorf("RequestScope(override %q, login %q) = %q; want %q", c.override, c.login, got, c.want)
		}
		if got := cl.Narrowed(c.login); !slices.Equal(got, c.narrowed) {
			t.Errorf("Narrowed(override %q, login %q) = %q; want %q", c.override, c.login, got, c.narrowed)
		}
	}
}

// The body Claude sends, field for field and in its order; scope left out
// when the login has none.
func TestRefreshRequestShape(t *testing.T) {
	var bodies []string
	var accept, ua []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		accept, ua = append(accept, r.Header.Get("Accept")), append(ua, r.UserAgent())
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "a", "refresh_token": "r", "expires_in": 60})
	}))
	defer srv.Close()
	c := &Client{TokenURL: srv.URL}
	if _, err := c.Refresh(context.Background(), credentials.Secret("RT"), []string{"user:inference", "user:plugins"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Refresh(context.Background(), credentials.Secret("RT"), nil); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"grant_type":"refresh_token","refresh_token":"RT","client_id":"` + DefaultClientID + `","scope":"user:inference user:plugins"}`,
		`{"grant_type":"refresh_token","refresh_token":"RT","client_id":"` + DefaultClientID + `"}`,
	}
	if !slices.Equal(bodies, want) {
		t.Errorf("bodies:\n%q\nwant:\n%q", bodies, want)
	}
	for i := range accept {
		if accept[i] != "application/json, text/plain, */*" || ua[i] != DefaultUserAgent {
			t.Errorf("request %d: Accept %q, User-Agent %q", i, accept[i], ua[i])
		}
	}
}
