package store

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newTestVault(t *testing.T, addr string) *Vault {
	t.Helper()
	for _, k := range []string{"VAULT_CACERT", "VAULT_CAPATH", "VAULT_SKIP_VERIFY", "VAULT_TLS_SERVER_NAME", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY"} {
		t.Setenv(k, "")
	}
	v, err := NewVault(VaultConfig{Address: addr, Mount: "secret", Path: "workstation/claude-users/alice", User: "alice", Timeout: 3 * time.Second})
	if err != nil {
		t.Fatalf("NewVault(%q): %v", addr, err)
	}
	return v
}

// Every Vault error is one line, says what it is, and what to do when there
// is something to do: a refused token names provision and the reload; a
// mistake in the settings is ErrMisconfigured (exit 78), never "unreachable,
// retrying".
func TestVaultErrorsOneLineWithFix(t *testing.T) {
	denied := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(403)
		_, _ = w.Write([]byte(`{"errors":["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]}`))
	}))
	defer denied.Close()
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake errors are the point
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()

	tests := []struct {
		name     string
		addr     string
		sentinel error
		want     []string
	}{
		{"revoked token", denied.URL, ErrForbidden, []string{"permission denied; invalid token", "claude-auth-sync provision", "systemctl start claude-auth-sync@alice.service"}},
		{"https to an http listener", strings.Replace(plain.URL, "http://", "https://", 1), ErrMisconfigured, []string{"plain http", "http://127.0.0.1"}},
		{"http to an https listener", strings.Replace(tlsSrv.URL, "https://", "http://", 1), ErrMisconfigured, []string{"https listener", "VAULT_ADDR=https://127.0.0.1"}},
		{"unknown CA", tlsSrv.URL, ErrMisconfigured, []string{"VAULT_CACERT"}},
		{"nobody listening", closed, ErrUnreachable, []string{"connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVault(t, tt.addr)
			_, err := v.LookupSelf(context.Background())
			if !errors.Is(err, tt.sentinel) {
				t.Fatalf("LookupSelf at %s = %v; want %v", tt.addr, err, tt.sentinel)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\t") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not say %q", msg, w)
				}
			}
			if tt.sentinel != ErrUnreachable && errors.Is(err, ErrUnreachable) {
				t.Errorf("error %q is also 'unreachable' (retried forever)", msg)
			}
		})
	}
}

func TestVaultAddressRefused(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:8200", "vault.example:8200", "ftp://vault", "https://"} {
		for _, k := range []string{"VAULT_CACERT", "VAULT_CAPATH"} {
			t.Setenv(k, "")
		}
		_, err := NewVault(VaultConfig{Address: addr, User: "alice"})
		if !errors.Is(err, ErrMisconfigured) || !strings.Contains(err.Error(), "want https://host:8200") {
			t.Errorf("NewVault(%q) = %v; want ErrMisconfigured saying what an address looks like", addr, err)
		}
	}
}

func TestFlatten(t *testing.T) {
	for in, want := range map[string]string{
		"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n": "permission denied; invalid token",
		"1 error occurred:\n\t* permission denied\n\n":                     "permission denied",
		"plain":                          "plain",
		"line one\nline two":             "line one; line two",
		"Client sent an HTTP request.\n": "Client sent an HTTP request.",
	} {
		if got := flatten(in); got != want {
			t.Errorf("flatten(%q) = %q; want %q", in, got, want)
		}
	}
}
