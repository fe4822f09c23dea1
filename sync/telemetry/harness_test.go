package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/clock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Tokens used across the tests; none may reach a report or a metrics file.
const (
	access1  = "sk-ant-oat01-access1ACCESSaccessACCESS0001"
	refresh1 = "sk-ant-ort01-refresh1REFRESHrefreshREFR0001"
	refresh2 = "sk-ant-ort01-refresh2REFRESHrefreshREFR0002"
	setupTok = "sk-ant-oat01-setupSETUPsetupSETUPsetup00099"
)

// oauthJSON is a claudeAiOauth object as Claude writes it, with a field we do
// not know about.
func oauthJSON(access, refresh string, expires time.Time) string {
	return `{"accessToken":"` + access + `","refreshToken":"` + refresh + `","expiresAt":` +
		strconv.FormatInt(expires.UnixMilli(), 10) + `,"scopes":["user:inference","user:profile"],"subscriptionType":"enterprise","futureField":{"x":1}}`
}

// credsFile is a whole credentials file with keys another part of Claude owns.
func credsFile(oauth string) string {
	return `{
  "mcpOAuth": {"github|1a2b": {"serverName": "github", "accessToken": "gho_mcp", "expiresAt": 0}},
  "claudeAiOauth": ` + oauth + `,
  "pluginSecrets": {"p": "v"}
}
`
}

// harness is one user's home with a local store and the reporter over them.
type harness struct {
	t     *testing.T
	cfg   *config.Config
	store *store.File
	rep   *Reporter
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	claudeDir := filepath.Join(dir, "home", ".claude")
	if err := os.MkdirAll(claudeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "home", ".local", "state", "claude-auth-sync")
	cfg := &config.Config{User: "alice", Home: filepath.Join(dir, "home"), ClaudeConfigDir: claudeDir,
		CredentialsFile: filepath.Join(claudeDir, credentials.FileName), StateDir: state,
		LogFile: filepath.Join(state, "sync.log"), LocalStoreFile: filepath.Join(dir, "backup", "backup.json"), Store: "file"}
	st := store.NewFile(cfg.LocalStoreFile)
	clk := clock.WithNow(func() time.Time { return testNow })
	rep := &Reporter{Cfg: cfg, Store: st, Log: &eventlog.EventLog{User: cfg.User, LogFile: cfg.LogFile, Clock: clk}, Clock: clk}
	return &harness{t: t, cfg: cfg, store: st, rep: rep}
}

func (h *harness) writeCreds(content string) {
	h.t.Helper()
	if err := os.WriteFile(h.cfg.CredentialsFile, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// setDoc merges fields into the backup store.
func (h *harness) setDoc(fields map[string]any) {
	h.t.Helper()
	if _, err := h.store.Update(context.Background(), func(*store.Doc) (map[string]any, error) { return fields, nil }); err != nil {
		h.t.Fatal(err)
	}
}
