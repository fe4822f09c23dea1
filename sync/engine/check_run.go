package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

// Checker runs the inference check (check.Runner in production).
type Checker interface {
	Run(ctx context.Context, extraEnv ...string) check.Result
}

// checkEnv is the environment for the claude child: ours (only its
// allow-listed part when root acts for a user), minus anything that would
// make it use another credential than the one we are checking.
func checkEnv(cfg *config.Config) []string {
	var env []string
	for _, kv := range cfg.ChildEnviron() {
		k, _, _ := cut(kv, '=')
		switch k {
		case "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "VAULT_TOKEN":
			continue
		}
		env = append(env, kv)
	}
	if os.Getenv("CLAUDE_CONFIG_DIR") == "" && cfg.ClaudeConfigDir != filepath.Join(cfg.Home, ".claude") {
		env = append(env, "CLAUDE_CONFIG_DIR="+cfg.ClaudeConfigDir)
	}
	return env
}

func (e *Engine) runCheck(ctx context.Context, rec *telemetry.Record, extraEnv ...string) check.Result {
	if e.Interactive {
		e.Diag.Info(fmt.Sprintf("checking the login with a one-turn prompt to %s; this can take up to %s", e.Cfg.ClaudeBin, e.Cfg.CheckTimeout))
	}
	res := e.Checker.Run(ctx, extraEnv...)
	rec.LastCheck = &telemetry.CheckRecord{At: e.now(), Result: res.Kind.String(), Reason: check.Mask(res.Reason)}
	return res
}
