package provision

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	vault "github.com/hashicorp/vault/api"
	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// ReaderDisplayName is the display name of the fleet reader's token.
const ReaderDisplayName = "claude-auth-sync-fleet-reader"

// ReaderLine starts provision's output line about the fleet reader.
const ReaderLine = "fleet-reader"

// fleetReader reconciles the fleet reader (Options.FleetReaderToken): its
// policy, and a live token with only that policy in the file, root's, 0600,
// never written through a link.
func (p *provisioner) fleetReader(ctx context.Context, mount, base string) Result {
	l := &line{user: ReaderLine}
	path := p.opt.FleetReaderToken
	if err := p.ensurePolicy(ctx, l, fleet.ReaderPolicy, fleet.ReaderPolicyHCL(mount, base)); err != nil {
		return p.fail(ReaderLine, err)
	}
	// The file's dir is the admin's choice (its path may hold links); the
	// dir itself must be ours and writable by nobody else.
	tree := &userTree{acct: Account{Name: "root", UID: os.Geteuid(), GID: os.Getegid(), Home: filepath.Dir(path)}, file: filepath.Base(path)}
	var st treeStatus
	if err := readReaderFile(tree, &st); err != nil {
		return p.fail(ReaderLine, err)
	}
	minted, exposed, err := p.ensureToken(ctx, l, &st, func(tok credentials.Secret) (string, error) {
		why, err := p.checkReaderToken(ctx, tok)
		if why == "" && err == nil && p.admin == nil {
			p.reportStaleReader(ctx, l, tok, mount, base)
		}
		return why, err
	},
		func() (*vault.SecretAuth, error) {
			return p.mintToken(ctx, &vault.TokenCreateRequest{
				Policies:        []string{fleet.ReaderPolicy},
				NoDefaultPolicy: true,
				DisplayName:     ReaderDisplayName,
				Metadata:        map[string]string{"created_by": "claude-auth-sync provision", "purpose": "claude-auth-sync fleet"},
			})
		}, fmt.Sprintf("periodic %s, orphan, only policy %s", TokenPeriod, fleet.ReaderPolicy))
	if err != nil {
		return p.fail(ReaderLine, err)
	}
	fixMode := st.tokenFixMode && (minted != nil || !st.exposed()) // as placeFiles
	if minted == nil && fixMode {
		l.did("%s mode %04o of %s to 0600", p.verb("changed", "change"), st.tokenMode, tree.tokenPath())
	}
	if p.apply && (minted != nil || fixMode) {
		if err := p.installToken(ctx, l, tree, minted, exposed, fixMode); err != nil {
			return p.fail(ReaderLine, err)
		}
	}
	if p.apply && len(l.needs) == 0 {
		p.rememberReader(ctx, path, minted, st.token)
	}
	return p.result(l)
}

// ReaderRecord, in the state dir, says where the fleet reader's token file
// is and the token's accessor ("token_file=…" and "accessor=…" lines, root's,
// 0600): a purge of the package, which runs when the binary is gone, removes
// that file and prints the command that revokes the token.
const ReaderRecord = "fleet-reader"

// rememberReader keeps ReaderRecord up to date with the token now in path:
// the minted one's accessor, or the one Vault gives for the token the file
// held. Best effort: without it a purge says less.
func (p *provisioner) rememberReader(ctx context.Context, path string, minted *vault.SecretAuth, tok credentials.Secret) {
	acc := ""
	if minted != nil {
		acc = minted.Accessor
	} else if tok != "" {
		c, err := p.base.Clone()
		if err != nil {
			return
		}
		c.SetToken(tok.Reveal())
		s, err := c.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil || s == nil || s.Data == nil {
			return
		}
		acc, _ = s.Data["accessor"].(string)
	}
	// Both go into a shell's hands: one line each, no quoting needed.
	plain := regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	if !plain.MatchString(acc) || strings.ContainsAny(path, "\n\x00'\"$`\\") {
		return
	}
	body := "token_file=" + path + "\naccessor=" + acc + "\n"
	rec := filepath.Join(p.opt.StateDir, ReaderRecord)
	if b, err := os.ReadFile(rec); err == nil && string(b) == body {
		return
	}
	_, _ = atomicfile.Write(rec, []byte(body), 0o600)
}

// readerPolicyOnly brings an existing reader policy up to date in a run
// without --fleet-reader-token (an upgrade fixes the old, escapable one
// with nothing else to do); ok is false when there is nothing to say (no
// admin token, no such policy, or it is current).
func (p *provisioner) readerPolicyOnly(ctx context.Context, vs vaultSettings) (Result, bool) {
	if p.admin == nil || !vs.listable {
		return Result{}, false
	}
	// Best effort: without --fleet-reader-token the reader is not this
	// run's business unless its policy exists and can be read.
	have, err := p.admin.Sys().GetPolicyWithContext(ctx, fleet.ReaderPolicy)
	if err != nil || have == "" {
		return Result{}, false
	}
	l := &line{user: ReaderLine}
	if err := p.ensurePolicy(ctx, l, fleet.ReaderPolicy, fleet.ReaderPolicyHCL(vs.mount, vs.base)); err != nil {
		return p.fail(ReaderLine, err), true
	}
	return p.result(l), len(l.changes) > 0
}

// checkReaderToken: "" when tok is live and holds the reader's policy and no
// other (not even default), else why it must be replaced.
func (p *provisioner) checkReaderToken(ctx context.Context, tok credentials.Secret) (string, error) {
	info, why, err := p.lookupToken(ctx, tok)
	if why != "" || err != nil {
		return why, err
	}
	if !slices.Equal(info.Policies, []string{fleet.ReaderPolicy}) {
		return "the token file holds a token with policies " + strings.Join(info.Policies, ",") + ", not only " + fleet.ReaderPolicy, nil
	}
	return "", nil
}

// readReaderFile reads the reader token file as provision reads a user's:
// no link followed, only a single-link regular file of root's; its dir must
// be root's and writable by nobody else.
func readReaderFile(tree *userTree, st *treeStatus) error {
	fd, err := tree.walk(false, st)
	if err == nil {
		var ds unix.Stat_t
		err = unix.Fstat(fd, &ds)
		if err == nil && ds.Mode&0o022 != 0 {
			err = fmt.Errorf("%s is writable by group or others (mode %04o): keep the reader token in a directory only root writes, e.g. /etc/claude-auth-sync", tree.acct.Home, ds.Mode&0o7777)
		}
		if err == nil {
			err = tree.readToken(fd, st)
		}
		unix.Close(fd)
	}
	if err != nil {
		// The tree's words are about a user's home; this file is root's.
		msg := strings.TrimPrefix(err.Error(), ErrUnsafe.Error()+": ")
		return fmt.Errorf("refusing the reader token file: %s", strings.Replace(msg, "home "+tree.acct.Home, tree.acct.Home, 1))
	}
	return nil
}

// reportStaleReader, in a run without an admin token, says when the reader
// token's policy is still the old one (its glob reads any metadata of the
// mount). The old policy did not grant capabilities-self (and the reader
// token has no default policy), so the probe is a read: the old glob lets
// it through to KV (404, or a document), the current policy refuses it.
func (p *provisioner) reportStaleReader(ctx context.Context, l *line, tok credentials.Secret, mount, base string) {
	c, err := p.base.Clone()
	if err != nil {
		return
	}
	c.SetToken(tok.Reveal())
	if fleet.ProbeReaderPolicy(ctx, c, mount, base) == store.PolicyOld {
		l.needs = append(l.needs, "a rewrite of policy "+fleet.ReaderPolicy+" (it is the old one, whose glob lets the token read any metadata of the mount)")
	}
}
