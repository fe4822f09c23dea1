package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/claude-auth-sync/claude-auth-sync/sync/fleet"
	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// The policies of earlier versions, kept here only as fixtures: the suite
// shows them escapable, so it is shown able to fail.
const (
	oldUserPolicy = `path "secret/data/%[1]s" {
  capabilities = ["create", "read", "update"]
}
path "secret/data/%[1]s/hosts/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/%[1]s" {
  capabilities = ["read", "patch"]
  allowed_parameters = {
    "custom_metadata" = []
  }
}
path "secret/metadata/%[1]s/hosts/*" {
  capabilities = ["read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
`
	oldReaderPolicy = `path "secret/metadata/%[1]s" {
  capabilities = ["list", "read"]
}
path "secret/metadata/%[1]s/*" {
  capabilities = ["list", "read"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
`
)

// rawRequest is one request sent as bytes: its path (after /v1/) is exactly
// what goes on the wire, never cleaned or escaped by a client.
type rawRequest struct {
	method, path, body string
}

func (r rawRequest) String() string { return r.method + " /v1/" + r.path }

// rawAnswer is what Vault answered.
type rawAnswer struct {
	status   int
	body     []byte
	location string
}

// sendRaw writes req on a new TCP connection to Vault, with token in the
// header, and reads the answer. A redirect is not followed: it is an answer
// that did nothing, and where it points is a request of its own.
func sendRaw(t *testing.T, token string, req rawRequest) rawAnswer {
	t.Helper()
	host := strings.TrimPrefix(vsrv.Addr, "http://")
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatalf("dial vault: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	ctype := "application/json"
	if req.method == "PATCH" {
		ctype = "application/merge-patch+json"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s /v1/%s HTTP/1.1\r\nHost: %s\r\nX-Vault-Token: %s\r\nX-Vault-Request: true\r\nConnection: close\r\n", req.method, req.path, host, token)
	if req.body != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\nContent-Length: %d\r\n", ctype, len(req.body))
	}
	b.WriteString("\r\n" + req.body)
	if _, err := conn.Write(b.Bytes()); err != nil {
		t.Fatalf("%s: write: %v", req, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: read the answer: %v", req, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return rawAnswer{status: resp.StatusCode, body: body, location: resp.Header.Get("Location")}
}

// hostileCase is a request a token must not get through, and why.
type hostileCase struct {
	req rawRequest
	why string
}

// dotForms are the ways to write ".." that Vault decodes before matching a
// rule (and KV resolves after): literal, encoded, half-encoded, upper case,
// and double-encoded.
var dotForms = []string{"..", "%2e%2e", ".%2e", "%2e.", "%2E%2E", "%252e%252e"}

const (
	writeBody = `{"data":{"claude_ai_oauth_json":"{\"hostile\":true}","backed_up_at":"2000-01-01T00:00:00Z"}}`
	patchBody = `{"data":{"claude_ai_oauth_json":"{\"hostile\":true}"}}`
)

// userHostileTable is what user m's own token tries against victim v, the
// user mx whose name extends m's, and the rest of the mount and Vault.
func userHostileTable(base, m, v, mx string) []hostileCase {
	var tc []hostileCase
	add := func(why, method, path, body string) {
		tc = append(tc, hostileCase{rawRequest{method, path, body}, why})
	}
	data := "secret/data/" + base
	meta := "secret/metadata/" + base
	for _, d := range dotForms {
		up2 := d + "/" + d
		up4 := up2 + "/" + up2
		for _, method := range []string{"POST", "PUT", "GET", "PATCH", "DELETE"} {
			body := writeBody
			if method == "PATCH" {
				body = patchBody
			} else if method == "GET" || method == "DELETE" {
				body = ""
			}
			add("traversal from hosts/ to the victim's document", method, data+"/"+m+"/hosts/"+up2+"/"+v, body)
			add("traversal from hosts/ to the victim's metadata", method, meta+"/"+m+"/hosts/"+up2+"/"+v, map[string]string{"PATCH": `{"custom_metadata":{"host.x":"status=OK"}}`, "POST": `{"max_versions":1}`}[method])
		}
		add("traversal from hosts/ to another team's secret", "POST", data+"/"+m+"/hosts/"+up4+"/other-team/app", writeBody)
		add("traversal from hosts/ to another team's secret", "GET", data+"/"+m+"/hosts/"+up4+"/other-team/app", "")
		add("traversal from hosts/ listing the users", "LIST", meta+"/"+m+"/hosts/"+up2, "")
		add("traversal from the main document to the victim's", "POST", data+"/"+m+"/"+d+"/"+v, writeBody)
		add("traversal from the main document to the victim's", "GET", data+"/"+m+"/"+d+"/"+v, "")
		if !strings.Contains(d, "%25") {
			// Decoded once, "%252e%252e" is a host named "%2e%2e": one
			// segment of the user's own, not a way out.
			add("a dot segment where the host goes", "POST", data+"/"+m+"/hosts/"+d, writeBody)
			add("a dot segment where the host goes", "GET", meta+"/"+m+"/hosts/"+d, "")
		}
		add("traversal below a host", "POST", data+"/"+m+"/hosts/h1/"+d+"/"+up2+"/"+v, writeBody)
		add("traversal through subkeys", "GET", "secret/subkeys/"+base+"/"+m+"/hosts/"+up2+"/"+v, "")
		add("traversal to the victim's delete", "POST", "secret/delete/"+base+"/"+m+"/hosts/"+up2+"/"+v, `{"versions":[1]}`)
	}
	for _, d := range []string{".", "%2e", "%2E"} {
		add("the '.' segment where the host goes (the document <user>/hosts)", "POST", data+"/"+m+"/hosts/"+d, writeBody)
		add("the '.' segment where the host goes", "GET", meta+"/"+m+"/hosts/"+d, "")
	}
	// "//" and trailing slashes.
	add("'//' toward the victim", "POST", data+"/"+m+"/hosts//..//..//"+v, writeBody)
	add("'//' toward the victim", "GET", "secret/data//"+base+"/"+v, "")
	add("'//' toward the victim", "POST", "secret//data/"+base+"/"+v, writeBody)
	add("'//' toward the victim", "POST", data+"/"+m+"//../"+v, writeBody)
	add("'//' and an encoded dot segment", "POST", data+"/"+m+"/hosts//%2e%2e//%2e%2e//"+v, writeBody)
	add("an empty host segment (the document <user>/hosts)", "POST", data+"/"+m+"/hosts/", writeBody)
	add("an empty host segment", "GET", meta+"/"+m+"/hosts/", "")
	add("the victim's path with a trailing '/'", "POST", data+"/"+v+"/", writeBody)
	add("the victim's path with a trailing '/'", "GET", data+"/"+v+"/", "")
	add("another team's path with a trailing '/'", "GET", "secret/data/other-team/app/", "")
	// '+' and '*' as literals where a name goes.
	add("'+' for the user", "POST", data+"/+", writeBody)
	add("'+' for the user", "POST", data+"/+/hosts/h1", writeBody)
	add("'*' for the user", "GET", data+"/*", "")
	add("'*' after the user's name", "POST", data+"/"+m+"*", writeBody)
	add("'*' for the mount's paths", "GET", "secret/data/*", "")
	add("'+' for the user", "GET", meta+"/+", "")
	add("'+' below a host", "POST", data+"/"+m+"/hosts/+/"+v, writeBody)
	add("'*' below a host", "POST", data+"/"+m+"/hosts/*/x", writeBody)
	// Other users' documents, by name.
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		body := map[string]string{"POST": writeBody, "PUT": writeBody, "PATCH": patchBody}[method]
		add("the victim's document", method, data+"/"+v, body)
		add("the victim's host document", method, data+"/"+v+"/hosts/h1", body)
		add("a user whose name extends the attacker's", method, data+"/"+mx, body)
	}
	add("the victim's metadata", "GET", meta+"/"+v, "")
	add("the victim's metadata", "PATCH", meta+"/"+v, `{"custom_metadata":{"host.x":"status=OK"}}`)
	add("the victim's metadata", "POST", meta+"/"+v, `{"max_versions":1}`)
	add("the victim's metadata", "DELETE", meta+"/"+v, "")
	add("the victim's host metadata", "GET", meta+"/"+v+"/hosts/h1", "")
	add("metadata of a user whose name extends the attacker's", "PATCH", meta+"/"+mx, `{"custom_metadata":{"host.x":"status=OK"}}`)
	add("metadata of a user whose name extends the attacker's", "GET", meta+"/"+mx, "")
	add("subkeys of the victim's document", "GET", "secret/subkeys/"+base+"/"+v, "")
	// The attacker's own document: nothing beyond create/read/update of
	// data and a custom_metadata patch.
	for _, body := range []string{`{"max_versions":1}`, `{"cas_required":true}`, `{"delete_version_after":"1s"}`,
		`{"custom_metadata":{"host.h1":"status=OK"},"max_versions":1}`} {
		add("own metadata: a field other than custom_metadata", "PATCH", meta+"/"+m, body)
		add("own metadata: an update (not a patch)", "POST", meta+"/"+m, body)
	}
	add("own metadata: delete (every version)", "DELETE", meta+"/"+m, "")
	add("own document: delete", "DELETE", data+"/"+m, "")
	add("own document: patch of data", "PATCH", data+"/"+m, patchBody)
	add("own host document: delete", "DELETE", data+"/"+m+"/hosts/h1", "")
	add("own host metadata: patch", "PATCH", meta+"/"+m+"/hosts/h1", `{"max_versions":1}`)
	for _, who := range []string{m, v, m + "/hosts/h1"} {
		add("delete versions", "POST", "secret/delete/"+base+"/"+who, `{"versions":[1]}`)
		add("destroy versions", "PUT", "secret/destroy/"+base+"/"+who, `{"versions":[1]}`)
		add("undelete versions", "POST", "secret/undelete/"+base+"/"+who, `{"versions":[1]}`)
	}
	// Lists nobody granted.
	add("list the users", "LIST", meta, "")
	add("list the users", "GET", meta+"?list=true", "")
	add("list own hosts", "LIST", meta+"/"+m+"/hosts", "")
	add("list the victim's hosts", "LIST", meta+"/"+v+"/hosts", "")
	add("list the mount", "LIST", "secret/metadata", "")
	add("list the mount", "LIST", "secret/metadata/", "")
	// Other mounts, the mount's config, sys/ and auth/.
	add("another team's secret", "GET", "secret/data/other-team/app", "")
	add("another team's secret", "POST", "secret/data/other-team/app", writeBody)
	add("another team's metadata", "GET", "secret/metadata/other-team/app", "")
	add("the mount's config", "POST", "secret/config", `{"max_versions":1}`)
	add("the mount's config", "GET", "secret/config", "")
	add("cubbyhole (no default policy)", "POST", "cubbyhole/x", `{"x":"y"}`)
	add("cubbyhole (no default policy)", "GET", "cubbyhole/x", "")
	add("mounts", "GET", "sys/mounts", "")
	add("mount a new engine", "POST", "sys/mounts/hostile", `{"type":"kv"}`)
	add("unmount", "DELETE", "sys/mounts/secret", "")
	add("grant itself more", "PUT", "sys/policy/"+store.PolicyFor(m), `{"policy":"path \"*\" {capabilities=[\"sudo\",\"create\",\"read\",\"update\",\"delete\",\"list\"]}"}`)
	add("grant itself more", "PUT", "sys/policies/acl/"+store.PolicyFor(m), `{"policy":"path \"*\" {capabilities=[\"read\"]}"}`)
	add("read another user's policy", "GET", "sys/policy/"+store.PolicyFor(v), "")
	add("list policies", "LIST", "sys/policies/acl", "")
	add("auth methods", "GET", "sys/auth", "")
	add("a token for itself", "POST", "auth/token/create", `{"policies":["`+store.PolicyFor(v)+`"]}`)
	add("an orphan token", "POST", "auth/token/create-orphan", `{}`)
	add("a token from a role", "POST", "auth/token/create/anything", `{}`)
	add("list token accessors", "LIST", "auth/token/accessors", "")
	add("look up another token", "POST", "auth/token/lookup", `{"token":"hvs.nothing"}`)
	add("revoke by accessor", "POST", "auth/token/revoke-accessor", `{"accessor":"nothing"}`)
	add("capabilities of another token", "POST", "sys/capabilities", `{"token":"hvs.nothing","paths":["secret/data/x"]}`)
	add("the audit devices", "GET", "sys/audit", "")
	add("seal", "PUT", "sys/seal", "")
	return tc
}

// readerHostileTable is what the fleet reader's token tries: anything but
// listing the users and reading each user's main metadata.
func readerHostileTable(base, v string) []hostileCase {
	var tc []hostileCase
	add := func(why, method, path, body string) {
		tc = append(tc, hostileCase{rawRequest{method, path, body}, why})
	}
	meta := "secret/metadata/" + base
	for _, d := range dotForms {
		up2 := d + "/" + d
		add("traversal to another team's metadata", "GET", meta+"/"+up2+"/other-team/app", "")
		add("traversal to another team's metadata", "LIST", meta+"/"+up2+"/other-team", "")
		add("traversal through a user to another team's metadata", "GET", meta+"/"+v+"/"+up2+"/"+d+"/other-team/app", "")
		add("traversal listing the mount", "LIST", meta+"/"+up2, "")
		if !strings.Contains(d, "%25") { // a user named "%2e%2e" is one segment
			add("a dot segment where the user goes", "GET", meta+"/"+d, "")
			add("a dot segment where the user goes", "LIST", meta+"/"+d, "")
		}
		add("traversal to a data path", "GET", meta+"/"+up2+"/"+d+"/data/"+base+"/"+v, "")
		add("traversal to the victim's document as data", "GET", "secret/data/"+base+"/"+v+"/hosts/"+up2+"/"+v, "")
	}
	for _, d := range []string{".", "%2e"} {
		add("the '.' segment where the user goes", "GET", meta+"/"+d, "")
	}
	add("'//' toward another team", "GET", meta+"//../../other-team/app", "")
	add("'//' toward another team", "GET", "secret/metadata//other-team/app", "")
	add("a trailing '/' on a user", "GET", meta+"/"+v+"/", "")
	add("'+' for the user", "GET", meta+"/+/hosts/h1", "")
	add("'*' for the user", "LIST", meta+"/*", "")
	add("'*' for the mount", "GET", "secret/metadata/*", "")
	for _, method := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		body := map[string]string{"POST": writeBody, "PUT": writeBody, "PATCH": patchBody}[method]
		add("a user's login", method, "secret/data/"+base+"/"+v, body)
		add("a user's host login", method, "secret/data/"+base+"/"+v+"/hosts/h1", body)
	}
	add("subkeys of a user's login", "GET", "secret/subkeys/"+base+"/"+v, "")
	add("a user's host metadata", "GET", meta+"/"+v+"/hosts/h1", "")
	add("a user's hosts", "LIST", meta+"/"+v+"/hosts", "")
	add("a user's metadata: patch", "PATCH", meta+"/"+v, `{"custom_metadata":{"host.x":"status=OK"}}`)
	add("a user's metadata: update", "POST", meta+"/"+v, `{"max_versions":1}`)
	add("a user's metadata: delete", "DELETE", meta+"/"+v, "")
	add("delete versions", "POST", "secret/delete/"+base+"/"+v, `{"versions":[1]}`)
	add("destroy versions", "PUT", "secret/destroy/"+base+"/"+v, `{"versions":[1]}`)
	add("undelete versions", "POST", "secret/undelete/"+base+"/"+v, `{"versions":[1]}`)
	add("list the mount", "LIST", "secret/metadata", "")
	add("list the mount", "LIST", "secret/metadata/", "")
	add("another team's metadata", "GET", "secret/metadata/other-team/app", "")
	add("another team's secret", "GET", "secret/data/other-team/app", "")
	add("the metadata above the users", "GET", strings.TrimSuffix(meta, "/"+lastSegment(base)), "")
	add("the mount's config", "POST", "secret/config", `{"max_versions":1}`)
	add("cubbyhole (no default policy)", "POST", "cubbyhole/x", `{"x":"y"}`)
	add("mounts", "GET", "sys/mounts", "")
	add("grant itself more", "PUT", "sys/policy/"+fleet.ReaderPolicy, `{"policy":"path \"*\" {capabilities=[\"read\"]}"}`)
	add("read a user's policy", "GET", "sys/policy/"+store.PolicyFor(v), "")
	add("a token", "POST", "auth/token/create", `{}`)
	add("an orphan token", "POST", "auth/token/create-orphan", `{}`)
	add("list token accessors", "LIST", "auth/token/accessors", "")
	return tc
}

func lastSegment(p string) string { return p[strings.LastIndex(p, "/")+1:] }

// refusal is how Vault turned a hostile request away, "" when it did not:
// exactly one of three answers, none of which runs a handler or changes
// anything (the snapshots after the table prove it):
//   - 403, the policy refused it;
//   - a redirect (307, or 301) to the path with its literal dot segments or
//     "//" cleaned, from Go's HTTP mux in front of every handler: the
//     cleaned path is a request of its own (each one that leaves the
//     token's own paths is in the table by itself);
//   - 400 "cannot write to a path ending in '/'", Vault's refusal of a write
//     to a trailing '/' before it looks at the policy.
func refusal(ans rawAnswer) string {
	switch {
	case ans.status == http.StatusForbidden:
		return "403"
	case (ans.status == http.StatusTemporaryRedirect || ans.status == http.StatusMovedPermanently) && ans.location != "" &&
		!strings.Contains(ans.location, "//") && !strings.Contains(ans.location+"/", "/./") && !strings.Contains(ans.location+"/", "/../"):
		return "redirect to the cleaned path"
	case ans.status == http.StatusBadRequest && strings.Contains(string(ans.body), "cannot write to a path ending in '/'"):
		return "400 trailing '/'"
	}
	return ""
}

// runHostile sends every case with token and fails each that Vault did not
// refuse (see refusal). It returns how many were refused, and how.
func runHostile(t *testing.T, policy, token string, table []hostileCase) (int, map[string]int) {
	t.Helper()
	how := map[string]int{}
	refused := 0
	for _, c := range table {
		ans := sendRaw(t, token, c.req)
		if r := refusal(ans); r != "" {
			refused++
			how[r]++
			continue
		}
		t.Errorf("%s policy: %s (%s): answered %d; want it refused (403, a redirect, or 400 for a write ending in '/'): %s",
			policy, c.req, c.why, ans.status, firstLine(ans.body))
	}
	return refused, how
}

func howRefused(how map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(how)) {
		parts = append(parts, fmt.Sprintf("%d %s", how[k], k))
	}
	return strings.Join(parts, ", ")
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s[:min(len(s), 200)]
}

// treeSnapshot is every document under the prefixes, as root reads it: the
// data and the metadata (versions, current_version, custom_metadata,
// settings) exactly as Vault answers them (request ids left out).
func treeSnapshot(t *testing.T, prefixes ...string) map[string]string {
	t.Helper()
	root := vsrv.RootTokenValue()
	out := map[string]string{}
	var walk func(dir string)
	walk = func(dir string) {
		ans := sendRaw(t, root, rawRequest{"LIST", "secret/metadata/" + dir, ""})
		if ans.status == 404 {
			return
		}
		var l struct {
			Data struct{ Keys []string }
		}
		if ans.status != 200 || json.Unmarshal(ans.body, &l) != nil {
			t.Fatalf("list %s as root: %d %s", dir, ans.status, firstLine(ans.body))
		}
		out["list "+dir] = strings.Join(l.Data.Keys, ",")
		for _, k := range l.Data.Keys {
			if strings.HasSuffix(k, "/") {
				walk(dir + k)
				continue
			}
			for _, kind := range []string{"data", "metadata"} {
				a := sendRaw(t, root, rawRequest{"GET", "secret/" + kind + "/" + dir + k, ""})
				var d struct{ Data json.RawMessage }
				_ = json.Unmarshal(a.body, &d)
				out[kind+" "+dir+k] = fmt.Sprintf("%d %s", a.status, d.Data)
			}
		}
	}
	for _, p := range prefixes {
		walk(p)
	}
	return out
}

func diffTrees(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for k, b := range before {
		if a, ok := after[k]; !ok || a != b {
			t.Errorf("%s: %s changed:\nbefore: %s\nafter:  %s", what, k, b, a)
		}
	}
	for k, a := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: %s appeared: %s", what, k, a)
		}
	}
}

// mintLikeProvision mints a token as provision does: periodic, orphan, only
// the named policies (no default).
func mintLikeProvision(t *testing.T, display string, noDefault bool, policies ...string) string {
	t.Helper()
	renewable := true
	s, err := vsrv.Root().Auth().Token().CreateOrphan(&vault.TokenCreateRequest{Policies: policies, NoDefaultPolicy: noDefault,
		Period: "768h", Renewable: &renewable, DisplayName: display})
	if err != nil {
		t.Fatalf("mint a token: %v", err)
	}
	registerSecrets(func() []string { return []string{s.Auth.ClientToken} })
	return s.Auth.ClientToken
}

// TestPolicyHostileRequests: for each policy the product writes (the user's,
// as provision writes and mints it; the fleet reader's), a table of hostile
// requests sent as raw bytes to the real Vault, each refused with 403; after
// the table every document of the test's tree, of the victim's, and a path
// outside the project are byte for byte what they were. The old policies fail
// the same table (shown for some of it), and what the product does still
// works with the new ones.
func TestPolicyHostileRequests(t *testing.T) {
	ctx := context.Background()
	root := vsrv.Root()
	userSeq++
	base := fmt.Sprintf("pol%d/claude-users", userSeq)
	m, v, mx := "mallory", "victor", "mallorylong"
	for _, who := range []string{m, v, mx} {
		if _, err := root.KVv2("secret").Put(ctx, base+"/"+who, map[string]any{"claude_ai_oauth_json": `{"of":"` + who + `"}`, "vaultwarden_x": who}); err != nil {
			t.Fatal(err)
		}
		if _, err := root.KVv2("secret").Put(ctx, base+"/"+who+"/hosts/h1", map[string]any{"claude_ai_oauth_json": `{"host":"` + who + `"}`}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.Logical().JSONMergePatch(ctx, "secret/metadata/"+base+"/"+v, map[string]any{"custom_metadata": map[string]any{"owner_host": "h0", "host.h0": "label=victor-ws;status=OK"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := root.KVv2("secret").Put(ctx, "other-team/app", map[string]any{"password": "other-team-value"}); err != nil {
		t.Fatal(err)
	}

	// The user policy, as provision writes it and mints the token.
	if err := root.Sys().PutPolicy(store.PolicyFor(m), store.PolicyHCL("secret", base+"/"+m)); err != nil {
		t.Fatal(err)
	}
	userTok := mintLikeProvision(t, store.DisplayNameFor(m), true, store.PolicyFor(m))
	// The reader policy, as provision writes it (under a name of this test's,
	// so other tests' reader is not touched) and mints its token.
	readerName := fmt.Sprintf("%s-pol%d", fleet.ReaderPolicy, userSeq)
	if err := root.Sys().PutPolicy(readerName, fleet.ReaderPolicyHCL("secret", base)); err != nil {
		t.Fatal(err)
	}
	readerTok := mintLikeProvision(t, "claude-auth-sync-fleet-reader", true, readerName)

	tree := func() map[string]string { return treeSnapshot(t, strings.Split(base, "/")[0]+"/", "other-team/") }
	policies := func() map[string]string {
		out := map[string]string{}
		for _, n := range []string{store.PolicyFor(m), store.PolicyFor(v), readerName} {
			out[n], _ = root.Sys().GetPolicy(n)
		}
		return out
	}
	mounts := func() string {
		ms, _ := root.Sys().ListMounts()
		return strings.Join(slices.Sorted(func(yield func(string) bool) {
			for k := range ms {
				if !yield(k) {
					return
				}
			}
		}), ",")
	}
	accessors := func() int {
		s, _ := root.Logical().List("auth/token/accessors")
		keys, _ := s.Data["keys"].([]any)
		return len(keys)
	}
	beforeTree, beforePolicies, beforeMounts := tree(), policies(), mounts()
	beforeTokens := accessors()

	userTable := userHostileTable(base, m, v, mx)
	userRefused, userHow := runHostile(t, "user", userTok, userTable)
	readerTable := readerHostileTable(base, v)
	readerRefused, readerHow := runHostile(t, "fleet reader", readerTok, readerTable)
	t.Logf("POLICY-REPORT user: %d hostile requests, %d refused (%s)", len(userTable), userRefused, howRefused(userHow))
	t.Logf("POLICY-REPORT fleet-reader: %d hostile requests, %d refused (%s)", len(readerTable), readerRefused, howRefused(readerHow))

	diffTrees(t, "after the hostile requests", beforeTree, tree())
	diffTrees(t, "policies after the hostile requests", beforePolicies, policies())
	if got := mounts(); got != beforeMounts {
		t.Errorf("mounts changed: %s; were %s", got, beforeMounts)
	}
	if got := accessors(); got > beforeTokens {
		t.Errorf("%d tokens were created by the hostile requests", got-beforeTokens)
	}
	// A request that must not get through gets through the old policies: the
	// table can fail.
	t.Run("old policies are escapable", func(t *testing.T) { oldPoliciesEscape(t, base, v, userTable, readerTable) })
	t.Run("what the product does still works", func(t *testing.T) { legitimateOperations(t, base, m, userTok, readerTok) })
}

// oldPoliciesEscape writes the old policies under other names and shows
// requests of the tables getting through them (on a victim of its own),
// and that the probes call them old.
func oldPoliciesEscape(t *testing.T, base, v string, userTable, readerTable []hostileCase) {
	ctx := context.Background()
	root := vsrv.Root()
	om, ov := "oldmallory", "oldvictor"
	if _, err := root.KVv2("secret").Put(ctx, base+"/"+ov, map[string]any{"claude_ai_oauth_json": `{"of":"oldvictor"}`}); err != nil {
		t.Fatal(err)
	}
	oldUser := "old-" + store.PolicyFor(om)
	if err := root.Sys().PutPolicy(oldUser, fmt.Sprintf(oldUserPolicy, base+"/"+om)); err != nil {
		t.Fatal(err)
	}
	// Minted as the earlier versions did: with the default policy.
	tok := mintLikeProvision(t, store.DisplayNameFor(om), false, oldUser)
	// Replay the user table's traversals against the old victim.
	escaped := 0
	for _, c := range userTable {
		if !strings.Contains(c.req.path, "/hosts/") || !strings.HasSuffix(c.req.path, "/"+v) || c.req.method != "POST" || !strings.HasPrefix(c.req.path, "secret/data/") {
			continue
		}
		req := c.req
		req.path = strings.Replace(strings.TrimSuffix(req.path, "/"+v)+"/"+ov, "/"+"mallory"+"/", "/"+om+"/", 1)
		if ans := sendRaw(t, tok, req); ans.status == 200 || ans.status == 204 {
			escaped++
		}
	}
	s, err := root.KVv2("secret").GetMetadata(ctx, base+"/"+ov)
	if err != nil {
		t.Fatal(err)
	}
	if escaped == 0 || s.CurrentVersion == 1 {
		t.Errorf("the old user policy kept every traversal out (%d got through, the old victim at version %d): the table cannot fail", escaped, s.CurrentVersion)
	}
	t.Logf("POLICY-REPORT old user policy: %d of the table's write traversals got through", escaped)
	c := vsrv.Root()
	c.SetToken(tok)
	if state, err := store.ProbePolicy(ctx, c, store.StalePolicyProbe("secret", base+"/"+om)); state != store.PolicyOld {
		t.Errorf("the probe calls the old user policy %q (%v); want old", state, err)
	}

	oldReader := fmt.Sprintf("old-%s-%d", fleet.ReaderPolicy, userSeq)
	if err := root.Sys().PutPolicy(oldReader, fmt.Sprintf(oldReaderPolicy, base)); err != nil {
		t.Fatal(err)
	}
	rtok := mintLikeProvision(t, "claude-auth-sync-fleet-reader", true, oldReader)
	leaked := 0
	for _, c := range readerTable {
		if c.req.method == "GET" && strings.HasSuffix(c.req.path, "/other-team/app") {
			if ans := sendRaw(t, rtok, c.req); ans.status == 200 {
				leaked++
			}
		}
	}
	if leaked == 0 {
		t.Errorf("the old reader policy kept every traversal out: the table cannot fail")
	}
	t.Logf("POLICY-REPORT old fleet-reader policy: %d of the table's reads of another team's metadata got through", leaked)
	rc := vsrv.Root()
	rc.SetToken(rtok)
	if state := fleet.ProbeReaderPolicy(ctx, rc, "secret", base); state != store.PolicyOld {
		t.Errorf("the probe calls the old reader policy %q; want old", state)
	}
}

// legitimateOperations: with the new policies, the product's own code paths
// work: the store writes, reads and claims the main document, a second host
// writes its own, health goes into custom_metadata, the token looks itself
// up, renews itself and asks its capabilities; fleet lists and reads.
func legitimateOperations(t *testing.T, base, m, userTok, readerTok string) {
	ctx := context.Background()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(userTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostStore := func(host string) *store.Vault {
		st, err := store.NewVault(store.VaultConfig{Address: vsrv.Addr, Mount: "secret", Path: base + "/" + m, TokenFile: tokenFile,
			User: m, HostID: host, Timeout: 5 * time.Second, Knows: nil})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Prepare(ctx); err != nil {
			t.Fatalf("Prepare (lookup-self, drift check, renew-self) with the new policy: %v", err)
		}
		return st
	}
	h1 := hostStore("h1")
	write := func(st *store.Vault, what string) *store.Doc {
		d, err := st.Update(ctx, func(cur *store.Doc) (map[string]any, error) {
			return map[string]any{"backed_up_at": time.Now().UTC().Format(time.RFC3339), "claude_ai_oauth_json": `{"by":"` + what + `"}`}, nil
		})
		if err != nil {
			t.Fatalf("write %s with the new policy: %v", what, err)
		}
		return d
	}
	write(h1, "host 1")
	if err := h1.PatchMetadata(ctx, map[string]any{store.MetaOwnerKey: "h1", "host.h1": "label=ws-1;status=OK"}); err != nil {
		t.Fatalf("patch custom_metadata with the new policy: %v", err)
	}
	if _, err := h1.Read(ctx); err != nil {
		t.Fatalf("read own document: %v", err)
	}
	if state, err := h1.Policy(ctx); state != store.PolicyCurrent {
		t.Errorf("capabilities-self calls the new user policy %q (%v); want current", state, err)
	}
	h2 := hostStore("h2")
	write(h2, "host 2")
	if doc, _ := h2.Placement(); doc != "hosts" {
		t.Errorf("the second host writes to %s; want its own hosts/h2", doc)
	}
	if s, err := vsrv.Root().KVv2("secret").Get(ctx, base+"/"+m+"/hosts/h2"); err != nil || s.Data["claude_ai_oauth_json"] != `{"by":"host 2"}` {
		t.Errorf("hosts/h2 as root: %v, %v", s, err)
	}
	if ans := sendRaw(t, userTok, rawRequest{"GET", "secret/metadata/" + base + "/" + m + "/hosts/h2", ""}); ans.status != 200 {
		t.Errorf("read own host metadata: %d", ans.status)
	}

	c := vsrv.Root()
	c.SetToken(readerTok)
	r := &fleet.Reader{Client: c, Mount: "secret", Base: base}
	rows, err := r.Read(ctx)
	if err != nil {
		t.Fatalf("fleet's read with the new reader policy: %v", err)
	}
	var users []string
	for _, row := range rows {
		users = append(users, row.User)
	}
	slices.Sort(users)
	if got := strings.Join(slices.Compact(users), ","); !strings.Contains(got, m) || !strings.Contains(got, "victor") {
		t.Errorf("fleet's users: %s", got)
	}
	if _, err := fleet.RenewIfPeriodic(ctx, c); err != nil {
		t.Errorf("the reader looks itself up and renews itself: %v", err)
	}
	if got := fleet.ProbeReaderPolicy(ctx, c, "secret", base); got != store.PolicyCurrent {
		t.Errorf("fleet calls the new reader policy %q; want current", got)
	}
}

// TestStatusSaysPolicyIsOld: `status` (text and --json) tells a token whose
// policy is the current one, the old escapable one (a token of an earlier
// version: the default policy lets it ask capabilities-self), and one Vault
// will not answer about (the old policy on a token without default): unknown,
// never a false "old".
func TestStatusSaysPolicyIsOld(t *testing.T) {
	w := newWorld(t)
	policyOf := func() (string, string) {
		t.Helper()
		st := w.run(nil, "status", "--json")
		var rep struct {
			VaultPolicy string `json:"vault_policy"`
		}
		if err := json.Unmarshal([]byte(st.stdout), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s\n%s", err, st.stdout, st.stderr)
		}
		text := w.run(nil, "status")
		_, line, _ := strings.Cut(text.stdout, "vault policy:")
		line, _, _ = strings.Cut(line, "\n")
		return rep.VaultPolicy, strings.TrimSpace(line)
	}
	if got, line := policyOf(); got != "current" || line != "current" {
		t.Errorf("status with the new policy: %q (%q); want current", got, line)
	}
	// The policy an earlier version wrote, on a token an earlier version
	// minted (with the default policy).
	name := store.PolicyFor(w.name)
	if err := vsrv.Root().Sys().PutPolicy(name, fmt.Sprintf(oldUserPolicy, w.user.Path)); err != nil {
		t.Fatal(err)
	}
	old := mintLikeProvision(t, store.DisplayNameFor(w.name), false, name)
	w.mu.Lock()
	w.secrets = append(w.secrets, old)
	w.mu.Unlock()
	if err := os.WriteFile(w.user.TokenFile, []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, line := policyOf(); got != "old" || !strings.Contains(line, "OLD") || !strings.Contains(line, "provision") {
		t.Errorf("status with the old policy: %q (%q); want old, and what to do", got, line)
	}
	// The old policy on a token without the default policy: Vault refuses
	// capabilities-self, so nobody can tell.
	noDefault := mintLikeProvision(t, store.DisplayNameFor(w.name), true, name)
	w.mu.Lock()
	w.secrets = append(w.secrets, noDefault)
	w.mu.Unlock()
	if err := os.WriteFile(w.user.TokenFile, []byte(noDefault+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := policyOf(); got != "unknown" {
		t.Errorf("status when Vault refuses capabilities-self: %q; want unknown", got)
	}
}

// TestFleetSaysPolicyIsOld: an agent's pass with a token of the old policy
// says policy=old in its health, and `fleet` names the user in a WARN line
// and in old_policy_users; users with the current policy are not named.
func TestFleetSaysPolicyIsOld(t *testing.T) {
	w, fresh := newWorld(t), newWorld(t)
	name := store.PolicyFor(w.name)
	if err := vsrv.Root().Sys().PutPolicy(name, fmt.Sprintf(oldUserPolicy, w.user.Path)); err != nil {
		t.Fatal(err)
	}
	old := mintLikeProvision(t, store.DisplayNameFor(w.name), false, name)
	w.mu.Lock()
	w.secrets = append(w.secrets, old)
	w.mu.Unlock()
	if err := os.WriteFile(w.user.TokenFile, []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*world{w, fresh} {
		x.login()
		x.mustCode(x.run(nil, "sync"), 0, "sync")
	}
	md, err := vsrv.Root().KVv2("secret").GetMetadata(context.Background(), w.user.Path)
	if err != nil {
		t.Fatal(err)
	}
	policyInHealth := false
	for k, v := range md.CustomMetadata {
		if strings.HasPrefix(k, "host.") && strings.Contains(fmt.Sprint(v), ";policy=old") {
			policyInHealth = true
		}
	}
	if !policyInHealth {
		t.Errorf("the pass with the old policy did not say policy=old in its health: %v", md.CustomMetadata)
	}
	env := []string{"VAULT_TOKEN=" + vsrv.RootTokenValue()}
	res := w.run(env, "fleet", "--json", "--within", "0")
	var rep struct {
		UserPolicies   string   `json:"user_policies"`
		OldPolicyUsers []string `json:"old_policy_users"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("fleet --json: %v\n%s\n%s", err, res.stdout, res.stderr)
	}
	if rep.UserPolicies != "old" || !slices.Contains(rep.OldPolicyUsers, w.name) || slices.Contains(rep.OldPolicyUsers, fresh.name) {
		t.Errorf("fleet --json: user_policies %q, old_policy_users %v; want old, naming %s and not %s", rep.UserPolicies, rep.OldPolicyUsers, w.name, fresh.name)
	}
	text := w.run(env, "fleet", "--within", "0")
	if first, _, _ := strings.Cut(text.stdout, "\n"); !strings.HasPrefix(first, "WARN the policy of") || !strings.Contains(first, w.name) || !strings.Contains(first, "run `claude-auth-sync provision`") {
		t.Errorf("fleet's first line: %q", first)
	}
}
