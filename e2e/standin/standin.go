// Package standin is a small stand-in for the `claude` CLI, for the demo and the
// fast tests: it answers `--version`, and for `-p …` reads the login the way
// Claude does ($CLAUDE_CODE_OAUTH_TOKEN, else the credentials file), calls
// $ANTHROPIC_BASE_URL/v1/messages with it and prints the reply, or an error
// shaped like Claude's. It never refreshes: it is the check's target, not a
// refresher. The interop tests use the real CLI instead.
package standin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Main runs the stand-in and returns its exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "--version" {
		fmt.Fprintln(stdout, "2.1.332 (Claude Code stand-in)")
		return 0
	}
	// CLAUDE_STANDIN_LOG: append "<unix ns> +1" now and "<unix ns> -1" at
	// the end, so a test can count how many checks ran at once.
	if logPath := os.Getenv("CLAUDE_STANDIN_LOG"); logPath != "" {
		mark(logPath, "+1")
		defer mark(logPath, "-1")
	}
	if d := os.Getenv("CLAUDE_STANDIN_SLEEP"); d != "" {
		if dur, err := time.ParseDuration(d); err == nil {
			time.Sleep(dur)
		}
	}
	token := os.Getenv("CLAUDE_CODE_OAUTH_TOKEN")
	if token == "" {
		dir := os.Getenv("CLAUDE_CONFIG_DIR")
		if dir == "" {
			dir = filepath.Join(os.Getenv("HOME"), ".claude")
		}
		data, err := os.ReadFile(filepath.Join(dir, ".credentials.json"))
		if err != nil {
			fmt.Fprintln(stdout, "Not logged in · Please run /login")
			return 1
		}
		var f struct {
			OAuth struct {
				AccessToken  string `json:"accessToken"`
				RefreshToken string `json:"refreshToken"`
			} `json:"claudeAiOauth"`
		}
		if err := json.Unmarshal(data, &f); err != nil || f.OAuth.AccessToken == "" {
			fmt.Fprintln(stdout, "Not logged in · Please run /login")
			return 1
		}
		token = f.OAuth.AccessToken
	}
	base := os.Getenv("ANTHROPIC_BASE_URL")
	if base == "" {
		base = "https://api.anthropic.com"
	}
	body, _ := json.Marshal(map[string]any{"model": "claude-haiku-4-5", "max_tokens": 32,
		"messages": []map[string]string{{"role": "user", "content": "Reply with exactly AUTH_OK and nothing else."}}})
	req, _ := http.NewRequest("POST", strings.TrimRight(base, "/")+"/v1/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("anthropic-beta", "oauth-2025-04-20")
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		fmt.Fprintln(stdout, "API Error: Connection error.")
		return 1
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != 200 {
		fmt.Fprintf(stdout, "API Error: %d %s\n", resp.StatusCode, bytes.TrimSpace(raw))
		return 1
	}
	var msg struct {
		Content []struct {
			Text string `json:"text"`
		} `json:"content"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil || len(msg.Content) == 0 {
		fmt.Fprintln(stdout, "API Error: unexpected response")
		return 1
	}
	fmt.Fprintln(stdout, msg.Content[0].Text)
	return 0
}

// mark appends one short line; O_APPEND makes each write whole, whoever else
// writes the file at the same moment.
func mark(path, what string) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%d %s %s\n", time.Now().UnixNano(), what, os.Getenv("HOME"))
	f.Close()
}
