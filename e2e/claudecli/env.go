package claudecli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Env returns the complete environment for running the CLI hermetically as a
// user whose home is home and whose Claude config dir is configDir (empty:
// home/.claude): inference goes to baseURL (the fake's plain http URL), the
// OAuth host is reached through proxy (may be nil), auto-update and
// non-essential traffic are off, and nothing is inherited from the test's own
// environment except a PATH that finds node. It also marks onboarding as done
// (PrepareHome), without which `claude -p` may stop at the first-run screens;
// it panics if it cannot write there, as a test's temporary home always can.
func Env(home, configDir, baseURL string, proxy *Proxy) []string {
	if configDir == "" {
		configDir = filepath.Join(home, ".claude")
	}
	if err := PrepareHome(home, configDir); err != nil {
		panic(err)
	}
	env := []string{
		"HOME=" + home,
		"PATH=" + path(),
		"USER=" + userName(),
		"LANG=C.UTF-8",
		"TERM=dumb",
		"TMPDIR=" + os.TempDir(),
		"CLAUDE_CONFIG_DIR=" + configDir,
		"ANTHROPIC_BASE_URL=" + baseURL,
		"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1",
		"DISABLE_AUTOUPDATER=1",
		"DISABLE_TELEMETRY=1",
		"DISABLE_ERROR_REPORTING=1",
	}
	if proxy != nil {
		env = append(env, proxy.Env()...)
	}
	return env
}

// PrepareHome creates configDir and sets "hasCompletedOnboarding": true in the
// global config file, keeping whatever else it holds. With CLAUDE_CONFIG_DIR set
// the CLI reads and updates $CLAUDE_CONFIG_DIR/.claude.json (checked on 2.1.124
// and 2.1.332), otherwise ~/.claude.json; both are written. (Those two builds
// answer `claude -p` without it too; older or interactive runs may not.)
func PrepareHome(home, configDir string) error {
	if err := os.MkdirAll(configDir, 0o700); err != nil {
		return fmt.Errorf("claudecli: %w", err)
	}
	for _, f := range []string{filepath.Join(home, ".claude.json"), filepath.Join(configDir, ".claude.json")} {
		if err := markOnboarded(f); err != nil {
			return fmt.Errorf("claudecli: %s: %w", f, err)
		}
	}
	return nil
}

func markOnboarded(file string) error {
	doc := map[string]any{}
	b, err := os.ReadFile(file)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &doc); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if doc["hasCompletedOnboarding"] == true {
		return nil
	}
	doc["hasCompletedOnboarding"] = true
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(out, '\n'), 0o600)
}

// path is /usr/bin:/bin plus the directory of node (the cli.js builds need it).
func path() string {
	dirs := []string{"/usr/local/bin", "/usr/bin", "/bin"}
	if node, err := exec.LookPath("node"); err == nil {
		if abs, err := filepath.Abs(node); err == nil {
			d := filepath.Dir(abs)
			found := false
			for _, x := range dirs {
				found = found || x == d
			}
			if !found {
				dirs = append([]string{d}, dirs...)
			}
		}
	}
	return strings.Join(dirs, ":")
}

func userName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "claude-e2e"
}
