package store

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const vaultToken = "hvs.CAESIvaultTOKENvaultTOKENvaultTOKEN0123456789"

func TestReadTokenFile(t *testing.T) {
	tests := []struct {
		name     string
		content  string // "" with missing=true: no file
		missing  bool
		dir      bool
		link     bool // a link to a private file holding a token
		mode     fs.FileMode
		want     string
		errHas   string
		notFound bool
	}{
		{name: "missing", missing: true, errHas: "does not exist; ask your workstation admin to run `claude-auth-sync provision`"},
		{name: "a symlink to a good file", link: true, errHas: "is a symlink"},
		{name: "a directory", dir: true, errHas: "not a regular file"},
		{name: "empty", content: "", mode: 0o600, errHas: "is empty; ask your workstation admin to run `claude-auth-sync provision`"},
		{name: "whitespace only", content: " \n\t\n", mode: 0o600, errHas: "is empty"},
		{name: "mode 0644", content: vaultToken + "\n", mode: 0o644, errHas: "consider the token exposed"},
		{name: "mode 0640", content: vaultToken + "\n", mode: 0o640, errHas: "consider the token exposed"},
		{name: "mode 0604", content: vaultToken + "\n", mode: 0o604, errHas: "consider the token exposed"},
		{name: "mode 0600", content: vaultToken + "\n", mode: 0o600, want: vaultToken},
		{name: "mode 0400 no newline", content: vaultToken, mode: 0o400, want: vaultToken},
		{name: "surrounding whitespace", content: "\n  " + vaultToken + "  \n\n", mode: 0o600, want: vaultToken},
		{name: "two lines", content: vaultToken + "\n" + "hvs.SECONDsecondSECONDsecond0123456789\n", mode: 0o600, errHas: "more than one line"},
		{name: "two words", content: vaultToken + " extra\n", mode: 0o600, errHas: "more than one line"},
		{name: "too large", content: strings.Repeat("a", 5000), mode: 0o600, errHas: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "vault-token")
			switch {
			case tt.missing:
			case tt.dir:
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
			case tt.link:
				target := p + "-target"
				if err := os.WriteFile(target, []byte(vaultToken+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
			default:
				if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readTokenFile(p)
			if tt.errHas != "" {
				if err == nil || !errors.Is(err, ErrTokenFile) || !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("readTokenFile(%s) = %v; want %v containing %q", tt.name, err, ErrTokenFile, tt.errHas)
				}
				if err != nil && (strings.Contains(err.Error(), "hvs.") || strings.Contains(err.Error(), "TOKEN")) {
					t.Errorf("readTokenFile(%s) error %q contains the token", tt.name, err)
				}
				if got != "" && !errors.Is(err, ErrTokenExposed) {
					t.Errorf("readTokenFile(%s) returned a token with an error", tt.name)
				}
				return
			}
			if err != nil || got.Reveal() != tt.want {
				t.Errorf("readTokenFile(%s) = %q, %v; want %q", tt.name, got.Reveal(), err, tt.want)
			}
		})
	}
}

func readRaw(t *testing.T, path string) fileDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fd fileDoc
	if err := json.Unmarshal(b, &fd); err != nil {
		t.Fatalf("local store is not JSON: %v", err)
	}
	return fd
}

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "state", "backup.json")
	f := NewFile(p)
	if !strings.Contains(f.Describe(), p) {
		t.Errorf("Describe() = %q; want it to name %s", f.Describe(), p)
	}

	// Reading a store that does not exist yet: an empty doc, no error.
	d, err := f.Read(ctx)
	if err != nil || d.Exists || d.Version != 0 {
		t.Fatalf("Read() of a missing store = %+v, %v; want an empty doc", d, err)
	}

	// Another tool's key is there first.
	if _, err := f.Update(ctx, func(cur *Doc) (map[string]any, error) {
		return map[string]any{"vaultwarden_master_password": "vw-secret"}, nil
	}); err != nil {
		t.Fatal(err)
	}

	now := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	var sawVersion int
	d, err = f.Update(ctx, func(cur *Doc) (map[string]any, error) {
		sawVersion = cur.Version
		return map[string]any{FieldOAuthJSON: loginJSON, FieldExpiresAtMs: "1767225600000", FieldBackedUpAt: now.Format(time.RFC3339)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sawVersion != 1 || d.Version != 2 || !d.Exists {
		t.Errorf("Update saw v%d and returned v%d (exists %v); want v1 then v2", sawVersion, d.Version, d.Exists)
	}
	fd := readRaw(t, p)
	if fd.Version != 2 || fd.Data["vaultwarden_master_password"] != "vw-secret" || fd.Data[FieldOAuthJSON] != loginJSON {
		t.Errorf("store after Update = v%d %v; want v2 keeping vaultwarden_master_password and holding the login", fd.Version, keysOf(fd.Data))
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode = %v (%v); want 0600", fi.Mode().Perm(), err)
	}

	// ErrSkip writes nothing.
	before, _ := os.ReadFile(p)
	d, err = f.Update(ctx, func(cur *Doc) (map[string]any, error) { return map[string]any{"x": "y"}, ErrSkip })
	if !errors.Is(err, ErrSkip) || d == nil || d.Version != 2 {
		t.Errorf("Update returning ErrSkip = %v, %v; want ErrSkip and the current doc (v2)", d, err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Errorf("Update returning ErrSkip changed the store")
	}
	// Another error from fn is passed back and writes nothing either.
	boom := errors.New("boom")
	if _, err := f.Update(ctx, func(cur *Doc) (map[string]any, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("Update returning boom = %v; want boom", err)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Errorf("Update returning an error changed the store")
	}

	d, err = f.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o, err := d.OAuth()
	if err != nil || o == nil || o.RefreshToken().Reveal() != testRefresh {
		t.Errorf("Read().OAuth() = %v, %v; want the stored login", o, err)
	}
	if got := d.BackedUpAt(); !got.Equal(now) {
		t.Errorf("Read().BackedUpAt() = %v; want %v", got, now)
	}

	// Only the store and its lock file are in the directory: no temp files.
	ents, _ := os.ReadDir(filepath.Dir(p))
	for _, e := range ents {
		if e.Name() != "backup.json" && e.Name() != "backup.json.lock" {
			t.Errorf("unexpected file %s next to the store", e.Name())
		}
	}
}

func TestFileStoreCorrupt(t *testing.T) {
	tests := []struct{ name, content string }{
		{"not JSON", "{{{"},
		{"truncated", `{"version":1,"data":{"claude_ai_oauth_json":"{\"accessToken\":\"` + testAccess},
		{"wrong shape", `{"version":"one","data":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "backup.json")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			f := NewFile(p)
			if d, err := f.Read(context.Background()); err == nil {
				t.Errorf("Read() of %q = %+v, nil; want an error", tt.content, d)
			} else if strings.Contains(err.Error(), "sk-ant-") {
				t.Errorf("Read() error %q contains a token", err)
			}
			called := false
			if _, err := f.Update(context.Background(), func(*Doc) (map[string]any, error) {
				called = true
				return map[string]any{"k": "v"}, nil
			}); err == nil || called {
				t.Errorf("Update() of a corrupt store = %v (fn called %v); want an error and no call", err, called)
			}
			if b, _ := os.ReadFile(p); string(b) != tt.content {
				t.Errorf("Update() of a corrupt store rewrote it")
			}
		})
	}
}
