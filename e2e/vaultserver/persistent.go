package vaultserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// StartPersistent starts a real (non-dev) server with file storage in dir:
// initialised with one unseal key, unsealed, KV v2 mounted at secret/ with
// max_versions raised so tests can read the whole history. Unlike the dev
// server it keeps its data across Stop and Restart.
func StartPersistent(dir string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	s := &Server{bin: bin, Port: port, Addr: fmt.Sprintf("http://127.0.0.1:%d", port), dir: dir, persistent: true}
	cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
disable_mlock = true
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "http://127.0.0.1:%d"
`, filepath.Join(dir, "data"), port, port, port+1)
	if err := os.WriteFile(filepath.Join(dir, "vault.hcl"), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Restart starts a stopped persistent server again and unseals it.
func (s *Server) Restart() error {
	if !s.persistent {
		return fmt.Errorf("only a persistent server keeps its data across a restart")
	}
	return s.start()
}

func (s *Server) call(method, path, token string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.Addr+path, rd)
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode, nil
}

func (s *Server) initAndUnseal() error {
	deadline := time.Now().Add(30 * time.Second)
	var st struct {
		Initialized bool `json:"initialized"`
	}
	for {
		if code, err := s.call("GET", "/v1/sys/init", "", nil, &st); err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("vault server did not answer in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := !st.Initialized
	if first {
		var init struct {
			Keys      []string `json:"keys_base64"`
			RootToken string   `json:"root_token"`
		}
		if code, err := s.call("PUT", "/v1/sys/init", "", map[string]int{"secret_shares": 1, "secret_threshold": 1}, &init); err != nil || code != 200 || len(init.Keys) == 0 {
			s.Stop()
			return fmt.Errorf("vault init: %d %v", code, err)
		}
		s.unsealKey, s.rootToken = init.Keys[0], init.RootToken
	}
	if code, err := s.call("PUT", "/v1/sys/unseal", "", map[string]string{"key": s.unsealKey}, nil); err != nil || code != 200 {
		s.Stop()
		return fmt.Errorf("vault unseal: %d %v", code, err)
	}
	for {
		if code, _ := s.call("GET", "/v1/sys/health", "", nil, nil); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("vault did not become active in 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if first {
		if code, err := s.call("POST", "/v1/sys/mounts/secret", s.rootToken, map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}, nil); err != nil || code/100 != 2 {
			s.Stop()
			return fmt.Errorf("mount secret/: %d %v", code, err)
		}
		// KV v2 upgrades its mount in the background; wait until config writes.
		for {
			code, _ := s.call("POST", "/v1/secret/config", s.rootToken, map[string]any{"max_versions": 1000}, nil)
			if code/100 == 2 {
				break
			}
			if time.Now().After(deadline) {
				s.Stop()
				return fmt.Errorf("secret/ did not become writable: %d", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}
