package config

import (
	"net/url"
	"os"
	"sort"
	"strings"
)

// What a child started for another user (root's --user: the check's claude,
// `claude --version`, the agent's refresh child, exec's command) may inherit
// from root's environment. That child runs the user's code with the user's
// uid: whatever it is given, the user has. So it gets only what it needs to
// run (the user's paths, locale, the proxies and CAs to reach Anthropic, the
// product's own non-secret settings) and never a secret of root's: no
// VAULT_TOKEN, AWS_*, ANTHROPIC_API_KEY, nor anything named like a secret.
// No such child has a terminal, so TERM is never passed. The user's own runs
// (no --user) keep their whole environment: it is theirs.

// childEnvKeys are passed by name.
var childEnvKeys = map[string]bool{
	"PATH": true, "HOME": true, "USER": true, "LOGNAME": true, "LANG": true, "LANGUAGE": true, "TZ": true,
	"SSL_CERT_FILE": true, "SSL_CERT_DIR": true, "NODE_EXTRA_CA_CERTS": true,
	// Where the claude CLI sends its requests (a gateway, the tests' fake).
	"ANTHROPIC_BASE_URL": true,
}

// childEnvProxies are passed unless they carry credentials (root's proxy
// password is root's secret).
var childEnvProxies = map[string]bool{
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
	"http_proxy": true, "https_proxy": true, "no_proxy": true, "all_proxy": true,
}

// childEnvPrefixes are passed by prefix: the locale, and the settings of
// Claude Code and of this program (CLAUDE_*), the secret-named ones excepted.
var childEnvPrefixes = []string{"LC_", "CLAUDE_"}

// secretWords in a variable's name mark it as a secret, whatever its prefix.
var secretWords = []string{"TOKEN", "SECRET", "PASSW", "PASSPHRASE", "CREDENTIAL", "COOKIE", "PRIVATE", "SESSION"}

// SecretName says whether an environment variable's name looks like it
// holds a secret (…_TOKEN, …_KEY, …SECRET…, …PASSWORD…, AWS_*, …).
func SecretName(key string) bool {
	k := strings.ToUpper(key)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return strings.HasSuffix(k, "KEY") || strings.Contains(k, "_KEY_") || strings.Contains(k, "APIKEY") ||
		strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "GOOGLE_APPLICATION") || strings.HasPrefix(k, "AZURE_")
}

// childEnvAllowed: KEY=value may reach a child started for another user.
func childEnvAllowed(key, val string) bool {
	if ownSetting(key) {
		// The refresh child is this program and reads the same settings.
		// VAULT_HEADERS may carry a credential in a header's value.
		return key != "VAULT_HEADERS"
	}
	if SecretName(key) {
		return false
	}
	if childEnvKeys[key] {
		return true
	}
	if childEnvProxies[key] {
		return !proxyHasCredentials(val)
	}
	for _, p := range childEnvPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// ownSetting: one of this program's settings (the system file's keys: names
// and paths, never a secret, though some have TOKEN or KEY in their name).
func ownSetting(key string) bool { return fileKeys[key] }

// proxyHasCredentials: a proxy URL with a user (and maybe a password) in it.
func proxyHasCredentials(v string) bool {
	if !strings.Contains(v, "@") {
		return false
	}
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	return err != nil || u.User != nil
}

// ChildEnv is the environment for a child started for another user: the
// allow-listed entries of environ (root's, after TakeIdentity set the
// user's HOME, USER and LOGNAME), in their order.
func ChildEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" && childEnvAllowed(k, v) {
			out = append(out, kv)
		}
	}
	return out
}

// EnvKeys are the names in an environment, sorted: what a test or a debug
// line may show of it.
func EnvKeys(env []string) []string {
	var ks []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ChildEnviron is the environment for a child this process starts: the
// whole of it for the caller's own login, the allow-listed part when root
// acts for another user.
func (c *Config) ChildEnviron() []string {
	if c.ActFor == nil {
		return os.Environ()
	}
	return ChildEnv(os.Environ())
}
