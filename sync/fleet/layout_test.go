package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

func TestSplitPath(t *testing.T) {
	for _, tc := range []struct {
		path, mount         string
		wantMount, wantBase string
		wantErr             bool
	}{
		{"", "", "secret", "workstation/claude-users", false},
		{"secret/workstation/claude-users/{user}", "", "secret", "workstation/claude-users", false},
		{"/kv/team/{user}/", "", "kv", "team", false},
		{"kv/{user}", "", "kv", "", false},
		{"team/kv/claude/{user}", "team/kv", "team/kv", "claude", false},
		{"secret/{user}/claude", "", "", "", true},   // the user is not last
		{"secret/x{user}", "", "", "", true},         // nor a whole segment
		{"secret/{user}/a/{user}", "", "", "", true}, // twice
		{"secret/fixed/path", "", "", "", true},
		{"secret", "", "", "", true},
		{"secret/data/claude/{user}", "", "", "", true}, // the API path, not the KV path
		{"secret/a/../b/{user}", "", "", "", true},
		{"secret/a//b/{user}", "", "", "", true},
		{"secret/a/%2e%2e/{user}", "", "", "", true},
		{"secret/a/*/{user}", "", "", "", true},
		{"secret/a/./{user}", "", "", "", true},
	} {
		m, b, err := SplitPath(tc.path, tc.mount)
		if (err != nil) != tc.wantErr || m != tc.wantMount || b != tc.wantBase {
			t.Errorf("SplitPath(%q, %q) = %q, %q, %v; want %q, %q (error %v)", tc.path, tc.mount, m, b, err, tc.wantMount, tc.wantBase, tc.wantErr)
		}
		if err != nil && !errors.Is(err, config.ErrConfig) {
			t.Errorf("SplitPath(%q): %v is not a configuration error", tc.path, err)
		}
	}
}

func TestReaderPolicyHCL(t *testing.T) {
	got := ReaderPolicyHCL("secret", "workstation/claude-users")
	for _, want := range []string{
		"path \"secret/metadata/workstation/claude-users/\" {\n  capabilities = [\"list\"]\n}",
		"path \"secret/metadata/workstation/claude-users/+\" {\n  capabilities = [\"read\"]\n}",
		"path \"secret/metadata/workstation/claude-users/..\" {\n  capabilities = [\"deny\"]\n}",
		"path \"secret/metadata/workstation/claude-users/.\" {\n  capabilities = [\"deny\"]\n}",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("ReaderPolicyHCL lacks %q:\n%s", want, got)
		}
	}
	// No glob anywhere (Vault matches it against the decoded path, before
	// KV resolves dot segments), and nothing beyond reading metadata.
	if strings.Contains(got, "*") || strings.Contains(got, "/data") || strings.Contains(got, "update\", \"") || strings.Contains(got, "patch") || strings.Contains(got, "create") {
		t.Errorf("ReaderPolicyHCL grants more than listing and reading metadata:\n%s", got)
	}
	if got := ReaderPolicyHCL("kv", ""); !strings.Contains(got, `path "kv/metadata/" {`) || !strings.Contains(got, `path "kv/metadata/+" {`) {
		t.Errorf("ReaderPolicyHCL with an empty base:\n%s", got)
	}
}

func TestReadTokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	good := write("good", "hvs.test-token-value\n", 0o600)
	if tok, err := ReadTokenFile(good); err != nil || tok.Reveal() != "hvs.test-token-value" {
		t.Errorf("ReadTokenFile(good) = %v, %v", tok, err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{link, "is a symlink"},
		{fifo, "not a regular file"},
		{write("loose", "hvs.x\n", 0o640), "mode 0640"},
		{write("empty", "\n", 0o600), "is empty"},
		{write("two", "a\nb\n", 0o600), "more than one line"},
		{write("big", strings.Repeat("x", 5000), 0o600), "too large"},
		{filepath.Join(dir, "missing"), "does not exist"},
		{dir, "not a regular file"},
	} {
		tok, err := ReadTokenFile(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, config.ErrConfig) {
			t.Errorf("ReadTokenFile(%s) = %v, %v; want a configuration error with %q", filepath.Base(tc.path), tok, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hvs.") {
			t.Errorf("the error holds the token: %v", err)
		}
	}
}
