package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claude-auth-sync/claude-auth-sync/e2e/fakeanthropic"
	"github.com/claude-auth-sync/claude-auth-sync/sync/credentials"
	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/lineage"
)

// One OS user on two workstations, each with its own Claude login (its own
// refresh-token chain), against one Vault: real agents, real Vault, the
// fake Anthropic. Two homes stand for the two hosts, each with its own host
// id and label, its own scoped token for the same user and path (what
// provision on each host mints), and its own fake Anthropic: the fakes stand
// for the one real Anthropic, and a token's chain is the fake that minted
// it, so "a host never holds the other host's login" is a set membership.

// fleetHost is one workstation of a user.
type fleetHost struct {
	*world
	id, label string
	agent     *agentProc
}

func randomHostID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:]) // the shape of /etc/machine-id
}

// newFleetHost is a workstation of of's user (of nil: a new user): a world
// with its own home and fake Anthropic, this host's id and label, and for a
// second host a scoped token minted for the first one's user and path into
// its own token file.
func newFleetHost(t *testing.T, of *world, label string) *fleetHost {
	t.Helper()
	w := newWorld(t)
	h := &fleetHost{world: w, id: randomHostID(), label: label}
	t.Cleanup(func() {
		if t.Failed() { // what this host's agent did and said (no secret: assertNoSecrets scans both)
			out := ""
			if h.agent != nil {
				out = h.agent.output()
			}
			t.Logf("%s (%s): fake counters %+v\nsync.log:\n%s\nagent output (current agent):\n%s", label, h.id, h.fake.Counters(), h.syncLog(), out)
		}
	})
	w.setEnvVar("CLAUDE_AUTH_HOST_ID", h.id)
	w.setEnvVar("CLAUDE_AUTH_HOST_LABEL", label)
	if of != nil {
		u, err := vsrv.Provision(context.Background(), of.name, w.user.TokenFile)
		if err != nil {
			t.Fatalf("a token for %s on the second host: %v", of.name, err)
		}
		w.name, w.user = of.name, u
		w.setEnvVar("CLAUDE_AUTH_USER", of.name)
		w.mu.Lock()
		w.secrets = append(w.secrets, u.Token)
		w.mu.Unlock()
		registerSecrets(func() []string { return []string{u.Token} })
	}
	return h
}

// fileRefresh is the refresh token in the host's credentials file.
func (h *fleetHost) fileRefresh() string { return refreshInFile(h.creds) }

// refreshInFile is the refresh token in a credentials file ("" when the file
// is missing, unreadable or logged out). Every writer renames a whole file
// into place, so a read never sees half of one.
func refreshInFile(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var f struct {
		OAuth struct {
			RefreshToken string `json:"refreshToken"`
		} `json:"claudeAiOauth"`
	}
	_ = json.Unmarshal(b, &f)
	return f.OAuth.RefreshToken
}

// chain says whether tok is of this host's login: its fake minted it.
func (h *fleetHost) chain(tok string) bool {
	return tok != "" && slices.Contains(h.fake.Issued(), tok)
}

// clobber writes what the losing writer of a refresh race persists.
func (h *fleetHost) clobber() { clobberCredentials(h.t, h.creds, -1, -1) }

// clobberCredentials writes what the losing writer of a refresh race
// persists (clobberFile), failing the test when it cannot.
func clobberCredentials(t *testing.T, path string, uid, gid int) {
	t.Helper()
	if err := clobberFile(path, uid, gid); err != nil {
		t.Fatal(err)
	}
}

// clobberFile writes what the losing writer of a refresh race persists, the
// way Claude writes: the login marked dead (empty tokens, expiresAt 0), every
// other key kept, a temp file (owned by uid:gid, -1 keeps the writer's)
// renamed over the file. It returns its error, for racers off the test's
// goroutine.
func clobberFile(path string, uid, gid int) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var f map[string]any
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("the credentials file before the clobber: %v", err)
	}
	o, _ := f["claudeAiOauth"].(map[string]any)
	if o == nil {
		return errors.New("the credentials file has no claudeAiOauth to clobber")
	}
	o["accessToken"], o["refreshToken"], o["expiresAt"] = "", "", 0
	out, _ := json.MarshalIndent(f, "", "  ")
	tmp := path + ".racer-tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	if err := os.Chown(tmp, uid, gid); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

var clobberRestored = regexp.MustCompile(`(?m)^\S+ RECOVERED credentials file was clobbered .*$`)

func (h *fleetHost) restores() int { return len(clobberRestored.FindAllString(h.syncLog(), -1)) }

// clobberAfterRotation waits for the host's agent to rotate its login, then
// clobbers the file at once (a racer loses to the refresh that just
// happened), and waits until the agent has restored a login of this host's
// own chain. The other hosts restore nothing meanwhile.
func (h *fleetHost) clobberAfterRotation(others ...*fleetHost) {
	t := h.t
	t.Helper()
	before := h.fileRefresh()
	eventually(t, 60*time.Second, h.label+": a rotation of its login", func() bool {
		r := h.fileRefresh()
		return r != "" && r != before
	})
	theirs := make([]int, len(others))
	for i, o := range others {
		theirs[i] = o.restores()
	}
	n := h.restores()
	h.clobber()
	eventuallyWhy(t, 60*time.Second, h.label+": the clobbered login restored", func() string {
		if h.restores() <= n {
			return "no new RECOVERED line in its sync.log"
		}
		if r := h.fileRefresh(); !h.chain(r) {
			return "the file does not hold a login of this host's chain"
		}
		return ""
	})
	for i, o := range others {
		if got := o.restores(); got != theirs[i] {
			t.Errorf("%s's clobber made %s restore (%d RECOVERED lines, %d before)", h.label, o.label, got, theirs[i])
		}
	}
}

// restart stops the host's agent and starts a new one, returning once the
// new agent has ended its start-up pass.
func (h *fleetHost) restart(env []string) {
	t := h.t
	t.Helper()
	h.agent.stop()
	since := time.Now()
	h.agent = h.startAgent(env)
	h.passEndedAfter(t, since, h.label+": the restarted agent's start-up pass")
}

// docRefresh is the refresh token the document at path holds ("" if none).
func docRefresh(t *testing.T, path string) string {
	t.Helper()
	s, err := rootKV().Get(context.Background(), path)
	if err != nil || s == nil {
		return ""
	}
	j, _ := s.Data["claude_ai_oauth_json"].(string)
	if j == "" {
		return ""
	}
	return refreshTokenOf(t, j)
}

// customMetadata is the custom_metadata of the document at path (nil if none).
func customMetadata(t *testing.T, path string) map[string]any {
	t.Helper()
	md, err := rootKV().GetMetadata(context.Background(), path)
	if err != nil || md == nil {
		return nil
	}
	return md.CustomMetadata
}

// hostHealthOf is host id's health in the main document at path.
func hostHealthOf(t *testing.T, path, id string) (fleet.Health, string) {
	t.Helper()
	v, _ := customMetadata(t, path)[fleet.MetadataKey(id)].(string)
	if v == "" {
		return fleet.Health{}, "no " + fleet.MetadataKey(id) + " key"
	}
	h, err := fleet.ParseHealth(v)
	if err != nil {
		return h, err.Error()
	}
	return h, ""
}

// waitHealth waits until the health of host id in the main document at
// path says status, with label and doc.
func waitHealth(t *testing.T, path, id, label, status, doc string) fleet.Health {
	t.Helper()
	var got fleet.Health
	eventuallyWhy(t, 30*time.Second, label+"'s health "+status+" in the main document's metadata", func() string {
		var why string
		if got, why = hostHealthOf(t, path, id); why != "" {
			return why
		}
		if got.Status != status || got.Label != label || got.Doc != doc || got.StatusAt.IsZero() || got.Version == "" {
			return "it is " + got.Encode()
		}
		return ""
	})
	return got
}

// hostDocs lists the per-host documents under the main document at path.
func hostDocs(t *testing.T, path string) []string {
	t.Helper()
	s, err := vsrv.Root().Logical().ListWithContext(context.Background(), "secret/metadata/"+path+"/hosts")
	if err != nil {
		t.Fatalf("list %s/hosts: %v", path, err)
	}
	var out []string
	if s != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			out = append(out, k.(string))
		}
	}
	sort.Strings(out)
	return out
}

// backupPaths lists the documents the host's backup lines name.
var backupLine = regexp.MustCompile(`(?m)^\S+ OK backed up the (?:changed )?login to vault \S+ secret/(\S+) \(v`)

func (h *fleetHost) backupPaths() map[string]int {
	out := map[string]int{}
	for _, m := range backupLine.FindAllStringSubmatch(h.syncLog(), -1) {
		out[m[1]]++
	}
	return out
}

var (
	failLine = regexp.MustCompile(`(?m)^\S+ FAIL .*$`)
	warnLine = regexp.MustCompile(`(?m)^\S+ WARN .*$`)
)

// healthSampler reads the main document's custom_metadata every 20 ms
// while a test runs and keeps every distinct value of each host's health
// key: what the hosts said, not only their last word.
type healthSampler struct {
	mu   sync.Mutex
	seen map[string][]string // host id -> values, in the order first seen
	stop chan struct{}
	done chan struct{}
}

func sampleHealth(t *testing.T, path string) *healthSampler {
	t.Helper()
	s := &healthSampler{seen: map[string][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	kv := vsrv.Root().KVv2("secret")
	go func() {
		defer close(s.done)
		for {
			if md, err := kv.GetMetadata(context.Background(), path); err == nil && md != nil {
				s.mu.Lock()
				for k, v := range md.CustomMetadata {
					id, ok := fleet.HostOfKey(k)
					if str, _ := v.(string); ok && !slices.Contains(s.seen[id], str) {
						s.seen[id] = append(s.seen[id], str)
					}
				}
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Millisecond): // the sampling period
			}
		}
	}()
	t.Cleanup(s.end)
	return s
}

func (s *healthSampler) end() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

// check ends the sampling and checks every value host h wrote: it parses,
// names h's label and document, and says one of the statuses allowed.
func (s *healthSampler) check(t *testing.T, h *fleetHost, doc string, statuses ...string) int {
	t.Helper()
	return s.checkFrom(t, h, "", doc, statuses...)
}

// checkFrom is check for a host that may first have named the document
// first (before it wrote anything, where it would have written): once it
// names doc, it never names another.
func (s *healthSampler) checkFrom(t *testing.T, h *fleetHost, first, doc string, statuses ...string) int {
	t.Helper()
	s.end()
	s.mu.Lock()
	defer s.mu.Unlock()
	settled := false
	for _, v := range s.seen[h.id] {
		got, err := fleet.ParseHealth(v)
		if err != nil {
			t.Errorf("%s wrote health that does not parse: %q: %v", h.label, v, err)
			continue
		}
		settled = settled || got.Doc == doc
		if got.Label != h.label || (got.Doc != doc && (settled || got.Doc != first)) || !slices.Contains(statuses, got.Status) {
			t.Errorf("%s wrote health %q; want label %s, doc %s, status one of %v", h.label, v, h.label, doc, statuses)
		}
		if got.Status != "OK" && got.Reason == "" {
			t.Errorf("%s wrote health %q: %s without a reason", h.label, v, got.Status)
		}
	}
	return len(s.seen[h.id])
}

// referenceDoc checks that doc holds exactly the reference fields, encoded as
// the reference tool encodes them, for the login in h's file, plus others
// (another tool's keys) unchanged.
func referenceDoc(t *testing.T, what string, doc map[string]any, h *fleetHost, others map[string]any) {
	t.Helper()
	want := []string{"backed_up_at", "claude_ai_oauth_json", "credential_expires_at_ms"}
	for k := range others {
		want = append(want, k)
	}
	sort.Strings(want)
	var keys []string
	for k, v := range doc {
		keys = append(keys, k)
		if _, ok := v.(string); !ok {
			t.Errorf("%s: field %s is a %T; every field is a string", what, k, v)
		}
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != strings.Join(want, ",") {
		t.Errorf("%s: fields %s; want exactly %s", what, got, strings.Join(want, ","))
	}
	oauth := h.localOAuthCompact()
	if doc["claude_ai_oauth_json"] != oauth {
		t.Errorf("%s: claude_ai_oauth_json is not the compact JSON of the file's claudeAiOauth, byte for byte", what)
	}
	var o struct {
		ExpiresAt json.Number `json:"expiresAt"`
	}
	d := json.NewDecoder(strings.NewReader(oauth))
	d.UseNumber()
	if err := d.Decode(&o); err != nil {
		t.Fatal(err)
	}
	if doc["credential_expires_at_ms"] != o.ExpiresAt.String() {
		t.Errorf("%s: credential_expires_at_ms = %v; want the file's expiresAt %s in decimal", what, doc["credential_expires_at_ms"], o.ExpiresAt)
	}
	at, _ := doc["backed_up_at"].(string)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`).MatchString(at) {
		t.Errorf("%s: backed_up_at = %q; want RFC 3339 in UTC, whole seconds", what, at)
	}
	for k, v := range others {
		if doc[k] != v {
			t.Errorf("%s: %s = %v; want %v kept", what, k, doc[k], v)
		}
	}
}

// TestFleetTwoHostsOneUser: one user, two workstations, each agent keeping
// its own login alive through short access-token lifetimes (a refresh every
// few seconds), a clobber on each (a racer's dead login), a restart of each.
// The fakes see no invalid_grant and no token of the other host's chain; no
// FAIL; each restore is on its own host and restores its own login; each
// host's newest login is in its own document (host 1: the main one, which it
// owns; host 2: hosts/<id>), every version of each only ever held that
// host's logins, newest last; the main document holds exactly the reference
// fields; both hosts' health is in its metadata, OK.
func TestFleetTwoHostsOneUser(t *testing.T) {
	const (
		life = 6 * time.Second // each access token's lifetime
		// With the lead below the agent refreshes each token at half its
		// lifetime: one rotation of the host's chain per token.
		lifetimes = 12
	)
	env := []string{"CLAUDE_AUTH_REFRESH_LEAD=3s"}
	h1 := newFleetHost(t, nil, "ws-one")
	h2 := newFleetHost(t, h1.world, "ws-two")
	main, own2 := h1.user.Path, h1.user.Path+"/hosts/"+h2.id
	hist1 := newVaultHistory(t, vsrv.Root(), main)
	hist2 := newVaultHistory(t, vsrv.Root(), own2)
	health := sampleHealth(t, main)
	for _, h := range []*fleetHost{h1, h2} {
		h.fake.SetExpiresIn(life)
		h.login()
	}

	// Host 1 first: a new user's main document goes to the first host that
	// backs up, and it records itself as the owner.
	h1.agent = h1.startAgent(env)
	eventuallyWhy(t, 60*time.Second, "host 1's login in the main document, host 1 its owner", func() string {
		if r := docRefresh(t, main); r == "" || r != h1.fileRefresh() {
			return "the main document does not hold the file's login"
		}
		if o, _ := customMetadata(t, main)[fleet.OwnerKey].(string); o != h1.id {
			return "owner_host is " + strconv.Quote(o)
		}
		return ""
	})
	h2.agent = h2.startAgent(env)
	eventually(t, 60*time.Second, "host 2's login in its own document", func() bool {
		r := docRefresh(t, own2)
		return r != "" && r == h2.fileRefresh()
	})

	waitRefreshes := func(h *fleetHost, n int) {
		t.Helper()
		eventually(t, 3*time.Minute, h.label+": "+strconv.Itoa(n)+" refreshes at its fake", func() bool { return h.fake.Counters().Refreshes >= n })
	}
	waitRefreshes(h1, 3)
	h1.clobberAfterRotation(h2)
	waitRefreshes(h2, 4)
	h2.clobberAfterRotation(h1)
	h1.restart(env)
	h2.restart(env)
	r1, r2 := h1.fake.Counters().Refreshes, h2.fake.Counters().Refreshes
	waitRefreshes(h1, max(lifetimes, r1+3))
	waitRefreshes(h2, max(lifetimes, r2+3))

	// Each host's newest login reaches its own document.
	for _, c := range []struct {
		h    *fleetHost
		path string
	}{{h1, main}, {h2, own2}} {
		eventually(t, 30*time.Second, c.h.label+"'s newest login in "+c.path, func() bool {
			r := c.h.fileRefresh()
			return r != "" && docRefresh(t, c.path) == r
		})
	}
	waitHealth(t, main, h1.id, h1.label, "OK", fleet.DocMain)
	waitHealth(t, main, h2.id, h2.label, "OK", fleet.DocHosts)

	// The chains never crossed.
	for _, c := range []struct{ h, other *fleetHost }{{h1, h2}, {h2, h1}} {
		cnt := c.h.fake.Counters()
		if cnt.InvalidGrant != 0 {
			t.Errorf("%s: the fake answered invalid_grant %d times; want 0", c.h.label, cnt.InvalidGrant)
		}
		theirs := c.other.fake.Issued()
		for _, rt := range c.h.fake.Received() {
			if slices.Contains(theirs, rt) {
				t.Errorf("%s presented a refresh token of %s's chain", c.h.label, c.other.label)
			}
		}
		if l := failLine.FindAllString(c.h.syncLog(), -1); len(l) > 0 {
			t.Errorf("%s logged FAIL:\n%s", c.h.label, strings.Join(l, "\n"))
		}
		if l := warnLine.FindAllString(c.h.syncLog(), -1); len(l) > 0 {
			t.Errorf("%s logged WARN:\n%s", c.h.label, strings.Join(l, "\n"))
		}
		if n := c.h.restores(); n != 1 {
			t.Errorf("%s restored %d times; want once (its own clobber):\n%s", c.h.label, n, c.h.syncLog())
		}
	}
	// Every backup line names the host's own document, and only it.
	for _, c := range []struct {
		h    *fleetHost
		path string
	}{{h1, main}, {h2, own2}} {
		paths := c.h.backupPaths()
		if len(paths) != 1 || paths[c.path] == 0 {
			t.Errorf("%s's backup lines name %v; want only %s", c.h.label, paths, c.path)
		}
	}
	// Vault's history: every version of each document holds a login of its
	// own host's chain, never an older one after a newer one.
	v1 := hist1.check(t, issueOrder(h1.fake))
	v2 := hist2.check(t, issueOrder(h2.fake))
	if got := hostDocs(t, main); !slices.Equal(got, []string{h2.id}) {
		t.Errorf("per-host documents of the user: %v; want only host 2's", got)
	}
	// h1's agent may rotate between these reads: compare with the newest.
	var doc map[string]any
	eventually(t, 30*time.Second, "a main document read that matches host 1's file", func() bool {
		doc, _ = h1.vaultDoc()
		return doc["claude_ai_oauth_json"] == h1.localOAuthCompact()
	})
	referenceDoc(t, "the main document", doc, h1, nil)
	cm := customMetadata(t, main)
	if cm[fleet.OwnerKey] != h1.id {
		t.Errorf("owner_host = %v; want host 1", cm[fleet.OwnerKey])
	}
	for k := range cm {
		if k != fleet.OwnerKey && k != fleet.MetadataKey(h1.id) && k != fleet.MetadataKey(h2.id) {
			t.Errorf("the main document's metadata has an unexpected key %q", k)
		}
	}
	if cm := customMetadata(t, own2); len(cm) != 0 {
		t.Errorf("host 2's document's custom_metadata = %v; want none (fleet information lives in the main document's only)", cm)
	}
	// Every health value either host wrote named its own document.
	// UNKNOWN until an agent's first check, STOPPED once it stops: never
	// an OK it does not know (issue 23).
	n1 := health.check(t, h1, fleet.DocMain, "OK", "RECOVERED", fleet.StatusUnknown, "STOPPED")
	n2 := health.check(t, h2, fleet.DocHosts, "OK", "RECOVERED", fleet.StatusUnknown, "STOPPED")
	c1, c2 := h1.fake.Counters(), h2.fake.Counters()
	t.Logf("FLEET-REPORT two hosts, one user: %s refreshed %d times (%d access tokens of %s, each refreshed at half its life), %s %d; invalid_grant %d and %d; one clobber restored on each, each agent restarted once; %d versions of the main document, %d of hosts/<id>, each only its host's chain; %d and %d distinct health values sampled, each naming its host's document",
		h1.label, c1.Refreshes, c1.Refreshes, life, h2.label, c2.Refreshes, c1.InvalidGrant, c2.InvalidGrant, v1, v2, n1, n2)
}

// TestFleetUpgradeSingleHostToTwo: a single-host user written the old way
// (the reference fields and another tool's key, no owner_host), the host's
// lineage knowing that login and its file holding a newer one (Claude
// refreshed after the last backup). The new agent on that host keeps the
// main document (claims it) and backs up there with the reference fields
// and encodings, the other key untouched. A second host whose file is
// broken before it ever backed up restores nothing (never host 1's login);
// once logged in it backs up to hosts/<id> only, never the main document,
// and a clobber there restores its own login.
func TestFleetUpgradeSingleHostToTwo(t *testing.T) {
	ctx := context.Background()
	h1 := newFleetHost(t, nil, "ws-old")
	main := h1.user.Path
	old := h1.login()
	// The document as the reference tool (or this tool before hosts) wrote
	// it, and the lineage an older version of this tool kept.
	sibling := map[string]any{"vaultwarden_x": "kept-by-another-tool"}
	oldAt := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	if _, err := rootKV().Put(ctx, main, map[string]any{
		"claude_ai_oauth_json": h1.localOAuthCompact(), "credential_expires_at_ms": strconv.FormatInt(old.ExpiresAt.UnixMilli(), 10),
		"backed_up_at": oldAt, "vaultwarden_x": sibling["vaultwarden_x"],
	}); err != nil {
		t.Fatal(err)
	}
	lin, err := lineage.Load(filepath.Join(h1.state, "lineage"))
	if err != nil {
		t.Fatal(err)
	}
	if err := lin.Observe(credentials.Secret(old.RefreshToken)); err != nil {
		t.Fatal(err)
	}
	cur := h1.rotate(old) // Claude refreshed since: only the lineage knows the backed-up login
	if len(customMetadata(t, main)) != 0 {
		t.Fatal("the old document has custom_metadata")
	}

	h1.agent = h1.startAgent(nil)
	eventuallyWhy(t, 60*time.Second, "host 1's newer login in the main document, host 1 its owner", func() string {
		if docRefresh(t, main) != cur.RefreshToken {
			return "the main document does not hold the file's login"
		}
		if o, _ := customMetadata(t, main)[fleet.OwnerKey].(string); o != h1.id {
			return "owner_host is " + strconv.Quote(o)
		}
		return ""
	})
	doc1, ver1 := h1.vaultDoc()
	if ver1 != 2 {
		t.Errorf("the main document is at version %d; want 2 (the old one, one backup)", ver1)
	}
	referenceDoc(t, "the main document after the upgrade", doc1, h1, sibling)
	if doc1["backed_up_at"] == oldAt {
		t.Errorf("backed_up_at not updated by the backup")
	}
	if got := hostDocs(t, main); len(got) != 0 {
		t.Errorf("per-host documents after host 1's upgrade: %v; want none", got)
	}
	waitHealth(t, main, h1.id, h1.label, "OK", fleet.DocMain)

	// Host 2 appears with its file broken before it ever backed up: nothing
	// of its own to restore, and host 1's login is not its own.
	h2 := newFleetHost(t, h1.world, "ws-new")
	own2 := main + "/hosts/" + h2.id
	h2.login()
	h2.clobber()
	r := h2.run(nil, "sync")
	if r.code == 0 {
		t.Errorf("sync on host 2 with a broken file and no backup of its own: exit 0; want a failure")
	}
	if h2.fileRefresh() != "" {
		t.Errorf("host 2's broken file was replaced by a login (host 1's?)")
	}
	if l := failLine.FindAllString(h2.syncLog(), -1); len(l) != 1 {
		t.Errorf("host 2's first pass: FAIL lines %q; want one (no backup of its own)", l)
	}
	if d, v := h1.vaultDoc(); v != ver1 || d["claude_ai_oauth_json"] != doc1["claude_ai_oauth_json"] {
		t.Errorf("host 2's failed pass changed the main document (version %d)", v)
	}

	// Logged in again, host 2 backs up to its own document.
	l2 := h2.login()
	h2.agent = h2.startAgent(nil)
	eventually(t, 60*time.Second, "host 2's login in its own document", func() bool { return docRefresh(t, own2) == l2.RefreshToken })
	waitHealth(t, main, h2.id, h2.label, "OK", fleet.DocHosts)
	h2.clobber()
	eventuallyWhy(t, 60*time.Second, "host 2's clobbered login restored", func() string {
		if h2.restores() != 1 {
			return "no RECOVERED line in its sync.log"
		}
		if r := h2.fileRefresh(); r != l2.RefreshToken {
			return "the file does not hold host 2's own newest login"
		}
		return ""
	})

	// Host 1's document never moved: the same version and bytes; host 2 never
	// wrote it, and the fleet information is where it belongs.
	if d, v := h1.vaultDoc(); v != ver1 || !sameJSON(d, doc1) {
		t.Errorf("the main document changed after host 2 appeared: version %d (was %d)", v, ver1)
	}
	if paths := h2.backupPaths(); len(paths) != 1 || paths[own2] == 0 {
		t.Errorf("host 2's backup lines name %v; want only %s", paths, own2)
	}
	if got := hostDocs(t, main); !slices.Equal(got, []string{h2.id}) {
		t.Errorf("per-host documents: %v; want only host 2's", got)
	}
	cm := customMetadata(t, main)
	if cm[fleet.OwnerKey] != h1.id {
		t.Errorf("owner_host = %v; want host 1", cm[fleet.OwnerKey])
	}
	if h1.restores() != 0 || h1.fileRefresh() != cur.RefreshToken {
		t.Errorf("host 1's login changed while host 2 came and was clobbered")
	}
	for _, h := range []*fleetHost{h1, h2} {
		if c := h.fake.Counters(); c.InvalidGrant != 0 {
			t.Errorf("%s: invalid_grant %d; want 0", h.label, c.InvalidGrant)
		}
	}
	if l := failLine.FindAllString(h1.syncLog(), -1); len(l) > 0 {
		t.Errorf("host 1 logged FAIL:\n%s", strings.Join(l, "\n"))
	}
}

// sameJSON says whether a and b encode alike (keys sorted).
func sameJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// TestFleetTwoContainers: the two-host story on two real workstations: two
// containers booted with systemd as PID 1, each with its own
// /etc/machine-id and hostname (the default host id and label), the package
// installed, the same OS user on each running the template unit
// claude-auth-sync-agent@<user> against the one Vault on the host, each with its
// own login (its own fake Anthropic). The first workstation's agent owns the
// main document; the second's backs up to hosts/<its machine-id> and
// restores its own login after a clobber; the health of both, named by
// hostname, is in the main document's metadata.
func TestFleetTwoContainers(t *testing.T) {
	_, deb := debs(t)
	var rnd [3]byte
	rand.Read(rnd[:])
	name := "casfl" + hex.EncodeToString(rnd[:]) // one Vault path for both
	unit := "claude-auth-sync-agent@" + name + ".service"
	type station struct {
		h *sdHost
		u sdUser
		l string // the login's refresh token
	}
	var st [2]station
	for i, label := range []string{"cas-fleet-a", "cas-fleet-b"} {
		h := bootHost(t, label)
		h.install(deb)
		h.configure(vsrv.Addr)
		u := h.addUser(name)
		h.vaultToken(u)
		st[i] = station{h, u, h.login(u).RefreshToken}
	}
	a, b := st[0], st[1]
	main := "workstation/claude-users/" + name
	own := main + "/hosts/" + b.h.c.MachineID

	a.h.sh("systemctl enable --now " + unit)
	eventuallyWhy(t, 60*time.Second, "the first workstation's login in the main document, it the owner", func() string {
		if docRefresh(t, main) != a.l {
			return "the main document does not hold its login"
		}
		if o, _ := customMetadata(t, main)[fleet.OwnerKey].(string); o != a.h.c.MachineID {
			return "owner_host is " + strconv.Quote(o)
		}
		return ""
	})
	b.h.sh("systemctl enable --now " + unit)
	eventually(t, 60*time.Second, "the second workstation's login in hosts/<its machine-id>", func() bool { return docRefresh(t, own) == b.l })
	passed := `^user=` + name + ` OK inference check passed`
	for _, s := range st {
		eventually(t, 60*time.Second, s.h.c.Name+": the agent's start-up pass", func() bool { return s.h.journalCount(passed) >= 1 })
	}

	recovered := `^user=` + name + ` RECOVERED credentials file was clobbered`
	clobberCredentials(t, b.u.creds(), b.u.uid, b.u.gid)
	eventually(t, 60*time.Second, "the second workstation's clobbered login restored", func() bool {
		return b.h.journalCount(recovered) == 1 && refreshInFile(b.u.creds()) == b.l
	})

	for i, s := range st {
		doc := map[bool]string{true: fleet.DocMain, false: fleet.DocHosts}[i == 0]
		waitHealth(t, main, s.h.c.MachineID, s.h.c.Name, map[bool]string{true: "OK", false: "RECOVERED"}[i == 0], doc)
		if n := s.h.journalCount(`^user=` + name + ` FAIL `); n != 0 {
			t.Errorf("%s: %d FAIL lines in the journal", s.h.c.Name, n)
		}
		if c := s.h.fake.Counters(); c.InvalidGrant != 0 {
			t.Errorf("%s: invalid_grant %d; want 0", s.h.c.Name, c.InvalidGrant)
		}
	}
	if n := a.h.journalCount(recovered); n != 0 {
		t.Errorf("the first workstation restored %d times; want never", n)
	}
	if refreshInFile(a.u.creds()) != a.l || docRefresh(t, main) != a.l {
		t.Errorf("the first workstation's login changed, in its file or in the main document")
	}
	if got := hostDocs(t, main); !slices.Equal(got, []string{b.h.c.MachineID}) {
		t.Errorf("per-host documents: %v; want only the second workstation's", got)
	}
	s, err := rootKV().Get(context.Background(), main)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range s.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if got := strings.Join(keys, ","); got != "backed_up_at,claude_ai_oauth_json,credential_expires_at_ms" {
		t.Errorf("the main document's fields: %s; want exactly the reference ones", got)
	}
}

// TestFleetHostClobberedDuringCheck: a host's login broken, or logged out,
// while its pass's inference check runs (claude reads the file after the
// change: what the second workstation of TestFleetTwoContainers met when a
// racer clobbered its file during its agent's start-up check). The refusal
// says nothing about the login the pass checked: a broken file is restored
// from the host's backup and checked again (RECOVERED, then OK), a logout is
// left alone (WARN, exit 3); never FAIL, which would page someone.
func TestFleetHostClobberedDuringCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *fleetHost)
		code   int
		want   *regexp.Regexp
	}{
		{"clobbered", func(h *fleetHost) { h.clobber() }, 0,
			regexp.MustCompile(`(?m)^\S+ RECOVERED credentials file was unusable \(claudeAiOauth: accessToken is empty, refreshToken is empty\); restored the login from the backup \(v1\)\n\S+ OK inference check passed; backup up to date \(v1\)\n$`)},
		{"logged out", func(h *fleetHost) {
			if err := os.Remove(h.creds); err != nil {
				t.Fatal(err)
			}
		}, 3, regexp.MustCompile(`(?m)^\S+ WARN no credentials file at \S+ \(a logout, or a new home\); not restoring automatically\. .*\n$`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFleetHost(t, nil, "ws-one")
			l := h.login()
			h.mustCode(h.run(nil, "sync"), 0, "the first pass (a backup)")
			g := newClaudeGate(t)
			logged := len(h.syncLog())
			done := make(chan result, 1)
			go func() { done <- h.runWith([]string{"CLAUDE_AUTH_CLAUDE_BIN=" + g.bin}, nil, 2*time.Minute, "sync") }()
			g.waitStarted(t)
			tc.change(h)
			g.open(t)
			r := <-done
			if r.code != tc.code {
				t.Errorf("sync: exit %d; want %d\n%s%s", r.code, tc.code, r.stdout, r.stderr)
			}
			if got := h.syncLog()[logged:]; !tc.want.MatchString(got) {
				t.Errorf("the pass logged:\n%s\nwant it to match %s", got, tc.want)
			}
			want := ""
			if tc.code == 0 {
				want = l.RefreshToken
			}
			if got := h.fileRefresh(); got != want {
				t.Errorf("after the pass the file holds the backup's login: %v; want %v", got == l.RefreshToken, want == l.RefreshToken)
			}
			if c := h.fake.Counters(); c.InvalidGrant != 0 {
				t.Errorf("invalid_grant %d; want 0", c.InvalidGrant)
			}
		})
	}

	// The same in the agent, whose backup worker restores the clobbered file
	// a moment later, while its start-up pass's check has already read it.
	t.Run("clobbered under the agent's start-up check", func(t *testing.T) {
		h := newFleetHost(t, nil, "ws-one")
		l := h.login()
		g := newClaudeGate(t)
		since := time.Now()
		h.agent = h.startAgent([]string{"CLAUDE_AUTH_CLAUDE_BIN=" + g.bin})
		g.waitStarted(t)
		eventually(t, 30*time.Second, "the agent's first backup", func() bool { return docRefresh(t, h.user.Path) == l.RefreshToken })
		h.clobber()
		g.open(t)
		h.passEndedAfter(t, since, "the agent's start-up pass")
		eventually(t, 30*time.Second, "the login back in the file", func() bool { return h.fileRefresh() == l.RefreshToken })
		log := h.syncLog()
		if l := failLine.FindAllString(log, -1); len(l) > 0 {
			t.Errorf("FAIL logged:\n%s", log)
		}
		if !regexp.MustCompile(`(?m)^\S+ OK inference check passed.*$`).MatchString(log) {
			t.Errorf("the start-up pass did not pass its check:\n%s", log)
		}
		if c := h.fake.Counters(); c.InvalidGrant != 0 {
			t.Errorf("invalid_grant %d; want 0", c.InvalidGrant)
		}
	})
}

// claudeGate is a claude for the check that, once started, waits until the
// test opens the gate, then runs the stand-in: the test changes the file
// between the check's start and claude's read of it.
type claudeGate struct{ bin, started, goOn string }

func newClaudeGate(t *testing.T) *claudeGate {
	t.Helper()
	dir := t.TempDir()
	g := &claudeGate{bin: filepath.Join(dir, "claude"), started: filepath.Join(dir, "started"), goOn: filepath.Join(dir, "go")}
	// At most a minute's wait, in steps of 10 ms, so a test that never
	// opens the gate does not hang the check.
	script := "#!/bin/sh\n: > '" + g.started + "'\nn=0\nwhile [ ! -e '" + g.goOn + "' ] && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done\nexec '" + filepath.Join(binDir, "claude") + "' \"$@\"\n"
	if err := os.WriteFile(g.bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *claudeGate) waitStarted(t *testing.T) {
	t.Helper()
	eventually(t, 60*time.Second, "the check's claude started", func() bool { _, err := os.Stat(g.started); return err == nil })
}

func (g *claudeGate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(g.goOn, nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFleetTwoHostsStartTogether: a new user's agents on two workstations
// start at the same moment (provision enabled both), each with its own
// login, both finding the main document empty and unowned. One of them
// takes it (its write's check-and-set wins) and records itself as owner;
// the other moves to hosts/<its id>. Every version of each document holds
// only its host's chain, rotations afterwards go to the same documents, and
// neither host restores, fails or warns.
func TestFleetTwoHostsStartTogether(t *testing.T) {
	h1 := newFleetHost(t, nil, "ws-one")
	h2 := newFleetHost(t, h1.world, "ws-two")
	main := h1.user.Path
	hist := newVaultHistory(t, vsrv.Root(), main)
	health := sampleHealth(t, main)
	logins := map[*fleetHost]fakeanthropic.Login{h1: h1.login(), h2: h2.login()}
	t.Cleanup(func() {
		if t.Failed() { // what each host did, and whose login each version of the main document holds
			meta, _ := rootKV().GetMetadata(context.Background(), main)
			var vers []string
			for v := 1; meta != nil && v <= meta.CurrentVersion; v++ {
				sec, _ := rootKV().GetVersion(context.Background(), main, v)
				j := ""
				if sec != nil {
					j, _ = sec.Data["claude_ai_oauth_json"].(string)
				}
				r := ""
				if j != "" {
					r = refreshTokenOf(t, j)
				}
				vers = append(vers, fmt.Sprintf("v%d: ws-one's %v, ws-two's %v", v, h1.chain(r), h2.chain(r)))
			}
			t.Logf("ws-one (%s):\n%s\nws-two (%s):\n%s\nthe main document's custom_metadata %v\nits versions: %s\nper-host documents %v",
				h1.id, h1.syncLog(), h2.id, h2.syncLog(), customMetadata(t, main), strings.Join(vers, "; "), hostDocs(t, main))
		}
	})
	for _, h := range []*fleetHost{h1, h2} {
		h.agent = h.startAgentProc(nil, nil)
	}
	var owner, other *fleetHost
	eventuallyWhy(t, 60*time.Second, "one host owning the main document, the other in its own", func() string {
		o, _ := customMetadata(t, main)[fleet.OwnerKey].(string)
		switch o {
		case h1.id:
			owner, other = h1, h2
		case h2.id:
			owner, other = h2, h1
		default:
			return "owner_host is " + strconv.Quote(o)
		}
		if docRefresh(t, main) != logins[owner].RefreshToken {
			return "the main document does not hold the owner's login"
		}
		if docRefresh(t, main+"/hosts/"+other.id) != logins[other].RefreshToken {
			return "hosts/<id> of the other host does not hold its login"
		}
		return ""
	})
	for h, l := range logins {
		logins[h] = h.rotate(l) // Claude refreshes on each
	}
	for h, path := range map[*fleetHost]string{owner: main, other: main + "/hosts/" + other.id} {
		eventually(t, 30*time.Second, h.label+"'s rotated login in "+path, func() bool { return docRefresh(t, path) == logins[h].RefreshToken })
	}
	waitHealth(t, main, owner.id, owner.label, "OK", fleet.DocMain)
	waitHealth(t, main, other.id, other.label, "OK", fleet.DocHosts)
	hist.check(t, issueOrder(owner.fake))
	if got := hostDocs(t, main); !slices.Equal(got, []string{other.id}) {
		t.Errorf("per-host documents: %v; want only %s's", got, other.label)
	}
	for _, h := range []*fleetHost{h1, h2} {
		if l := append(failLine.FindAllString(h.syncLog(), -1), warnLine.FindAllString(h.syncLog(), -1)...); len(l) > 0 {
			t.Errorf("%s logged:\n%s", h.label, strings.Join(l, "\n"))
		}
		if h.restores() != 0 {
			t.Errorf("%s restored a login", h.label)
		}
	}
	health.check(t, owner, fleet.DocMain, "OK", fleet.StatusUnknown, "STOPPED")
	health.checkFrom(t, other, fleet.DocMain, fleet.DocHosts, "OK", fleet.StatusUnknown, "STOPPED")
	for h, path := range map[*fleetHost]string{owner: main, other: main + "/hosts/" + other.id} {
		if paths := h.backupPaths(); len(paths) != 1 || paths[path] == 0 {
			t.Errorf("%s's backup lines name %v; want only %s", h.label, paths, path)
		}
	}
	t.Logf("FLEET-REPORT two hosts starting together: %s took the main document, %s moved to hosts/<id>", owner.label, other.label)
}
