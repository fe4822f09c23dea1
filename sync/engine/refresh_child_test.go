package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/oauth"
)

// The child's report carries every error class the refresher branches on,
// and the login it could not write.
func TestChildReportRoundTrip(t *testing.T) {
	login, err := credentials.ParseOAuth([]byte(`{"accessToken":"sk-ant-oat01-child-a","refreshToken":"sk-ant-ort01-child-r","expiresAt":1893456000000,"scopes":["user:inference"]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		err   error
		login *credentials.OAuth
		want  error
	}{
		{"not written", ErrNotWritten, login, ErrNotWritten},
		{"dead", ErrLoginDead, nil, ErrLoginDead},
		{"locks", lock.ErrClaudeLocksUnavailable, nil, lock.ErrClaudeLocksUnavailable},
		{"transient", oauth.ErrTransient, nil, oauth.ErrTransient},
		{"timeout", context.DeadlineExceeded, nil, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			werr := fmt.Errorf("wrapped: %w", tc.err)
			rep := reportFor(RefreshResult{OAuth: tc.login}, werr)
			var buf bytes.Buffer
			if err := jsonEncode(&buf, rep); err != nil {
				t.Fatal(err)
			}
			res, err := decodeChildReport(buf.Bytes())
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeChildReport(%s) error = %v; want one that is %v", tc.name, err, tc.want)
			}
			if err.Error() != rep.Error {
				t.Errorf("error text %q; want %q", err.Error(), rep.Error)
			}
			if tc.login != nil && (res.OAuth == nil || !res.OAuth.Equal(tc.login)) {
				t.Errorf("the unwritten login did not come back")
			}
		})
	}
	res, err := decodeChildReport([]byte(`{"refreshed":true,"message":"refreshed"}`))
	if err != nil || !res.Refreshed || res.Message != "refreshed" {
		t.Errorf("success report = %+v, %v", res, err)
	}
	if _, err := decodeChildReport([]byte("not json")); err == nil {
		t.Errorf("an unreadable report was accepted")
	}
	if _, err := decodeChildReport([]byte(`{"kind":"something new","error":"x"}`)); err == nil || err.Error() != "x" {
		t.Errorf("unknown kind: %v; want the plain error text", err)
	}
}
