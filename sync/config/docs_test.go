package config

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// standardEnv is read by Load but is the machine's, not ours to document.
var standardEnv = map[string]bool{"HOME": true, "XDG_CONFIG_HOME": true, "XDG_STATE_HOME": true}

// readmeConfigTable is the README's configuration table: each setting named in
// a row's first cell, and whether the row says it is environment only.
func readmeConfigTable(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "\n## Configuration\n")
	if start < 0 {
		t.Fatal("README has no Configuration section")
	}
	s = s[start+1:]
	if end := strings.Index(s[3:], "\n## "); end >= 0 {
		s = s[:end+3]
	}
	key := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	out := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		envOnly := strings.Contains(line, "*(environment only)*")
		for _, m := range key.FindAllStringSubmatch(cells[1], -1) {
			out[m[1]] = envOnly
		}
	}
	return out
}

// The README's table names exactly the settings the code reads (the system
// file's keys and what Load takes from the environment), and says which are
// environment only.
func TestReadmeConfigTable(t *testing.T) {
	unsetVault(t)
	e, _ := base(t)
	read := map[string]bool{}
	getenv := func(k string) string { read[k] = true; return e.get(k) }
	if _, err := Load(getenv, Flags{}); err != nil {
		t.Fatal(err)
	}
	code := map[string]bool{}
	for k := range fileKeys {
		code[k] = true
	}
	for k := range read {
		if !standardEnv[k] {
			code[k] = true
		}
	}
	doc := readmeConfigTable(t)
	var missing, extra []string
	for k := range code {
		if _, ok := doc[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k, envOnly := range doc {
		if !code[k] {
			extra = append(extra, k)
			continue
		}
		if envOnly == fileKeys[k] {
			t.Errorf("README says %s is environment only = %v; the system file takes it = %v", k, envOnly, fileKeys[k])
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("README's configuration table lacks %v", missing)
	}
	if len(extra) > 0 {
		t.Errorf("README's configuration table names %v, which the code does not read", extra)
	}
}

// Every setting the Vault client reads is either taken (file and
// environment) or deliberately ignored, and the README says which.
func TestVaultClientKeysAllAccounted(t *testing.T) {
	all := []string{vault.EnvVaultAddress, vault.EnvVaultAgentAddr, vault.EnvVaultCACert, vault.EnvVaultCACertBytes,
		vault.EnvVaultCAPath, vault.EnvVaultClientCert, vault.EnvVaultClientKey, vault.EnvVaultClientTimeout,
		vault.EnvVaultHeaders, vault.EnvVaultSRVLookup, vault.EnvVaultSkipVerify, vault.EnvVaultNamespace,
		vault.EnvVaultTLSServerName, vault.EnvVaultWrapTTL, vault.EnvVaultMaxRetries, vault.EnvVaultToken,
		vault.EnvVaultMFA, vault.EnvRateLimit, vault.EnvHTTPProxy, vault.EnvVaultProxyAddr, vault.EnvVaultDisableRedirects}
	b, _ := os.ReadFile("../../README.md")
	for _, k := range all {
		taken := k == "VAULT_ADDR" || slices.Contains(VaultClientKeys, k)
		ignored := slices.Contains(VaultIgnoredKeys, k)
		if taken == ignored {
			t.Errorf("%s: taken %v, ignored %v; want exactly one", k, taken, ignored)
		}
		if taken != fileKeys[k] {
			t.Errorf("%s: taken %v but the system file accepts it: %v", k, taken, fileKeys[k])
		}
		if !strings.Contains(string(b), "`"+k+"`") {
			t.Errorf("README does not mention %s", k)
		}
	}
}

// A VAULT_* setting in the system file acts as it does in the environment:
// Load hands it to the Vault client, and the environment still wins.
func TestVaultKeysFromSystemFile(t *testing.T) {
	for _, k := range VaultClientKeys {
		t.Run(k, func(t *testing.T) {
			unsetVault(t)
			e, home := base(t)
			path := filepath.Join(home, "config")
			if err := os.WriteFile(path, []byte(k+"=from-file\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e["CLAUDE_AUTH_SYSTEM_CONFIG"] = path
			_, _ = Load(e.get, Flags{}) // VAULT_CLIENT_TIMEOUT=from-file is refused after it is handed on
			if got := os.Getenv(k); got != "from-file" {
				t.Errorf("after Load with %s=from-file in the system file, the environment has %q", k, got)
			}
			unsetVault(t)
			t.Setenv(k, "from-env")
			e[k] = "from-env"
			_, _ = Load(e.get, Flags{})
			if got := os.Getenv(k); got != "from-env" {
				t.Errorf("the system file's %s replaced the environment's: %q", k, got)
			}
		})
	}
}

// End to end through the Vault client: VAULT_CACERT and VAULT_SKIP_VERIFY in
// the system file make an https Vault with a private CA reachable.
func TestVaultTLSFromSystemFile(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		file    string
		trusted bool
	}{
		{"", false},
		{"VAULT_CACERT=" + ca, true},
		{"VAULT_SKIP_VERIFY=true", true},
	} {
		unsetVault(t)
		e, home := base(t)
		path := filepath.Join(home, "config")
		if err := os.WriteFile(path, []byte("VAULT_ADDR="+srv.URL+"\n"+tt.file+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		e["CLAUDE_AUTH_SYSTEM_CONFIG"] = path
		c, err := Load(e.get, Flags{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := store.NewVault(store.VaultConfig{Address: c.VaultAddr, Mount: c.VaultMount, Path: c.VaultPath, User: c.User, Timeout: c.VaultTimeout})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.LookupSelf(context.Background())
		if got := !errors.Is(err, store.ErrMisconfigured); got != tt.trusted || err == nil {
			t.Errorf("system file %q: LookupSelf = %v; want the certificate trusted: %v (and a 404 from the test server)", tt.file, err, tt.trusted)
		}
	}
}
