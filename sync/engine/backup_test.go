package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

func TestIsBackfill(t *testing.T) {
	tests := []struct {
		name  string
		login string
		setup credentials.Secret
		want  bool
	}{
		{name: "rotating login", login: oauthJSON(access1, refresh1, exp8h), setup: setupTok, want: false},
		{name: "rotating login, no setup token", login: oauthJSON(access1, refresh1, exp8h), want: false},
		{name: "access token is the setup token", login: oauthJSON(setupTok, refresh1, exp8h), setup: setupTok, want: true},
		{name: "expires a year on", login: oauthJSON(access1, refresh1, testNow.Add(365*24*time.Hour)), want: true},
		{name: "expires just past 30 days", login: oauthJSON(access1, refresh1, testNow.Add(30*24*time.Hour+time.Minute)), want: true},
		{name: "expires just inside 30 days", login: oauthJSON(access1, refresh1, testNow.Add(30*24*time.Hour-time.Minute)), want: false},
		{name: "already expired", login: oauthJSON(access1, refresh1, testNow.Add(-time.Hour)), want: false},
		{name: "no setup token and no access token", login: `{"accessToken":"","refreshToken":"r","expiresAt":1}`, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsBackfill(mustOAuth(t, tt.login), tt.setup, testNow); got != tt.want {
				t.Errorf("IsBackfill(%s) = %v; want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestNewer(t *testing.T) {
	tests := []struct {
		name          string
		stored, local string
		lineage       []string
		want          bool
	}{
		{name: "lineage: stored newer, expires earlier", stored: oauthJSON(access2, refresh2, exp7h), local: oauthJSON(access1, refresh1, exp9h),
			lineage: []string{refresh1, refresh2}, want: true},
		{name: "lineage: stored older, expires later", stored: oauthJSON(access2, refresh2, exp9h), local: oauthJSON(access1, refresh1, exp7h),
			lineage: []string{refresh2, refresh1}, want: false},
		{name: "stored unknown, expires later", stored: oauthJSON(access2, refresh2, exp9h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh1}, want: true},
		{name: "stored unknown, expires earlier", stored: oauthJSON(access2, refresh2, exp7h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh1}, want: false},
		{name: "stored unknown, same expiry", stored: oauthJSON(access2, refresh2, exp8h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh1}, want: false},
		{name: "both unknown, stored expires later", stored: oauthJSON(access2, refresh2, exp9h), local: oauthJSON(access1, refresh1, exp8h),
			want: true},
		{name: "stored known, local unknown (a new login)", stored: oauthJSON(access2, refresh2, exp9h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh2}, want: false},
		{name: "same refresh token, stored expires later", stored: oauthJSON(access2, refresh1, exp9h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh1}, want: true},
		{name: "same refresh token, stored expires earlier", stored: oauthJSON(access2, refresh1, exp7h), local: oauthJSON(access1, refresh1, exp8h),
			lineage: []string{refresh1}, want: false},
		{name: "identical", stored: oauthJSON(access1, refresh1, exp8h), local: oauthJSON(access1, refresh1, exp8h), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lin, err := lineage.Load(filepath.Join(t.TempDir(), "lineage"))
			if err != nil {
				t.Fatal(err)
			}
			for _, tok := range tt.lineage {
				if err := lin.Observe(credentials.Secret(tok)); err != nil {
					t.Fatal(err)
				}
			}
			if got := Newer(lin, mustOAuth(t, tt.stored), mustOAuth(t, tt.local)); got != tt.want {
				t.Errorf("Newer(%s) = %v; want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestEngineBackup(t *testing.T) {
	tests := []struct {
		name        string
		doc         map[string]any // the store before; nil = empty
		lineage     []string
		login       string
		wantErr     bool
		wantWritten bool
		msgHas      string
	}{
		{name: "first backup", login: login1, wantWritten: true, msgHas: "backed up"},
		{name: "keeps other keys", doc: map[string]any{"vaultwarden_master_password": "vw", "vaultwarden_email": "a@b"}, login: login1, wantWritten: true},
		{name: "unusable login", login: oauthJSON(access1, "", exp8h), wantErr: true},
		{name: "backfill by expiry", login: oauthJSON(access1, refresh1, testNow.Add(200*24*time.Hour)), msgHas: "backfill"},
		{name: "backfill by the stored setup token", doc: map[string]any{store.FieldSetupToken: access1}, login: login1, msgHas: "backfill"},
		{name: "up to date", doc: map[string]any{store.FieldOAuthJSON: login1}, login: login1, msgHas: "up to date"},
		{name: "stored newer by lineage", doc: map[string]any{store.FieldOAuthJSON: oauthJSON(access2, refresh2, exp7h)},
			lineage: []string{refresh1, refresh2}, login: login1, msgHas: "newer login"},
		{name: "stored older by lineage", doc: map[string]any{store.FieldOAuthJSON: login2},
			lineage: []string{refresh2, refresh1}, login: login1, wantWritten: true},
		{name: "stored unusable is replaced", doc: map[string]any{store.FieldOAuthJSON: oauthJSON(access2, "", testNow.Add(48*time.Hour))},
			login: login1, wantWritten: true},
		{name: "stored unreadable is replaced", doc: map[string]any{store.FieldOAuthJSON: `{"accessToken":`}, login: login1, wantWritten: true},
		{name: "stored wrong type is replaced", doc: map[string]any{store.FieldOAuthJSON: 42}, login: login1, wantWritten: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if tt.doc != nil {
				h.setDoc(tt.doc)
			}
			h.observe(tt.lineage...)
			before := h.doc()
			beforeRaw, _ := os.ReadFile(h.cfg.LocalStoreFile)
			lin, err := lineage.Load(h.eng.lineagePath())
			if err != nil {
				t.Fatal(err)
			}
			res, err := h.eng.Backup(context.Background(), lin, mustOAuth(t, tt.login))
			if tt.wantErr {
				if err == nil {
					t.Errorf("Backup(%s) = %+v, nil; want an error", tt.name, res)
				}
			} else if err != nil {
				t.Fatalf("Backup(%s) = %v", tt.name, err)
			}
			if res.Written != tt.wantWritten || !strings.Contains(res.Message, tt.msgHas) {
				t.Errorf("Backup(%s) = %+v; want Written %v, message with %q", tt.name, res, tt.wantWritten, tt.msgHas)
			}
			after := h.doc()
			afterRaw, _ := os.ReadFile(h.cfg.LocalStoreFile)
			if !tt.wantWritten {
				if string(afterRaw) != string(beforeRaw) {
					t.Errorf("Backup(%s) changed the store without writing", tt.name)
				}
				return
			}
			if after.Version != before.Version+1 || res.Version != after.Version {
				t.Errorf("Backup(%s): store v%d -> v%d, result v%d; want one new version", tt.name, before.Version, after.Version, res.Version)
			}
			o, err := after.OAuth()
			if err != nil || o == nil || string(o.Compact()) != tt.login {
				t.Errorf("Backup(%s) stored %v (%v); want %s", tt.name, o, err, tt.login)
			}
			for _, k := range before.Keys() {
				if !contains(after.Keys(), k) {
					t.Errorf("Backup(%s) dropped key %s", tt.name, k)
				}
			}
			if lin.Known(credentials.Secret(refresh1)) != true {
				t.Errorf("Backup(%s) did not record the refresh token in the lineage", tt.name)
			}
		})
	}
}

// BackupRecord is the one place a backup is noted in state.json (the pass and
// the agent's backup worker both use it): only a backup that wrote.
func TestBackupRecord(t *testing.T) {
	tests := []struct {
		name string
		res  BackupResult
		want *telemetry.BackupRecord
	}{
		{name: "written", res: BackupResult{Written: true, Version: 7},
			want: &telemetry.BackupRecord{At: testNow, Version: 7, Fingerprint: credentials.Secret(refresh1).Short()}},
		{name: "up to date", res: BackupResult{Version: 7, Message: "backup up to date (v7)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if b := h.eng.BackupRecord(tt.res, mustOAuth(t, login1)); b != nil {
				if err := h.eng.Telemetry.MergeRecord(&telemetry.Record{LastBackup: b}); err != nil {
					t.Fatalf("MergeRecord(%+v) = %v", b, err)
				}
			}
			got := h.eng.Telemetry.LoadRecord().LastBackup
			if tt.want != nil {
				tt.want.Store = h.store.Describe()
			}
			if (got == nil) != (tt.want == nil) || got != nil && (!got.At.Equal(tt.want.At) || got.Version != tt.want.Version ||
				got.Store != tt.want.Store || got.Fingerprint != tt.want.Fingerprint) {
				t.Errorf("BackupRecord(%+v) recorded %+v; want %+v", tt.res, got, tt.want)
			}
		})
	}
}
