package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/check"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/eventlog"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
	"github.com/claude-auth-sync/claude-auth-sync/sync/telemetry"
)

const envKey = "CLAUDE_CODE_OAUTH_TOKEN"

// readEnvToken returns the token in the setup-token env file at path ("" when none).
func readEnvToken(path string) credentials.Secret {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "))
		if v, ok := strings.CutPrefix(line, envKey+"="); ok {
			return credentials.Secret(strings.Trim(v, `"'`))
		}
	}
	return ""
}

// setupTokenMode is the pass's step for setup-token mode: while Vault holds a
// setup token (or Vault is down and the env file holds one) the pass is the
// setup-token pass; when Vault no longer holds one, the mode is undone.
func (p *pass) setupTokenMode(ctx context.Context) *Outcome {
	e, doc := p.e, p.vs.doc
	if doc == nil {
		tok := e.SetupToken()
		if tok == "" {
			return nil
		}
		o := p.setupTokenPass(ctx, nil, tok)
		if o.Code == ExitOK {
			o = Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: o.Message + "; vault unreachable, setup-token mode not re-confirmed: " + p.vs.down.Error()}
		}
		return &o
	}
	if prob := doc.SetupTokenProblem(); prob != "" {
		e.Log.Event(eventlog.WARN, "setup-token mode ignored: %s at %s; staying with the rotating login. Store the token as a string (or remove the field)", prob, e.Store.Describe())
	}
	if tok := doc.SetupToken(); tok != "" {
		o := p.setupTokenPass(ctx, doc, tok)
		return &o
	}
	if tok := e.SetupToken(); tok != "" {
		if o := p.leaveSetupTokenMode(ctx, doc, tok); o != nil {
			e.Log.Event(o.Status, "%s", o.Message)
		}
	}
	return nil
}

// setupTokenPass is the pass in setup-token mode: materialise the env file,
// backfill the credentials file, no backups, check with the env token. doc is
// nil when Vault is unreachable and the env file is all we have.
func (p *pass) setupTokenPass(ctx context.Context, doc *store.Doc, tok credentials.Secret) Outcome {
	e, rec := p.e, p.rec
	now := e.now()
	if doc != nil {
		if err := writeEnvFile(e.Cfg.TokenEnvFile, tok); err != nil {
			return fail("setup-token mode: write %s: %v", e.Cfg.TokenEnvFile, err)
		}
	}
	end := time.Time{}
	if doc != nil {
		end = doc.SetupTokenExpiresAt()
	}
	if end.IsZero() {
		first, ok := e.Telemetry.LoadRecord().SetupTokenFirstSeen[tok.Fingerprint()]
		if !ok {
			first = now
			rec.SetupTokenFirstSeen[tok.Fingerprint()] = now
		}
		end = first.Add(telemetry.SetupTokenLifetime)
	}
	if left := end.Sub(now); left <= 0 {
		return fail("setup-token mode: the setup token expired on %s; ask your admin for a new one (`claude setup-token`)", end.Format(time.DateOnly))
	} else if left <= 30*24*time.Hour {
		e.Log.Event(eventlog.WARN, "setup-token mode: the setup token expires on %s (in %d days); ask your admin for a new one", end.Format(time.DateOnly), int(left.Hours()/24)+1)
	}

	if err := p.backfill(ctx, tok, now); err != nil {
		e.Log.Event(eventlog.WARN, "setup-token mode: could not backfill the credentials file: %v", err)
	}
	if p.opt.SkipCheck != "" {
		return Outcome{Status: eventlog.OK, Code: ExitOK, Message: "setup-token mode: " + e.Cfg.TokenEnvFile + " in place; " + p.opt.SkipCheck}
	}
	res := e.runCheck(ctx, rec, envKey+"="+tok.Reveal())
	switch res.Kind {
	case check.OK:
		return Outcome{Status: eventlog.OK, Code: ExitOK, Message: "setup-token mode: inference check passed (no backups in this mode)"}
	case check.Transient, check.Unexpected:
		return Outcome{Status: eventlog.WARN, Code: ExitTempFail, Message: "setup-token mode: " + res.Reason + "; the next pass retries"}
	}
	return fail("setup-token mode: the setup token was refused: %s; ask your admin for a new setup token (no restore in this mode)", res.Reason)
}

// writeEnvFile writes the setup token's env file at path (0600), unless it
// already holds just that.
func writeEnvFile(path string, tok credentials.Secret) error {
	want := []byte(envKey + "=" + tok.Reveal() + "\n")
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o600 {
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	_, err := atomicfile.Write(path, want, 0o600)
	return err
}

// backfill puts the setup token into the file's claudeAiOauth (access token,
// expiry a year on, everything else kept) so running processes cut over.
func (p *pass) backfill(ctx context.Context, tok credentials.Secret, now time.Time) error {
	e, lin := p.e, p.lin
	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil {
		return err
	}
	if local.OAuth == nil || local.OAuth.AccessToken() == tok {
		return nil
	}
	return e.Refresher.WithFileLocks(ctx, func() error {
		cur, err := credentials.Read(e.Cfg.CredentialsFile)
		if err != nil {
			return err
		}
		if cur.OAuth == nil || cur.OAuth.AccessToken() == tok {
			return nil
		}
		if cur.State == credentials.Usable {
			// Keep the rotating login we are about to shadow: it is Vault's too,
			// but a local copy costs nothing and loses nothing.
			_ = lin.Observe(cur.OAuth.RefreshToken())
			if err := keepReplaced(e.Cfg.StateDir, cur); err != nil {
				return err
			}
		}
		data, err := cur.Base().WithOAuth(cur.OAuth.WithAccessToken(tok, now.Add(telemetry.SetupTokenLifetime))).Marshal()
		if err != nil {
			return err
		}
		_, err = atomicfile.Write(e.Cfg.CredentialsFile, data, credentials.FileMode)
		return err
	})
}

// leaveSetupTokenMode runs when Vault no longer has a setup token but the env
// file is still here: remove it, and put the rotating login back if the file
// holds a backfill.
func (p *pass) leaveSetupTokenMode(ctx context.Context, doc *store.Doc, old credentials.Secret) *Outcome {
	e, lin := p.e, p.lin
	if err := os.Remove(e.Cfg.TokenEnvFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		o := fail("setup-token mode ended, but %s cannot be removed: %v", e.Cfg.TokenEnvFile, err)
		return &o
	}
	local, err := credentials.Read(e.Cfg.CredentialsFile)
	if err != nil || local.OAuth == nil || !IsBackfill(local.OAuth, old, e.now()) {
		return &Outcome{Status: eventlog.OK, Code: ExitOK, Message: "setup-token mode ended; removed " + e.Cfg.TokenEnvFile}
	}
	vo, err := doc.OAuth()
	if err != nil || vo == nil || vo.Usable() != nil {
		return &Outcome{Status: eventlog.WARN, Code: ExitOK, Message: "setup-token mode ended, but the backup holds no rotating login to put back; " + LoginHint()}
	}
	expect := func(cur *credentials.Local) error {
		if cur.OAuth != nil && !IsBackfill(cur.OAuth, old, e.now()) {
			return errors.New("the file no longer holds the backfill")
		}
		return nil
	}
	if err := e.WriteLogin(ctx, lin, vo, expect); err != nil {
		o := fail("setup-token mode ended, but putting the rotating login back failed: %v", err)
		return &o
	}
	return &Outcome{Status: eventlog.RECOVERED, Code: ExitOK, Message: fmt.Sprintf("setup-token mode ended; removed the env file and restored the rotating login from the backup (v%d)", doc.Version)}
}

// SetupToken is the setup token from the env file ("" when not in that mode).
func (e *Engine) SetupToken() credentials.Secret { return readEnvToken(e.Cfg.TokenEnvFile) }
