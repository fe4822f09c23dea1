package provision

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/store"
)

// docs/provisioning.md says in which order the lines come: the order Run
// prints them in (users sorted by name, then removed users; the
// provision_order script checks the output itself).
func TestDocsSayOutputOrder(t *testing.T) {
	b, err := os.ReadFile("../../docs/provisioning.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(b)), " ")
	if strings.Contains(doc, "in roster order") {
		t.Errorf("docs/provisioning.md promises roster order; the output is sorted by user name")
	}
	if !strings.Contains(doc, "sorted by user name") {
		t.Errorf("docs/provisioning.md does not say the lines are sorted by user name")
	}
	r, err := ParseRoster([]byte("users:\n  zed: {}\n  alice: {}\n  mid: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range r.Users {
		names = append(names, u.Name)
	}
	if got := strings.Join(names, " "); got != "alice mid zed" {
		t.Errorf("ParseRoster order = %s; want alice mid zed (the order of the output)", got)
	}
}

// docs/provisioning.md shows the user's policy as provision writes it.
func TestDocsShowUserPolicy(t *testing.T) {
	b, err := os.ReadFile("../../docs/provisioning.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- user-policy[^>]*-->\\s*```hcl\\n(.*?)```").FindSubmatch(b)
	if m == nil {
		t.Fatal("docs/provisioning.md has no user-policy hcl block")
	}
	var doc strings.Builder
	for _, l := range strings.SplitAfter(string(m[1]), "\n") {
		doc.WriteString(strings.TrimPrefix(l, "   "))
	}
	if want := store.PolicyHCL("secret", "workstation/claude-users/alice"); strings.TrimSpace(doc.String()) != strings.TrimSpace(want) {
		t.Errorf("docs/provisioning.md's user policy:\n%s\nprovision writes:\n%s", doc.String(), want)
	}
}
