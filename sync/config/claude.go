package config

import (
	"os"
	"path/filepath"
	"strings"
)

// expandHome writes the user's home into a configured path: a leading "~" or
// "~/", and "$HOME", "${HOME}" or "{home}" anywhere. A fleet-wide config
// names a per-user path so (Claude's native installer puts the CLI in
// ~/.local/bin), and root acting for a user gets that user's, not its own.
func expandHome(p, home string) string {
	if p == "" || home == "" {
		return p
	}
	if p == "~" {
		return home
	}
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		p = filepath.Join(home, rest)
	}
	return strings.NewReplacer("${HOME}", home, "$HOME", home, "{home}", home).Replace(p)
}

// claudeDefaultName is the command looked up when nothing names the CLI.
const claudeDefaultName = "claude"

// claudeFallbacks are where the CLI's installers put it, looked at after the
// user's PATH (relative ones are under the user's home).
var claudeFallbacks = []string{"~/.local/bin/claude", "~/.claude/local/claude", "/usr/local/bin/claude", "/usr/bin/claude"}

// ClaudeLookup is where the claude CLI was found, or everything tried.
type ClaudeLookup struct {
	Path    string   // "" = not found
	Tried   []string // in order; "claude on PATH (…)" for a PATH search
	Setting string   // where CLAUDE_AUTH_CLAUDE_BIN came from; "" = the default search
}

// NotFound is the one-line reason for a check or status when Path is "".
func (l ClaudeLookup) NotFound() string {
	if l.Setting != "" {
		return "claude CLI not found: tried " + strings.Join(l.Tried, ", ") +
			" (CLAUDE_AUTH_CLAUDE_BIN from " + l.Setting + "); install it there or correct the setting"
	}
	return "claude CLI not found: tried " + strings.Join(l.Tried, ", ") +
		"; install it or set CLAUDE_AUTH_CLAUDE_BIN to its path"
}

// FindClaude looks the CLI up now (it may be installed while the agent runs):
// the configured command (a path, or a name on the PATH), else claude on the
// user's PATH, then the installers' places in claudeFallbacks.
func (c *Config) FindClaude() ClaudeLookup {
	l := ClaudeLookup{Setting: c.Sources["CLAUDE_AUTH_CLAUDE_BIN"]}
	name := c.ClaudeBin
	if name == "" {
		name = claudeDefaultName
	}
	if strings.Contains(name, "/") {
		l.Tried = []string{name}
		if isExecutable(name) {
			l.Path = name
		}
		return l
	}
	l.Tried = []string{name + " on PATH (" + c.SearchPath + ")"}
	if p := c.lookPath(name); p != "" {
		l.Path = p
		return l
	}
	if c.ClaudeBin != "" {
		return l
	}
	for _, f := range claudeFallbacks {
		p := expandHome(f, c.Home)
		l.Tried = append(l.Tried, p)
		if isExecutable(p) {
			l.Path = p
			return l
		}
	}
	return l
}

// lookPath is exec.LookPath on the PATH the config saw (the user's).
func (c *Config) lookPath(name string) string {
	for _, dir := range filepath.SplitList(c.SearchPath) {
		if dir == "" || !filepath.IsAbs(dir) {
			continue // "." or a relative entry: never run what the cwd holds
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}
