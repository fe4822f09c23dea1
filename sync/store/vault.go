package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
)

// VaultConfig says where the user's document lives and how to reach it.
type VaultConfig struct {
	Address   string        // VAULT_ADDR
	Mount     string        // KV v2 mount, "secret"
	Path      string        // path inside the mount, "workstation/claude-users/<user>"
	TokenFile string        // the scoped token file
	User      string        // OS user the token must belong to
	Timeout   time.Duration // per request
	// HostID names this workstation: a user on several hosts has one login
	// per host, and each host's is kept only in that host's document. ""
	// keeps the single-host layout (one document, no placement).
	HostID string
	// Knows says whether a login in the main document is this host's own
	// (its lineage saw it): an unclaimed main document holding a login this
	// host never had is another host's.
	Knows func(*credentials.OAuth) bool
}

// Vault is the KV v2 store.
type Vault struct {
	cfg    VaultConfig
	client *vault.Client

	mu     sync.Mutex
	placed bool // the document this host uses is known
	onHost bool // it is hosts/<id>, not the main document
	owner  string
	// claimTried: this placement already tried to record its ownership.
	claimTried bool
	last       *Doc // the document this process wrote last
	// accepted: the last Prepare accepted the token (drift check, renew).
	accepted bool
	// reportOnly: the last Prepare refused the token as exposed, but it is
	// this user's (drift check): it may still write this host's health.
	reportOnly bool
	// wroteMain is the version of the main document this process wrote
	// last: its login is this host's, whatever the disk (lineage, a file
	// since logged out) says yet.
	wroteMain int
	// adopted is the version of an unowned main document placement took as
	// this host's.
	adopted int
}

// TokenInfo is what lookup-self says about the token (no secret inside).
type TokenInfo struct {
	DisplayName string
	Policies    []string
	TTL         time.Duration
	Period      time.Duration
	Orphan      bool
	Renewable   bool
}

// NewVault builds the client from the standard VAULT_* environment (CA, TLS,
// namespace …) with the address and token we were given. The client's own retries
// are off: the engine is the one place that retries.
func NewVault(cfg VaultConfig) (*Vault, error) {
	// Every path this store asks for is built from these: each name must
	// be one safe segment before any request goes out (a client only for
	// other paths, fleet's, has neither).
	if cfg.Mount != "" || cfg.Path != "" {
		if err := CheckPath("the Vault mount", cfg.Mount); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
		if err := CheckPath("the Vault path", cfg.Path); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
	}
	if cfg.HostID != "" {
		if err := CheckSegment("host id (CLAUDE_AUTH_HOST_ID)", cfg.HostID); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMisconfigured, err)
		}
	}
	vc := vault.DefaultConfig()
	if vc.Error != nil {
		return nil, fmt.Errorf("%w: vault client settings (VAULT_CACERT, VAULT_CLIENT_CERT …): %s", ErrMisconfigured, flatten(vc.Error.Error()))
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if u, err := url.Parse(vc.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: VAULT_ADDR=%q is not an address: want https://host:8200", ErrMisconfigured, vc.Address)
	}
	vc.MaxRetries = 0
	if cfg.Timeout > 0 {
		vc.Timeout = cfg.Timeout
	}
	c, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.ClearToken() // never VAULT_TOKEN from the environment: only the scoped file
	return &Vault{cfg: cfg, client: c}, nil
}

func (v *Vault) Describe() string {
	return fmt.Sprintf("vault %s %s/%s", v.client.Address(), v.cfg.Mount, v.docPath())
}

// LoadToken reads and checks the token file and uses the token for requests.
func (v *Vault) LoadToken() error {
	tok, err := ReadTokenFile(v.cfg.TokenFile)
	if err != nil {
		return err
	}
	v.client.SetToken(tok.Reveal())
	return nil
}

// ReadTokenFile reads the scoped token: the file must exist, belong to us, be
// non-empty and be readable by its owner only.
func ReadTokenFile(path string) (credentials.Secret, error) {
	tok, err := readTokenFile(path)
	if err != nil {
		return "", err
	}
	return tok, nil
}

// readTokenFile is ReadTokenFile that also returns the token beside
// ErrTokenExposed when the file is otherwise the user's own.
func readTokenFile(path string) (credentials.Secret, error) {
	hint := "ask your workstation admin to run `claude-auth-sync provision`, or write your scoped token to " + path + " with mode 0600"
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist; %s", ErrTokenFile, path, hint)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrTokenFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrTokenFile, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrTokenFile, path)
	}
	// A mode open to others is said after the checks below: the token is
	// returned with it only when the file is otherwise the user's own.
	var exposed error
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		// The words that matter first: the fleet's reason keeps 160 bytes.
		exposed = fmt.Errorf("%w: %w (mode %04o), consider the token exposed: %s; ask your workstation admin to run `claude-auth-sync provision`, which installs a new token and revokes this one (a chmod does not make it private again)", ErrTokenFile, ErrTokenExposed, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		if exposed != nil {
			return "", exposed
		}
		return "", fmt.Errorf("%w: %s is owned by uid %d, not by you (uid %d)", ErrTokenFile, path, st.Uid, os.Geteuid())
	}
	buf := make([]byte, 4097)
	n, _ := f.Read(buf)
	if n > 4096 {
		return "", fmt.Errorf("%w: %s is too large to be a Vault token", ErrTokenFile, path)
	}
	tok := strings.TrimSpace(string(buf[:n]))
	if tok == "" {
		return "", fmt.Errorf("%w: %s is empty; %s", ErrTokenFile, path, hint)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%w: %s holds more than one line; it must hold only the token", ErrTokenFile, path)
	}
	if exposed != nil {
		if lfi, err := os.Lstat(path); err != nil || !lfi.Mode().IsRegular() {
			return "", exposed // through a link: nothing to report with
		}
		return credentials.Secret(tok), exposed
	}
	return credentials.Secret(tok), nil
}

// PolicyFor is the per-user policy name the fleet uses.
func PolicyFor(user string) string { return "workstation-claude-" + user }

// DisplayNameFor is the display name provisioning gives the token.
func DisplayNameFor(user string) string { return "devvm-claude-auth-" + user }

var unsafeDisplay = regexp.MustCompile(`[^A-Za-z0-9-]`)

// SanitizedDisplayName is the display name as Vault reports it back: "token-"
// plus the name with every character outside [A-Za-z0-9-] replaced by "-".
func SanitizedDisplayName(name string) string {
	return "token-" + unsafeDisplay.ReplaceAllString(name, "-")
}

// CheckDrift refuses a token that is not this user's: it must carry the user's
// policy, no other user's, and the expected display name.
func CheckDrift(info TokenInfo, user string) error {
	want := PolicyFor(user)
	if !slices.Contains(info.Policies, want) {
		return fmt.Errorf("%w: it lacks policy %s (it has %s); the token file holds someone else's or an admin token: ask your admin to re-provision it", ErrForeignToken, want, strings.Join(info.Policies, ","))
	}
	for _, p := range info.Policies {
		if strings.HasPrefix(p, "workstation-claude-") && p != want {
			return fmt.Errorf("%w: it also carries %s, another user's policy", ErrForeignToken, p)
		}
		if p == "root" {
			return fmt.Errorf("%w: it is a root token; use your scoped token", ErrForeignToken)
		}
	}
	if wantName := SanitizedDisplayName(DisplayNameFor(user)); info.DisplayName != wantName {
		return fmt.Errorf("%w: its display name is %q, want %q", ErrForeignToken, info.DisplayName, wantName)
	}
	return nil
}

// LookupSelf asks Vault about the token.
func (v *Vault) LookupSelf(ctx context.Context) (TokenInfo, error) {
	s, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return TokenInfo{}, v.classify("look up the vault token", err)
	}
	if s == nil || s.Data == nil {
		return TokenInfo{}, fmt.Errorf("%w: empty lookup-self answer", ErrUnreachable)
	}
	info := TokenInfo{}
	info.DisplayName, _ = s.Data["display_name"].(string)
	if ps, ok := s.Data["policies"].([]any); ok {
		for _, p := range ps {
			if s, ok := p.(string); ok {
				info.Policies = append(info.Policies, s)
			}
		}
	}
	info.TTL = seconds(s.Data["ttl"])
	info.Period = seconds(s.Data["period"])
	info.Orphan, _ = s.Data["orphan"].(bool)
	info.Renewable, _ = s.Data["renewable"].(bool)
	return info, nil
}

func seconds(v any) time.Duration {
	switch n := v.(type) {
	case json.Number:
		i, _ := n.Int64()
		return time.Duration(i) * time.Second
	case float64:
		return time.Duration(n) * time.Second
	case int:
		return time.Duration(n) * time.Second
	}
	return 0
}

// RenewSelf renews the token (periodic tokens go back to their full period) and
// returns the new TTL.
func (v *Vault) RenewSelf(ctx context.Context) (time.Duration, error) {
	s, err := v.client.Auth().Token().RenewSelfWithContext(ctx, 0)
	if err != nil {
		return 0, v.classify("renew the vault token", err)
	}
	if s != nil && s.Auth != nil {
		return time.Duration(s.Auth.LeaseDuration) * time.Second, nil
	}
	return 0, nil
}

// Prepare runs the per-pass token routine: load the file, drift check, renew.
func (v *Vault) Prepare(ctx context.Context) (TokenInfo, error) {
	info, err := v.prepare(ctx)
	if err != nil && !errors.Is(err, ErrUnreachable) {
		v.setAccepted(false)
	}
	return info, err
}

func (v *Vault) prepare(ctx context.Context) (TokenInfo, error) {
	v.setReportOnly(false)
	if tok, err := readTokenFile(v.cfg.TokenFile); errors.Is(err, ErrTokenExposed) && tok != "" {
		// Refused for all work. But the fleet must see why this host
		// stopped backing up, and only this user's token can tell it: one
		// that passes the drift check may still write this host's health
		// (MayReport), which reveals nothing its holders could not write.
		v.client.SetToken(tok.Reveal())
		if info, lerr := v.LookupSelf(ctx); lerr == nil && CheckDrift(info, v.cfg.User) == nil {
			v.setReportOnly(true)
		}
		return TokenInfo{}, err
	}
	if err := v.LoadToken(); err != nil {
		return TokenInfo{}, err
	}
	info, err := v.LookupSelf(ctx)
	if err != nil {
		return TokenInfo{}, err
	}
	if err := CheckDrift(info, v.cfg.User); err != nil {
		return info, err
	}
	ttl, err := v.RenewSelf(ctx)
	if err != nil {
		return info, err
	}
	if ttl > 0 {
		info.TTL = ttl
	}
	v.unplace() // a new look at which document is this host's
	v.setAccepted(true)
	return info, nil
}

func (v *Vault) setAccepted(ok bool) {
	v.mu.Lock()
	v.accepted = ok
	v.mu.Unlock()
}

func (v *Vault) setReportOnly(ok bool) {
	v.mu.Lock()
	v.reportOnly = ok
	v.mu.Unlock()
}

// MayReport says whether this host's health may be written: the last
// Prepare accepted the token, or refused it only as exposed (its file's
// mode), when it is still this user's own. Nothing else uses such a token.
func (v *Vault) MayReport() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.accepted || v.reportOnly
}

// Accepted says whether the last Prepare accepted the token: only then is
// it used for anything beyond the document's own reads and writes (this
// host's health), never a token that failed the drift check or none.
func (v *Vault) Accepted() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.accepted
}

// docPath is the document this host's login lives in: the main one, or
// hosts/<host id> beside it when another host owns the main one.
func (v *Vault) docPath() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.onHost {
		return v.hostPath()
	}
	return v.cfg.Path
}

func (v *Vault) hostPath() string { return v.cfg.Path + "/hosts/" + v.cfg.HostID }

// Read returns the latest version of this host's document. A deleted or
// destroyed latest version reads as absent, with Version set to the
// metadata's current_version. On a host document the setup token (one per
// user) is the main document's.
func (v *Vault) Read(ctx context.Context) (*Doc, error) {
	if err := v.place(ctx); err != nil {
		return nil, err
	}
	path := v.docPath()
	doc, err := v.read(ctx, path)
	if err != nil {
		return nil, err
	}
	var main *Doc
	if path == v.cfg.Path {
		if !v.othersLogin(doc) {
			return doc, nil
		}
		// Another host's login came into the unowned main document since
		// this host placed itself there (both found it empty): it is that
		// host's now, and this host's login goes to its own document.
		v.mu.Lock()
		v.onHost, v.last = true, nil
		v.mu.Unlock()
		main = doc
		if doc, err = v.read(ctx, v.hostPath()); err != nil {
			return nil, err
		}
	} else if main, err = v.read(ctx, v.cfg.Path); err != nil {
		return nil, err
	}
	doc.setup = map[string]any{}
	for _, k := range []string{FieldSetupToken, FieldSetupTokenExpiresAt} {
		if x, ok := main.fields[k]; ok {
			doc.setup[k] = x
		}
	}
	return doc, nil
}

// read reads one document (path inside the mount).
func (v *Vault) read(ctx context.Context, path string) (*Doc, error) {
	doc, err := v.readData(ctx, path)
	if err != nil || doc != nil {
		return doc, err
	}
	// No live latest version: the cas for a write is the metadata's
	// current_version (a deleted version still counts); 0 only with no metadata.
	m, err := v.client.Logical().ReadWithContext(ctx, v.cfg.Mount+"/metadata/"+path)
	if err != nil {
		return nil, v.classify("read metadata of "+v.cfg.Mount+"/"+path, err)
	}
	doc = &Doc{fields: map[string]any{}, path: path}
	if m != nil && m.Data != nil {
		doc.Version = int(seconds(m.Data["current_version"]) / time.Second)
	}
	if doc.Version > 0 {
		// A version written between the two reads (another host's first
		// backup) would pass for a deleted one, and our write with its
		// version as the cas would replace it unseen: look again.
		if again, err := v.readData(ctx, path); err != nil || again != nil {
			return again, err
		}
	}
	return doc, nil
}

// readData reads the document's live latest version (nil when there is none).
func (v *Vault) readData(ctx context.Context, path string) (*Doc, error) {
	s, err := v.client.Logical().ReadWithContext(ctx, v.cfg.Mount+"/data/"+path)
	if err != nil {
		return nil, v.classify("read "+v.cfg.Mount+"/"+path, err)
	}
	if s != nil && s.Data != nil {
		if data, ok := s.Data["data"].(map[string]any); ok && data != nil {
			ver := 0
			if md, ok := s.Data["metadata"].(map[string]any); ok {
				ver = int(seconds(md["version"]) / time.Second)
			}
			return &Doc{Exists: true, Version: ver, fields: data, path: path}, nil
		}
	}
	return nil, nil
}

// Update is `vault kv patch -method=rw`: read, merge at top level, write with
// cas = the version read; on a cas conflict, read and merge again.
func (v *Vault) Update(ctx context.Context, fn func(cur *Doc) (map[string]any, error)) (*Doc, error) {
	// The document this process wrote last stands for a read: the
	// check-and-set on its version fails if anyone wrote since, and then
	// it is read. A decision not to write is only taken on a fresh read.
	cur, cached := v.lastWritten(), true
	for attempt := 0; ; {
		if cur == nil {
			var err error
			if cur, err = v.Read(ctx); err != nil {
				return nil, err
			}
			cached = false
		}
		set, err := fn(cur)
		if err != nil {
			if cached && errors.Is(err, ErrSkip) {
				cur = nil
				continue
			}
			return cur, err
		}
		merged := cur.merged(set)
		path := cur.path
		s, err := v.client.Logical().WriteWithContext(ctx, v.cfg.Mount+"/data/"+path, map[string]any{
			"options": map[string]any{"cas": cur.Version},
			"data":    merged,
		})
		if err != nil {
			err = v.classify("write "+v.cfg.Mount+"/"+path, err)
			v.remember(nil)
			if errors.Is(err, ErrConflict) && cached {
				cur = nil // our copy was old: read, and try again
				continue
			}
			if attempt++; errors.Is(err, ErrConflict) && attempt < maxConflicts {
				// Someone wrote first: if it was another host taking an
				// unclaimed main document, this host moves to its own.
				v.unplace()
				cur = nil
				continue
			}
			return cur, err
		}
		ver := cur.Version + 1
		if s != nil && s.Data != nil {
			if n := int(seconds(s.Data["version"]) / time.Second); n > 0 {
				ver = n
			}
		}
		if path == v.cfg.Path {
			v.mu.Lock()
			v.wroteMain = ver
			v.mu.Unlock()
		}
		v.claim(ctx, path)
		done := &Doc{Exists: true, Version: ver, fields: merged, setup: cur.setup, path: path}
		v.remember(done)
		return done, nil
	}
}

// othersLogin says whether main, the main document as read, holds another
// host's login: a usable one (an unreadable login is nobody's), in a
// document this host does not own, did not write this version of, and
// whose login it does not know.
func (v *Vault) othersLogin(main *Doc) bool {
	v.mu.Lock()
	mine := v.cfg.HostID == "" || v.owner == v.cfg.HostID || (v.wroteMain > 0 && v.wroteMain == main.Version) ||
		(v.adopted > 0 && v.adopted == main.Version)
	v.mu.Unlock()
	if mine {
		return false
	}
	o, err := main.OAuth()
	return err == nil && o != nil && o.Usable() == nil && (v.cfg.Knows == nil || !v.cfg.Knows(o))
}

// lastWritten is the document this process wrote last, while this host
// still uses that document (nil otherwise).
func (v *Vault) lastWritten() *Doc {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.last == nil || (v.cfg.HostID != "" && !v.placed) {
		return nil
	}
	if want := map[bool]string{true: v.hostPath(), false: v.cfg.Path}[v.onHost]; v.last.path != want {
		return nil
	}
	return v.last
}

func (v *Vault) remember(d *Doc) {
	v.mu.Lock()
	v.last = d
	v.mu.Unlock()
}

// MetaOwnerKey is the main document's custom_metadata key naming the host
// whose login it holds.
const MetaOwnerKey = "owner_host"

// place decides, once (again after unplace), which document is this
// host's: the main one when this host owns it, or when nobody does and it
// holds no login or one this host knows; else hosts/<id>.
func (v *Vault) place(ctx context.Context) error {
	v.mu.Lock()
	done := v.placed || v.cfg.HostID == ""
	v.mu.Unlock()
	if done {
		return nil
	}
	owner, err := v.Owner(ctx)
	if err != nil {
		return err
	}
	onHost := owner != "" && owner != v.cfg.HostID
	if owner == "" {
		main, err := v.read(ctx, v.cfg.Path)
		if err != nil {
			return err
		}
		if v.othersLogin(main) {
			onHost = true // another host's login, from before it said so
		} else if main.Exists {
			// This host's (it knows the login, or has no history yet and
			// takes over from the reference tool): that version stays
			// this host's while the process learns newer logins.
			v.mu.Lock()
			v.adopted = main.Version
			v.mu.Unlock()
		}
	}
	v.mu.Lock()
	v.placed, v.onHost, v.owner = true, onHost, owner
	v.mu.Unlock()
	return nil
}

// Place decides which document is this host's, if that is not decided
// since the last Prepare (health names it before the first backup does).
func (v *Vault) Place(ctx context.Context) error { return v.place(ctx) }

// claim records this host as the main document's owner after its first
// write there (best effort: a policy from before hosts cannot, and the
// lineage rule in place keeps hosts apart without it).
func (v *Vault) claim(ctx context.Context, wrote string) {
	v.mu.Lock()
	need := v.cfg.HostID != "" && wrote == v.cfg.Path && v.owner == "" && !v.claimTried
	v.claimTried = true
	v.mu.Unlock()
	if need {
		_ = v.PatchMetadata(ctx, map[string]any{MetaOwnerKey: v.cfg.HostID})
	}
}

// unplace has the next call decide the document again.
func (v *Vault) unplace() {
	v.mu.Lock()
	v.placed, v.claimTried, v.last = false, false, nil
	v.mu.Unlock()
}

// Placed says whether this host's document is decided (Placement is then
// its answer), without asking Vault.
func (v *Vault) Placed() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.placed
}

// Placement says which document this host uses ("main" or "hosts") and
// whether the main document names an owner yet.
func (v *Vault) Placement() (doc string, claimed bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.onHost {
		return "hosts", true
	}
	return "main", v.owner == v.cfg.HostID && v.owner != ""
}

// Owner reads the main document's owner host ("" when none is recorded).
func (v *Vault) Owner(ctx context.Context) (string, error) {
	m, err := v.client.Logical().ReadWithContext(ctx, v.cfg.Mount+"/metadata/"+v.cfg.Path)
	if err != nil {
		return "", v.classify("read metadata of "+v.cfg.Mount+"/"+v.cfg.Path, err)
	}
	if m == nil || m.Data == nil {
		return "", nil
	}
	cm, _ := m.Data["custom_metadata"].(map[string]any)
	owner, _ := cm[MetaOwnerKey].(string)
	return owner, nil
}

// PatchMetadata merges keys into the main document's custom_metadata
// (non-secret: host health, the owner). A nil value removes the key.
func (v *Vault) PatchMetadata(ctx context.Context, keys map[string]any) error {
	op := "write metadata of " + v.cfg.Mount + "/" + v.cfg.Path
	_, err := v.client.Logical().JSONMergePatch(ctx, v.cfg.Mount+"/metadata/"+v.cfg.Path, map[string]any{"custom_metadata": keys})
	var re *vault.ResponseError
	if errors.As(err, &re) && re.StatusCode == 404 {
		return fmt.Errorf("%s: %w", op, ErrNoDocument)
	}
	if err != nil {
		return v.classify(op, err)
	}
	if owner, ok := keys[MetaOwnerKey].(string); ok {
		v.mu.Lock()
		v.owner = owner
		v.mu.Unlock()
	}
	return nil
}

// classify maps a Vault client error to one of our sentinels, in one line
// (Vault's multi-error text is flattened), with what to do when there is
// something to do: a refused token names the commands that replace it, a
// configuration mistake names the setting to fix. Vault's own words never
// contain the token; a URL's query, if any, is dropped.
func (v *Vault) classify(op string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := flatten(strings.Join(re.Errors, "\n"))
		switch {
		case re.StatusCode == 403:
			return fmt.Errorf("%s: %w (403: %s); the token was revoked, expired or lacks its policy: %s", op, ErrForbidden, msg, ReprovisionHint(v.cfg.User))
		case re.StatusCode == 400 && strings.Contains(msg, "check-and-set"):
			return fmt.Errorf("%s: %w (%s)", op, ErrConflict, msg)
		case re.StatusCode == 400 && strings.Contains(strings.ToLower(msg), "http request to an https server"):
			return fmt.Errorf("%s: %w: VAULT_ADDR=%s speaks http to an https listener; set VAULT_ADDR=https://%s", op, ErrMisconfigured, v.client.Address(), hostOf(v.client.Address()))
		case re.StatusCode >= 500 || re.StatusCode == 429:
			return fmt.Errorf("%s: %w (%d: %s)", op, ErrUnreachable, re.StatusCode, msg)
		default:
			return fmt.Errorf("%s: vault answered %d: %s", op, re.StatusCode, msg)
		}
	}
	if fix := v.misconfigured(err); fix != "" {
		return fmt.Errorf("%s: %w: %s", op, ErrMisconfigured, fix)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ECONNREFUSED) {
		reason := err.Error()
		if ue != nil {
			reason = ue.Err.Error()
		}
		return fmt.Errorf("%s: %w (%s)", op, ErrUnreachable, flatten(reason))
	}
	return fmt.Errorf("%s: %s", op, flatten(err.Error()))
}

// ReprovisionHint is what to do about a Vault token that was refused.
func ReprovisionHint(user string) string {
	return fmt.Sprintf("ask your admin to run `claude-auth-sync provision` (it installs a new token), then `systemctl start claude-auth-sync@%s.service` (a pass now); a running agent also picks the new token up by itself", user)
}

// misconfigured says what to fix when err is a mistake in the settings rather
// than an outage: retrying would only repeat it.
func (v *Vault) misconfigured(err error) string {
	addr := v.client.Address()
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Sprintf("VAULT_ADDR=%s speaks https to a listener that speaks plain http; use http://%s if that is intended, or fix the listener's TLS", addr, hostOf(addr))
	}
	var ua x509.UnknownAuthorityError
	var cv *tls.CertificateVerificationError
	if errors.As(err, &ua) || (errors.As(err, &cv) && !isHostname(err)) {
		return fmt.Sprintf("the certificate of %s is signed by a CA this host does not trust: set VAULT_CACERT (or VAULT_CAPATH) to the CA that signed it", addr)
	}
	if isHostname(err) {
		return fmt.Sprintf("the certificate of %s is not valid for that name (%s): use the name it was issued for in VAULT_ADDR, or set VAULT_TLS_SERVER_NAME", addr, flatten(err.Error()))
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		return fmt.Sprintf("the certificate of %s is not valid (%s): renew it on the server or fix VAULT_CACERT", addr, flatten(ci.Error()))
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return fmt.Sprintf("%s refused the TLS handshake (%s): check VAULT_CLIENT_CERT/VAULT_CLIENT_KEY and the listener's TLS settings", addr, ae.Error())
	}
	msg := err.Error()
	if strings.Contains(msg, "unsupported protocol scheme") || strings.Contains(msg, "no Host in request URL") ||
		strings.Contains(msg, "invalid port") || strings.Contains(msg, "invalid URL") {
		return fmt.Sprintf("VAULT_ADDR=%q is not an address: want https://host:8200", addr)
	}
	return ""
}

func isHostname(err error) bool {
	var he x509.HostnameError
	return errors.As(err, &he)
}

func hostOf(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Host
	}
	return addr
}

// flatten makes one line of Vault's multi-line text: hashicorp/go-multierror's
// "2 errors occurred:\n\t* a\n\t* b" becomes "a; b".
func flatten(s string) string {
	var parts []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimSpace(strings.TrimPrefix(line, "* "))
		if line == "" || multiErrHead.MatchString(line) {
			continue
		}
		parts = append(parts, line)
	}
	return strings.Join(parts, "; ")
}

var multiErrHead = regexp.MustCompile(`^\d+ errors? occurred:$`)

// PolicyHCL is the per-user policy: create/read/update on the user's data
// path and on its per-host documents (<path>/hosts/<host id>, for a user on
// several workstations), read on their metadata, and on the main document's
// metadata patch of custom_metadata only (each host's health; not
// max_versions, delete_version_after or cas_required); the token's own
// lookup, renew and capabilities (the token has no default policy, and
// status asks whether its policy is this one). No delete, no patch of data,
// nothing on anyone else's path.
//
// Vault matches a rule against the decoded request path and KV v2 resolves
// dot segments after it, so a glob ("hosts/*") would let ".../hosts/../../V"
// through to any path of the mount: the host is one segment ("+"), and the
// dot segments, which "+" matches too, are denied by exact rules (an exact
// path wins over a "+" one).
func PolicyHCL(mount, path string) string {
	return fmt.Sprintf(`path "%[1]s/data/%[2]s" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/data/%[2]s/hosts/+" {
  capabilities = ["create", "read", "update"]
}
path "%[1]s/metadata/%[2]s" {
  capabilities = ["read", "patch"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "%[1]s/metadata/%[2]s/hosts/+" {
  capabilities = ["read"]
}
%[3]spath "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "sys/capabilities-self" {
  capabilities = ["update"]
}
`, mount, path, denyDotSegments(mount+"/data/"+path+"/hosts/", mount+"/metadata/"+path+"/hosts/"))
}

// denyDotSegments is the HCL that denies "." and ".." (and the empty
// segment a trailing "/" makes) right after each prefix: where a policy has
// a "+", which matches them too.
func denyDotSegments(prefixes ...string) string {
	var b strings.Builder
	for _, p := range prefixes {
		for _, seg := range []string{"", ".", ".."} {
			fmt.Fprintf(&b, "path %q {\n  capabilities = [\"deny\"]\n}\n", p+seg)
		}
	}
	return b.String()
}

// StalePolicyProbe is a path the policy of a version before single-segment
// rules granted (its "hosts/*" glob) and the current one refuses: asked with
// capabilities-self, anything but ["deny"] says the token's policy is the
// old, escapable one.
func StalePolicyProbe(mount, path string) string {
	return mount + "/data/" + path + "/hosts/policy-probe/x"
}

// PolicyState is what a probe found out about a token's policy.
type PolicyState string

const (
	PolicyCurrent PolicyState = "current"
	PolicyOld     PolicyState = "old"     // the escapable glob: run provision
	PolicyUnknown PolicyState = "unknown" // Vault would not say (refused, unreachable)
)

// ProbePolicy asks Vault (capabilities-self, with c's token) what the token
// may do on probe, a path only an old policy grants: ["deny"] is the current
// policy, any capability the old one. A refusal or an error is unknown, never
// old: a warning must not be a false alarm.
func ProbePolicy(ctx context.Context, c *vault.Client, probe string) (PolicyState, error) {
	caps, err := c.Sys().CapabilitiesSelfWithContext(ctx, probe)
	if err != nil {
		return PolicyUnknown, err
	}
	switch {
	case len(caps) == 0:
		return PolicyUnknown, nil
	case len(caps) == 1 && caps[0] == "deny":
		return PolicyCurrent, nil
	}
	return PolicyOld, nil
}

// Policy says whether this user's token still carries the old, escapable
// policy (see ProbePolicy).
func (v *Vault) Policy(ctx context.Context) (PolicyState, error) {
	return ProbePolicy(ctx, v.client, StalePolicyProbe(v.cfg.Mount, v.cfg.Path))
}

// CheckSegment refuses a name that would not be exactly one safe segment of
// a Vault path: empty, "." or "..", or holding "/", "%", "+", "*", a
// control character or a space (Vault decodes the path before matching its
// policies, and KV v2 resolves dot segments after). what names the setting
// for the message.
func CheckSegment(what, name string) error {
	switch name {
	case "", ".", "..":
		return fmt.Errorf("%s %q is %w: want a name that is not empty, \".\" or \"..\"", what, name, ErrPathSegment)
	}
	for _, r := range name {
		if r < 0x21 || r == 0x7f || (r >= 0x80 && r < 0xa0) || strings.ContainsRune("/%+*\\#?", r) {
			return fmt.Errorf("%s %q is %w: it may not hold '/', '%%', '+', '*', '\\', '#', '?', a space or a control character", what, name, ErrPathSegment)
		}
	}
	return nil
}

// ErrPathSegment marks a name CheckSegment refused.
var ErrPathSegment = errors.New("not a usable Vault path segment")

// CheckPath refuses a Vault path (inside a mount, or a mount itself) whose
// segments are not each a safe one (CheckSegment): no "//", no dot segments.
func CheckPath(what, path string) error {
	for _, seg := range strings.Split(path, "/") {
		if err := CheckSegment(what, seg); err != nil {
			return fmt.Errorf("%w (in %q)", err, path)
		}
	}
	return nil
}

// Client is the Vault client NewVault built (its address checked, its
// retries off, no token unless one is set), for the commands that read
// other paths than the user's document (fleet).
func (v *Vault) Client() *vault.Client { return v.client }

// ClassifyError maps an error of a request made with c as the store maps its
// own (ErrUnreachable, ErrMisconfigured with the setting to fix, ErrConflict),
// in one line. A 403 gets the agent's hint (re-provision this user's token):
// callers with another kind of token say their own.
func ClassifyError(c *vault.Client, op string, err error) error {
	return (&Vault{client: c}).classify(op, err)
}
