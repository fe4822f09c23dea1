package config

import (
	"slices"
	"strings"
	"testing"
)

func TestChildEnv(t *testing.T) {
	root := []string{
		"PATH=/usr/bin:/bin", "HOME=/home/v", "USER=v", "LOGNAME=v", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC",
		"HTTPS_PROXY=http://proxy:3128", "no_proxy=localhost", "http_proxy=http://root:hunter2@proxy:3128",
		"ALL_PROXY=socks5://u@proxy:1080", "SSL_CERT_FILE=/etc/ssl/ca.pem", "NODE_EXTRA_CA_CERTS=/etc/ssl/extra.pem",
		"ANTHROPIC_BASE_URL=http://127.0.0.1:9", "CLAUDE_AUTH_CHECK_SPREAD=0", "CLAUDE_STANDIN_LOG=/tmp/x",
		"VAULT_ADDR=https://vault:8200", "VAULT_CACERT=/etc/vault/ca.pem", "VAULT_CLIENT_KEY=/etc/vault/client-key.pem",
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=http://127.0.0.1:9/v1/oauth/token",
		// Root's secrets and everything else of root's.
		"VAULT_TOKEN=hvs.admin", "VAULT_HEADERS=X-Auth: s",
		"AWS_SECRET_ACCESS_KEY=aws", "AWS_PROFILE=prod", "ANTHROPIC_API_KEY=sk-ant-api", "ANTHROPIC_AUTH_TOKEN=x",
		"CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-root", "CLAUDE_AUTH_DB_PASSWORD=p", "GITHUB_TOKEN=ghp", "MY_API_KEY=k",
		"DB_PASS_PHRASE=x", "SSH_AUTH_SOCK=/tmp/ssh-agent", "TERM=xterm-256color", "DISPLAY=:0", "SUDO_USER=admin",
		"LD_PRELOAD=/tmp/evil.so", "BASH_ENV=/tmp/x", "NOEQUALS", "=odd",
	}
	got := ChildEnv(root)
	want := []string{
		"PATH=/usr/bin:/bin", "HOME=/home/v", "USER=v", "LOGNAME=v", "LANG=C.UTF-8", "LC_ALL=C.UTF-8", "TZ=UTC",
		"HTTPS_PROXY=http://proxy:3128", "no_proxy=localhost",
		"SSL_CERT_FILE=/etc/ssl/ca.pem", "NODE_EXTRA_CA_CERTS=/etc/ssl/extra.pem",
		"ANTHROPIC_BASE_URL=http://127.0.0.1:9", "CLAUDE_AUTH_CHECK_SPREAD=0", "CLAUDE_STANDIN_LOG=/tmp/x",
		"VAULT_ADDR=https://vault:8200", "VAULT_CACERT=/etc/vault/ca.pem", "VAULT_CLIENT_KEY=/etc/vault/client-key.pem",
		"CLAUDE_AUTH_OAUTH_TOKEN_URL=http://127.0.0.1:9/v1/oauth/token",
	}
	if !slices.Equal(got, want) {
		t.Errorf("ChildEnv(root's) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSecretName(t *testing.T) {
	for k, want := range map[string]bool{
		"VAULT_TOKEN": true, "AWS_SECRET_ACCESS_KEY": true, "AWS_ACCESS_KEY_ID": true, "ANTHROPIC_API_KEY": true,
		"CLAUDE_CODE_OAUTH_TOKEN": true, "PGPASSWORD": true, "github_token": true, "OPENAI_APIKEY": true,
		"SSH_PRIVATE_KEY_FILE": true, "CLAUDE_AUTH_VAULT_TOKEN_FILE": true,
		"PATH": false, "CLAUDE_AUTH_OAUTH_CLIENT_ID": false, "CLAUDE_AUTH_OAUTH_TOKEN_URL": true, "VAULT_ADDR": false,
		"LC_MONETARY": false, "KEYBOARD": false, "CLAUDE_AUTH_HOST_ID": false,
	} {
		if got := SecretName(k); got != want {
			t.Errorf("SecretName(%q) = %v; want %v", k, got, want)
		}
	}
}
