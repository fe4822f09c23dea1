package provision

import (
	"os"
	"strings"
	"testing"
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
