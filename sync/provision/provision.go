// Package provision is the root-side roster reconciler: for each OS user on the
// roster it writes the per-user Vault policy, mints and installs the scoped
// Vault token when there is no usable one, and enables or disables the user's
// agent unit. It never follows a symlink in a user's home (see usertree.go) and
// never puts a token in argv, a log line or an error.
package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
	"golang.org/x/sys/unix"

	"github.com/claude-auth-sync/claude-auth-sync/lock"
	"github.com/claude-auth-sync/claude-auth-sync/sync/atomicfile"
	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// DefaultStateDir holds what provision remembers between runs: which users the
// last applied run managed (so users removed from the roster get their unit
// disabled) and its lock.
const DefaultStateDir = "/var/lib/claude-auth-sync"

// TokenPeriod is the period of the scoped tokens: renewed by every pass, a token
// lives as long as its user's agent does.
const TokenPeriod = "768h"

// ErrSetup is a problem that stops the whole run before it changes anything.
var ErrSetup = errors.New("provision cannot run")

// Options say what to reconcile and how.
type Options struct {
	Roster *Roster
	// DryRun reports what would change and changes nothing.
	DryRun bool
	// AdminToken may write policies and mint tokens. Without it the run only
	// reports (and says what it would need), like a dry run.
	AdminToken credentials.Secret
	// SystemConfig is the fleet config file ("" = config.SystemFile, which may
	// be absent); the Vault address and path and the token file's place come
	// from it, as they do for the agent.
	SystemConfig string
	// Getenv is os.Getenv in production; only VAULT_* and the Vault path
	// settings are taken from it, never per-user paths.
	Getenv func(string) string
	// StateDir is DefaultStateDir in production.
	StateDir  string
	Systemctl Systemctl
	// LookupAccount finds the OS user; os/user by default.
	LookupAccount func(name string) (Account, error)
	// LoginDefs is where UID_MIN comes from ("" = DefaultLoginDefs); accounts
	// below it are refused.
	LoginDefs string
	// Parallel is how many users are reconciled at once (default 4).
	Parallel int
	// FleetReaderToken is where to keep a fleet-reader token (an absolute
	// path, root's): provision writes the reader policy and keeps a live
	// token with only that policy in this file. "" = none; the policy is
	// then only brought up to date where it exists.
	FleetReaderToken string
	// Out gets one line per user that changed, would change, needs
	// something or failed: "user=<name> <STATUS> <message>", then one for
	// the fleet reader: "fleet-reader <STATUS> <message>" (when it changed).
	// Users found as they should be get none: the summary counts them.
	Out io.Writer
}

// Summary counts the run's outcomes.
type Summary struct {
	Users, Active, Parked, Off, Removed int
	Changed, Failed, NeedAdmin          int
	// Unchanged: users (and the fleet reader) the run found as they should
	// be, which get no line of their own.
	Unchanged int
	Mode      string // apply | dry-run | report-only
}

// Result is one user's line.
type Result struct {
	User    string
	Status  string // OK, SKIP, WARN, FAIL (the fleet's status words)
	Message string
	Changed bool
	// NeedAdmin: something needs an admin token (a token to mint, policy to write).
	NeedAdmin bool
	// Unchanged: nothing was, or would be, done; no line is printed for it
	// (the hourly run would otherwise say "unchanged" for every user every
	// hour): the summary counts it.
	Unchanged bool
}

// print writes r's line to w, unless nothing changed.
func (r *Result) print(w io.Writer, prefix string) {
	if !r.Unchanged {
		fmt.Fprintf(w, "%s%s %s\n", prefix, r.Status, r.Message)
	}
}

type provisioner struct {
	opt   Options
	apply bool
	admin *vault.Client // nil without an admin token
	base  *vault.Client // no token; cloned per user for lookup-self

	uidMin int // accounts below it are refused

	metrics atomic.Bool // some user's agent writes metrics: the publisher runs
}

// Run reconciles the roster. A setup problem (no Vault address, state dir
// unusable, another run holding the lock) is an error and nothing changes;
// per-user problems are FAIL lines in the output and counted in the summary.
func Run(ctx context.Context, opt Options) (Summary, error) {
	opt = withDefaults(opt)
	p := &provisioner{opt: opt, apply: !opt.DryRun && opt.AdminToken != "",
		uidMin: ReadUIDMin(firstNonEmpty(opt.LoginDefs, DefaultLoginDefs))}
	sum := Summary{Mode: p.mode()}
	vs, err := p.readVaultSettings()
	if err != nil {
		return sum, err
	}
	// The lock keeps the hourly run and an admin's run from interleaving; a
	// dry run changes nothing and needs none.
	if p.apply {
		l, err := lockRun(opt.StateDir)
		if err != nil {
			return sum, err
		}
		defer l.Unlock()
	}
	if err := p.connect(vs.addr); err != nil {
		return sum, err
	}
	prev, err := loadManaged(opt.StateDir)
	if err != nil {
		return sum, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	jobs, inRoster := plan(opt.Roster, prev, &sum)
	failedRemoved := p.reconcileAll(ctx, jobs, &sum)
	if p.metrics.Load() && (p.apply || opt.DryRun) {
		if msg, err := p.ensurePublisher(ctx); err != nil {
			fmt.Fprintf(opt.Out, "%s FAIL %v\n", metricsPublisherLine, err)
			sum.count(&Result{Status: "FAIL"})
		} else if msg != "" {
			fmt.Fprintf(opt.Out, "%s OK %s\n", metricsPublisherLine, msg)
		}
	}
	if opt.FleetReaderToken != "" {
		r := p.fleetReader(ctx, vs.mount, vs.base)
		r.print(opt.Out, ReaderLine+" ")
		sum.count(&r)
	} else if r, ok := p.readerPolicyOnly(ctx, vs); ok {
		r.print(opt.Out, ReaderLine+" ")
		sum.count(&r)
	}
	if p.apply {
		// Users whose removal failed stay remembered, so the next run retries.
		managed := append(slices.Collect(maps.Keys(inRoster)), failedRemoved...)
		if err := rememberManaged(opt.StateDir, prev, managed); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// withDefaults fills in what opt leaves unset.
func withDefaults(opt Options) Options {
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	if opt.StateDir == "" {
		opt.StateDir = DefaultStateDir
	}
	if opt.LookupAccount == nil {
		opt.LookupAccount = LookupAccount
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 4
	}
	if opt.Out == nil {
		opt.Out = io.Discard
	}
	return opt
}

// mode is the Summary's name for what this run may change.
func (p *provisioner) mode() string {
	switch {
	case p.opt.DryRun:
		return "dry-run"
	case !p.apply:
		return "report-only"
	}
	return "apply"
}

// vaultSettings say where Vault is and, for the fleet reader's policy, where
// the users' documents are (mount and base; "" without a fleet reader).
type vaultSettings struct {
	addr, mount, base string
	listable          bool // the path has {user} last: mount and base are set
}

// readVaultSettings takes them from the environment, else the fleet config
// file, as the agent does.
func (p *provisioner) readVaultSettings() (vaultSettings, error) {
	opt := p.opt
	var vs vaultSettings
	sysPath := firstNonEmpty(opt.SystemConfig, config.SystemFile)
	file, err := config.ReadFile(sysPath)
	if err != nil && !(errors.Is(err, os.ErrNotExist) && opt.SystemConfig == "") {
		return vs, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	setting := func(key string) string { return firstNonEmpty(opt.Getenv(key), file[key]) }
	vs.addr = setting("VAULT_ADDR")
	if vs.addr == "" {
		return vs, fmt.Errorf("%w: VAULT_ADDR is not set (environment or %s); provisioning is for Vault", ErrSetup, sysPath)
	}
	vs.mount, vs.base, err = fleet.SplitPath(setting("CLAUDE_AUTH_VAULT_PATH"), setting("CLAUDE_AUTH_VAULT_MOUNT"))
	vs.listable = err == nil
	if opt.FleetReaderToken != "" {
		if err != nil {
			return vs, fmt.Errorf("%w: --fleet-reader-token: %v", ErrSetup, err)
		}
		if !filepath.IsAbs(opt.FleetReaderToken) {
			return vs, fmt.Errorf("%w: --fleet-reader-token %s: want an absolute path", ErrSetup, opt.FleetReaderToken)
		}
	}
	return vs, nil
}

// lockRun makes the state dir and takes the run's lock in it.
func lockRun(stateDir string) (*lock.Flock, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: state dir: %v", ErrSetup, err)
	}
	l, err := lock.Try(stateDir, "provision.lock")
	if err != nil {
		return nil, fmt.Errorf("%w: another run? %w", ErrSetup, err)
	}
	return l, nil
}

// connect makes the Vault clients: base with no token, admin with the admin
// token (nil without one).
func (p *provisioner) connect(addr string) error {
	// Loading one user's config first puts the file's VAULT_CACERT & co. into
	// the environment the Vault client reads.
	if users := p.opt.Roster.Users; len(users) > 0 {
		if _, err := p.userConfig(Account{Name: users[0].Name, Home: "/nonexistent"}); err != nil {
			return fmt.Errorf("%w: %v", ErrSetup, err)
		}
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return fmt.Errorf("%w: vault client config: %v", ErrSetup, vc.Error)
	}
	vc.Address = addr
	vc.MaxRetries = 0
	vc.Timeout = 30 * time.Second
	var err error
	if p.base, err = vault.NewClient(vc); err != nil {
		return fmt.Errorf("%w: vault client: %v", ErrSetup, err)
	}
	p.base.ClearToken() // VAULT_TOKEN only as the admin token, explicitly
	if p.opt.AdminToken != "" {
		if p.admin, err = p.base.Clone(); err != nil {
			return fmt.Errorf("%w: vault client: %v", ErrSetup, err)
		}
		p.admin.SetToken(p.opt.AdminToken.Reveal())
	}
	return nil
}

// userJob is one user to reconcile: on the roster, or removed from it since
// the last applied run.
type userJob struct {
	entry   Entry
	removed bool
}

// plan lists the roster's users in its order, then the users of prev (the
// last applied run's) it no longer lists, and counts them in sum. inRoster
// holds the roster's names.
func plan(roster *Roster, prev []string, sum *Summary) (jobs []userJob, inRoster map[string]bool) {
	inRoster = map[string]bool{}
	for _, e := range roster.Users {
		inRoster[e.Name] = true
		jobs = append(jobs, userJob{entry: e})
		sum.Users++
		switch {
		case e.Active():
			sum.Active++
		case !e.ClaudeAuth:
			sum.Off++
		default:
			sum.Parked++
		}
	}
	for _, name := range prev {
		if !inRoster[name] && ValidUserName(name) {
			jobs = append(jobs, userJob{entry: Entry{Name: name}, removed: true})
			sum.Removed++
		}
	}
	return jobs, inRoster
}

// reconcileAll reconciles the jobs in parallel and prints their lines in the
// jobs' order as results come in, counting them in sum. It returns the
// removed users whose job failed.
func (p *provisioner) reconcileAll(ctx context.Context, jobs []userJob, sum *Summary) []string {
	type finished struct {
		i int
		r Result
	}
	results := make([]*Result, len(jobs))
	done := make(chan finished)
	sem := make(chan struct{}, p.opt.Parallel)
	for i, j := range jobs {
		go func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			done <- finished{i, p.reconcile(ctx, j)}
		}()
	}
	next := 0
	failedRemoved := []string{}
	for range jobs {
		f := <-done
		results[f.i] = &f.r
		for next < len(jobs) && results[next] != nil {
			r := results[next]
			r.print(p.opt.Out, "user="+r.User+" ")
			sum.count(r)
			if r.Status == "FAIL" && jobs[next].removed {
				failedRemoved = append(failedRemoved, r.User)
			}
			next++
		}
	}
	return failedRemoved
}

// reconcile brings one user to what the roster says.
func (p *provisioner) reconcile(ctx context.Context, j userJob) Result {
	switch {
	case j.removed:
		return p.removed(ctx, j.entry.Name)
	case j.entry.Active():
		return p.active(ctx, j.entry)
	}
	return p.inactive(ctx, j.entry)
}

// count adds r's outcome to the summary.
func (s *Summary) count(r *Result) {
	if r.Changed {
		s.Changed++
	}
	if r.Status == "FAIL" {
		s.Failed++
	}
	if r.NeedAdmin {
		s.NeedAdmin++
	}
	if r.Unchanged {
		s.Unchanged++
	}
}

// rememberManaged saves managed, the users this run manages, when they are
// not prev, the last applied run's.
func rememberManaged(dir string, prev, managed []string) error {
	sort.Strings(managed)
	if slices.Equal(managed, prev) {
		return nil
	}
	if err := saveManaged(dir, managed); err != nil {
		return fmt.Errorf("save %s: %w", managedPath(dir), err)
	}
	return nil
}

// LookupAccount finds name in the OS user databases through NSS
// (config.LookupNSS: LDAP/SSSD accounts too), else, where getent cannot run,
// Go's reader of /etc/passwd.
func LookupAccount(name string) (Account, error) {
	a, err := config.LookupNSS(name)
	if err == nil {
		return Account{Name: a.Name, UID: a.UID, GID: a.GID, Home: a.Home}, nil
	}
	var ee *exec.Error
	if !errors.As(err, &ee) {
		return Account{}, err
	}
	u, err := user.Lookup(name)
	if err != nil {
		return Account{}, err
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return Account{}, fmt.Errorf("user %s: non-numeric uid/gid %s/%s", name, u.Uid, u.Gid)
	}
	return Account{Name: u.Username, UID: uid, GID: gid, Home: u.HomeDir}, nil
}

// userConfig is the config the user's agent will see: the fleet file and the
// Vault settings of our environment, with the user's own home and nothing else
// of root's environment (root's XDG dirs are not the user's).
func (p *provisioner) userConfig(acct Account) (*config.Config, error) {
	pass := map[string]bool{
		"VAULT_ADDR": true, "VAULT_CACERT": true, "VAULT_CAPATH": true, "VAULT_NAMESPACE": true,
		"VAULT_TLS_SERVER_NAME": true, "VAULT_CLIENT_TIMEOUT": true,
		"CLAUDE_AUTH_VAULT_PATH": true, "CLAUDE_AUTH_VAULT_MOUNT": true,
	}
	getenv := func(k string) string {
		switch k {
		case "HOME":
			return acct.Home
		case "CLAUDE_AUTH_USER":
			return acct.Name
		case "CLAUDE_AUTH_JOURNAL_SOCKET":
			return "off"
		case "CLAUDE_AUTH_STORE":
			return "vault"
		}
		if pass[k] {
			return p.opt.Getenv(k)
		}
		return ""
	}
	return config.Load(getenv, config.Flags{SystemConfig: p.opt.SystemConfig, User: acct.Name,
		Account: &config.Account{Name: acct.Name, UID: acct.UID, GID: acct.GID, Home: acct.Home, Groups: []int{acct.GID}}})
}

// line builds a Result from the notes gathered for a user.
type line struct {
	user    string
	warn    bool     // something to act on even when all went well
	changes []string // done (or, not applying, would be done)
	needs   []string // need an admin token
}

func (l *line) did(format string, args ...any) {
	l.changes = append(l.changes, fmt.Sprintf(format, args...))
}

func (p *provisioner) verb(done, would string) string {
	if p.apply {
		return done
	}
	return "would " + would
}

func (p *provisioner) fail(name string, err error) Result {
	return Result{User: name, Status: "FAIL", Message: err.Error()}
}

// active reconciles a user who should be logged in and backed up.
func (p *provisioner) active(ctx context.Context, e Entry) Result {
	u, err := p.findActive(e.Name)
	if err != nil {
		return p.fail(e.Name, err)
	}
	if err := u.readTree(); err != nil {
		return p.fail(e.Name, err)
	}

	// The policy: exactly the spec's capabilities on this user's path.
	policy := store.PolicyFor(e.Name)
	if err := p.ensurePolicy(ctx, u.l, policy, store.PolicyHCL(u.cfg.VaultMount, u.cfg.VaultPath)); err != nil {
		return p.fail(e.Name, err)
	}

	// The token: keep a live one of this user's, mint when there is none.
	minted, exposed, err := p.ensureToken(ctx, u.l, &u.st,
		func(tok credentials.Secret) (string, error) {
			why, err := p.checkToken(ctx, tok, e.Name)
			if why == "" && err == nil && p.admin == nil {
				p.reportStalePolicy(ctx, u.l, tok, policy, store.StalePolicyProbe(u.cfg.VaultMount, u.cfg.VaultPath))
			}
			return why, err
		},
		func() (*vault.SecretAuth, error) { return p.mint(ctx, e.Name, policy) },
		fmt.Sprintf("periodic %s, orphan, policy %s", TokenPeriod, policy))
	if err != nil {
		return p.fail(e.Name, err)
	}
	if err := u.placeFiles(ctx, minted, exposed); err != nil {
		return p.fail(e.Name, err)
	}
	if err := u.metricsDirs(); err != nil {
		return p.fail(e.Name, err)
	}
	if err := u.startUnit(ctx); err != nil {
		return p.fail(e.Name, err)
	}
	return p.result(u.l)
}

// activeUser is what the steps of reconciling an active user share.
type activeUser struct {
	p    *provisioner
	name string
	acct Account
	cfg  *config.Config // as the user's agent will see it
	tree *userTree      // the token file and the dirs above it
	st   treeStatus     // what readTree found there
	l    *line
}

// findActive looks the user up and refuses a name or account not to touch.
func (p *provisioner) findActive(name string) (*activeUser, error) {
	if err := refuseName(name); err != nil {
		return nil, err
	}
	acct, err := p.opt.LookupAccount(name)
	if err != nil {
		return nil, fmt.Errorf("no such OS user: %v", err)
	}
	if err := refuseAccount(acct, p.uidMin); err != nil {
		return nil, err
	}
	cfg, err := p.userConfig(acct)
	if err != nil {
		return nil, err
	}
	tree, err := newUserTree(acct, cfg.VaultTokenFile)
	if err != nil {
		return nil, err
	}
	return &activeUser{p: p, name: name, acct: acct, cfg: cfg, tree: tree, l: &line{user: name}}, nil
}

// readTree reads what is there now, without following anything.
func (u *activeUser) readTree() error {
	fd, err := u.tree.walk(false, &u.st)
	if err != nil || fd < 0 {
		return err
	}
	err = u.tree.readToken(fd, &u.st)
	unix.Close(fd)
	return err
}

// placeFiles makes the files right: dirs 0700, token 0600, all the user's;
// only by descriptor. It installs minted, if any, and then revokes exposed.
// An exposed token with nothing to replace it (no admin token) keeps its
// mode: a chmod would let the agent go on with a token others may hold,
// while the agent's FAIL, the fleet and this run's WARN say to rotate it.
func (u *activeUser) placeFiles(ctx context.Context, minted *vault.SecretAuth, exposed credentials.Secret) error {
	p, st, tree := u.p, &u.st, u.tree
	for _, d := range st.missing {
		u.l.did("%s %s (0700)", p.verb("created", "create"), d)
	}
	if len(st.missing) == 0 && st.dirMode != 0o700 {
		u.l.did("%s mode %04o of %s to 0700", p.verb("changed", "change"), st.dirMode, tree.path(len(tree.dirs)))
	}
	fixMode := st.tokenFixMode && (minted != nil || !st.exposed())
	if minted == nil && fixMode {
		u.l.did("%s mode %04o of %s to 0600", p.verb("changed", "change"), st.tokenMode, tree.tokenPath())
	}
	if p.apply && (minted != nil || len(st.missing) > 0 || st.dirMode != 0o700 || fixMode) {
		return p.installToken(ctx, u.l, tree, minted, exposed, fixMode)
	}
	return nil
}

// metricsDirs gives the user a metrics directory of their own (see
// ensureMetricsDirs) when a metrics dir is configured.
func (u *activeUser) metricsDirs() error {
	if u.cfg.MetricsDir == "" {
		return nil
	}
	u.p.metrics.Store(true)
	did, err := ensureMetricsDirs(u.cfg.MetricsDir, u.acct, u.p.apply)
	for _, d := range did {
		if strings.Contains(d, " in place of ") {
			u.l.warn = true
		}
		u.l.did("%s", d)
	}
	return err
}

// startUnit gets the agent and the six-hourly timer enabled and running.
// Without a usable token they would only FAIL, so it waits for the run that
// installs one.
func (u *activeUser) startUnit(ctx context.Context) error {
	p := u.p
	units := UnitsFor(u.name)
	unit := strings.Join(units, " and ")
	all, _, err := p.opt.Systemctl.States(ctx, units)
	if err != nil {
		return err
	}
	if !all {
		if p.apply {
			if err := p.opt.Systemctl.Enable(ctx, units...); err != nil {
				return err
			}
		}
		u.l.did("%s %s", p.verb("enabled and started", "enable and start"), unit)
	}
	return nil
}

// installToken puts a minted token (or the fixed mode) in place, revoking
// the minted token if that fails and the exposed one once it worked.
func (p *provisioner) installToken(ctx context.Context, l *line, tree *userTree, minted *vault.SecretAuth, exposed credentials.Secret, fixMode bool) error {
	if err := p.install(tree, minted, fixMode); err != nil {
		if minted != nil {
			p.revoke(ctx, minted.Accessor)
			err = fmt.Errorf("%v (the new token was revoked)", err)
		}
		return err
	}
	if minted == nil {
		return nil
	}
	l.did("installed %s (0600)", tree.tokenPath())
	if exposed != "" {
		if err := p.revokeToken(ctx, exposed); err != nil {
			l.did("could not revoke the exposed token: %v (revoke it by hand)", err)
		} else {
			l.did("revoked the exposed token")
		}
	}
	return nil
}

func (p *provisioner) result(l *line) Result {
	r := Result{User: l.user, Status: "OK"}
	if len(l.needs) > 0 {
		r.Status, r.NeedAdmin = "WARN", true
		msg := "needs an admin token (VAULT_TOKEN or --admin-token-file) for " + strings.Join(l.needs, ", ")
		if len(l.changes) > 0 {
			msg += "; then would also: " + strings.Join(stripWould(l.changes), ", ")
		}
		r.Message = msg
		return r
	}
	if len(l.changes) == 0 {
		r.Message, r.Unchanged = "unchanged", true
		return r
	}
	if l.warn {
		r.Status = "WARN"
	}
	r.Changed = p.apply
	r.Message = strings.Join(l.changes, ", ")
	if !p.apply && p.opt.AdminToken == "" {
		r.Message = "report only (no admin token): " + r.Message
	} else if !p.apply {
		r.Message = "dry run: " + r.Message
	}
	return r
}

func stripWould(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.TrimPrefix(v, "would ")
	}
	return out
}

// install creates what is missing and writes the token, all by descriptor.
func (p *provisioner) install(tree *userTree, minted *vault.SecretAuth, fixMode bool) error {
	var st treeStatus
	fd, err := tree.walk(true, &st)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if minted != nil {
		return tree.writeToken(fd, credentials.Secret(minted.ClientToken))
	}
	if fixMode {
		return tree.fixTokenMode(fd)
	}
	return nil
}

// inactive handles claude_auth: false and parked: the unit goes off, the token
// file and the Vault document stay.
func (p *provisioner) inactive(ctx context.Context, e Entry) Result {
	why := "parked"
	if !e.ClaudeAuth {
		why = "claude_auth is false"
	}
	// Not even a unit is touched for a system account; a user gone from the
	// OS still gets its unit stopped.
	if err := refuseName(e.Name); err != nil {
		return p.fail(e.Name, err)
	}
	if acct, err := p.opt.LookupAccount(e.Name); err == nil {
		if err := refuseAccount(acct, p.uidMin); err != nil {
			return p.fail(e.Name, err)
		}
	}
	return p.disable(ctx, e.Name, why, "token file and Vault data kept")
}

// removed handles a user the last applied run managed who is no longer listed.
func (p *provisioner) removed(ctx context.Context, name string) Result {
	return p.disable(ctx, name, "removed from the roster", "Vault data kept")
}

func (p *provisioner) disable(ctx context.Context, name, why, kept string) Result {
	units := UnitsFor(name)
	unit := strings.Join(units, " and ")
	_, any, err := p.opt.Systemctl.States(ctx, units)
	if err != nil {
		return p.fail(name, err)
	}
	if !any {
		return Result{User: name, Status: "SKIP", Message: why + ": " + unit + " are off", Unchanged: true}
	}
	if p.apply {
		if err := p.opt.Systemctl.Disable(ctx, units...); err != nil {
			return p.fail(name, err)
		}
	}
	r := Result{User: name, Status: "SKIP", Changed: p.apply,
		Message: fmt.Sprintf("%s: %s %s (%s)", why, p.verb("stopped and disabled", "stop and disable"), unit, kept)}
	if !p.apply && p.opt.AdminToken == "" && !p.opt.DryRun {
		r.Message = "report only (no admin token): " + r.Message
	}
	return r
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// The managed-users file: the roster's users at the last applied run, so the
// next run knows whom the roster dropped.
type managedFile struct {
	Users []string `json:"users"`
}

func managedPath(dir string) string { return filepath.Join(dir, "provisioned-users.json") }

func loadManaged(dir string) ([]string, error) {
	data, err := os.ReadFile(managedPath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m managedFile
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %v", managedPath(dir), err)
	}
	sort.Strings(m.Users)
	return m.Users, nil
}

func saveManaged(dir string, users []string) error {
	data, err := json.MarshalIndent(managedFile{Users: users}, "", "  ")
	if err != nil {
		return err
	}
	_, err = atomicfile.Write(managedPath(dir), append(data, '\n'), 0o644)
	return err
}
