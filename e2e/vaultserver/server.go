// Package vaultserver runs a real Vault dev server for tests: the binary that
// e2e/vault/ensure-vault.sh builds once and caches outside the repository.
package vaultserver

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// RootToken is the dev server's root token (tests only).
const RootToken = "e2e-root-token-not-a-secret"

// Server is a running dev server.
type Server struct {
	Addr string
	Port int
	bin  string
	cmd  *exec.Cmd
	log  *os.File
	dir  string
	// Persistent servers keep their data on disk across Stop/Restart.
	persistent bool
	rootToken  string
	unsealKey  string
}

// Binary returns the Vault server binary: $VAULT_BIN, else what ensure-vault.sh
// prints (building it on first use).
func Binary() (string, error) {
	if b := os.Getenv("VAULT_BIN"); b != "" {
		if _, err := os.Stat(b); err != nil {
			return "", fmt.Errorf("VAULT_BIN=%s: %w", b, err)
		}
		return b, nil
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "vault", "ensure-vault.sh")
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("ensure-vault.sh: %v: %s", err, stderr.String())
	}
	return string(bytes.TrimSpace(out)), nil
}

func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		p := 20000 + rand.IntN(30000)
		a, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port pair on loopback")
}

// Start starts a dev server (KV v2 at secret/) on a free loopback port and waits
// until secret/ is mounted.
func Start(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, Port: port, Addr: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir, rootToken: RootToken}
	return s, s.start()
}

func (s *Server) start() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, fmt.Sprintf("vault-%d.log", s.Port)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.log = logf
	if s.persistent {
		s.cmd = exec.Command(s.bin, "server", "-config="+filepath.Join(s.dir, "vault.hcl"))
	} else {
		s.cmd = exec.Command(s.bin, "server", "-dev", "-dev-root-token-id="+RootToken,
			"-dev-listen-address=127.0.0.1:"+strconv.Itoa(s.Port), "-dev-no-store-token")
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = append(os.Environ(), "HOME="+s.dir, "VAULT_DEV_ROOT_TOKEN_ID=")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start vault: %w", err)
	}
	if s.persistent {
		return s.initAndUnseal()
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("GET", s.Addr+"/v1/sys/mounts/secret", nil)
		req.Header.Set("X-Vault-Token", RootToken)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return fmt.Errorf("vault dev server did not come up in 30s (log in %s)", logf.Name())
}

// Stop kills the server (its in-memory data is gone).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Wait()
		s.cmd = nil
	}
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
}

// Root returns a client with the root token.
func (s *Server) Root() *vault.Client {
	c, err := vault.NewClient(&vault.Config{Address: s.Addr, MaxRetries: 0, Timeout: 10 * time.Second})
	if err != nil {
		panic(err)
	}
	c.SetToken(s.rootToken)
	return c
}

// RootTokenValue is the server's root token (tests only).
func (s *Server) RootTokenValue() string { return s.rootToken }

// User is a provisioned test user: policy, periodic orphan token, token file.
type User struct {
	Name      string
	Token     string
	TokenFile string
	Path      string // inside the secret/ mount
}

// Provision writes the user's policy and mints a periodic orphan token with the
// fleet's display name and no default policy, like `provision` does, and writes it to tokenFile (0600).
func (s *Server) Provision(ctx context.Context, name, tokenFile string) (*User, error) {
	root := s.Root()
	path := "workstation/claude-users/" + name
	if err := root.Sys().PutPolicyWithContext(ctx, "workstation-claude-"+name, policyHCL(path)); err != nil {
		return nil, fmt.Errorf("put policy: %w", err)
	}
	sec, err := root.Auth().Token().CreateOrphanWithContext(ctx, &vault.TokenCreateRequest{
		Policies: []string{"workstation-claude-" + name}, NoDefaultPolicy: true, Period: "768h",
		DisplayName: "devvm-claude-auth-" + name, Renewable: boolp(true),
	})
	if err != nil {
		return nil, fmt.Errorf("create token: %w", err)
	}
	u := &User{Name: name, Token: sec.Auth.ClientToken, TokenFile: tokenFile, Path: path}
	if tokenFile != "" {
		if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(tokenFile, []byte(u.Token+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func boolp(b bool) *bool { return &b }

// policyHCL mirrors store.PolicyHCL; kept separate so the harness does not trust
// the code under test for what the fleet's policy is. Hosts are one segment
// ("+"), never a glob, with the segments "+" also matches denied.
func policyHCL(path string) string {
	return fmt.Sprintf(`path "secret/data/%[1]s" { capabilities = ["create", "read", "update"] }
path "secret/data/%[1]s/hosts/+" { capabilities = ["create", "read", "update"] }
path "secret/data/%[1]s/hosts/" { capabilities = ["deny"] }
path "secret/data/%[1]s/hosts/." { capabilities = ["deny"] }
path "secret/data/%[1]s/hosts/.." { capabilities = ["deny"] }
path "secret/metadata/%[1]s" {
  capabilities = ["read", "patch"]
  allowed_parameters = { "custom_metadata" = [] }
}
path "secret/metadata/%[1]s/hosts/+" { capabilities = ["read"] }
path "secret/metadata/%[1]s/hosts/" { capabilities = ["deny"] }
path "secret/metadata/%[1]s/hosts/." { capabilities = ["deny"] }
path "secret/metadata/%[1]s/hosts/.." { capabilities = ["deny"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "sys/capabilities-self" { capabilities = ["update"] }
`, path)
}
