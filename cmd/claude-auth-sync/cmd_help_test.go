package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/claude-auth-sync/claude-auth-sync/sync/config"
)

// TestManDocumentsEverySetting: every key the system config file takes is in
// the man page's ENVIRONMENT section.
func TestManDocumentsEverySetting(t *testing.T) {
	var man bytes.Buffer
	writeMan(&man)
	_, env, _ := strings.Cut(man.String(), ".SH ENVIRONMENT\n")
	env, _, _ = strings.Cut(env, ".SH ")
	for _, k := range config.Keys() {
		if !strings.Contains(env, roff(k)) {
			t.Errorf("the man page's ENVIRONMENT does not mention %s", k)
		}
	}
}

// TestManListsEveryFlag: each visible command's visible flags are in the man
// page, hidden ones are not.
func TestManListsEveryFlag(t *testing.T) {
	var man bytes.Buffer
	writeMan(&man)
	page := man.String()
	for _, c := range commands() {
		if c.hidden {
			if strings.Contains(page, ".SS claude\\-auth\\-sync "+c.name) {
				t.Errorf("the hidden command %s has a section", c.name)
			}
			continue
		}
		syn, _ := helpParts(c.help)
		_, section, _ := strings.Cut(page, ".SS "+roff(syn)+"\n")
		if i := strings.Index(section, "\n.S"); i >= 0 {
			section = section[:i]
		}
		fs, _ := c.flagSet()
		for _, d := range fs.docs() {
			if !strings.Contains(section, `\fB\-\-`+roff(d.name)+`\fR`) {
				t.Errorf("%s --%s is not in the man page", c.name, d.name)
			}
		}
		for name := range fs.hidden {
			if strings.Contains(section, `\fB\-\-`+roff(name)+`\fR`) {
				t.Errorf("%s: the hidden flag %s is in the man page", c.name, name)
			}
		}
	}
}

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pre  []string
		name string
		rest []string
	}{
		{nil, nil, "", nil},
		{[]string{"status"}, []string{}, "status", []string{}},
		{[]string{"--verbose", "status", "--json"}, []string{"--verbose"}, "status", []string{"--json"}},
		{[]string{"--config", "x.conf", "sync"}, []string{"--config", "x.conf"}, "sync", []string{}},
		{[]string{"--config=x.conf", "sync"}, []string{"--config=x.conf"}, "sync", []string{}},
		{[]string{"-config", "sync"}, []string{"-config", "sync"}, "", nil}, // "sync" is the file
		{[]string{"--verbose"}, []string{"--verbose"}, "", nil},
		{[]string{"exec", "--", "claude", "-v"}, []string{}, "exec", []string{"--", "claude", "-v"}},
	} {
		pre, name, rest := splitCommand(tc.args)
		if !slices.Equal(pre, tc.pre) || name != tc.name || !slices.Equal(rest, tc.rest) {
			t.Errorf("splitCommand(%q) = %q, %q, %q; want %q, %q, %q", tc.args, pre, name, rest, tc.pre, tc.name, tc.rest)
		}
	}
}

func TestSuggest(t *testing.T) {
	cmds := []string{"run", "sync", "exec", "refresh", "restore", "status", "provision", "version", "help"}
	for _, tc := range []struct{ typed, want string }{
		{"stauts", "status"},
		{"stat", "status"},
		{"sycn", "sync"},
		{"restor", "restore"},
		{"provison", "provision"},
		{"xyzzy", ""},
		{"r", ""},
		{"tcsh", ""},
	} {
		if got := suggest(tc.typed, cmds); got != tc.want {
			t.Errorf("suggest(%q) = %q; want %q", tc.typed, got, tc.want)
		}
	}
}

// TestAgentChildArgs: what the agent passes its refresh child (every setting
// given, verbose on) is what refresh --agent-child parses, to the same values.
func TestAgentChildArgs(t *testing.T) {
	runFS := newFlagSet("run")
	var c commonFlags
	c.register(runFS)
	c.registerClaude(runFS)
	c.registerCheckTimeout(runFS)
	err := runFS.Parse([]string{"--config=/c", "--credentials=/cr", "--state-dir=/s", "--store=file", "--vault-addr=http://v",
		"--vault-path=p/{user}", "--token-file=/t", "--user=alice", "--claude=/bin/claude", "--check-timeout=5s", "--verbose"})
	if err != nil {
		t.Fatal(err)
	}
	refresh, _ := lookup("refresh")
	fs, _ := refresh.flagSet()
	args := append([]string{"--agent-child"}, c.args()...)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		t.Fatalf("refresh %q: %v, %d arguments left", args, err, fs.NArg())
	}
	for name, want := range map[string]string{"config": "/c", "credentials": "/cr", "state-dir": "/s", "store": "file",
		"vault-addr": "http://v", "vault-path": "p/{user}", "token-file": "/t", "user": "alice", "verbose": "true", "agent-child": "true"} {
		if got := fs.Lookup(name).Value.String(); got != want {
			t.Errorf("the child's --%s = %q; want %q", name, got, want)
		}
	}
	// An agent of the previous version passed -v, --claude and --check-timeout.
	fs, _ = refresh.flagSet()
	if err := fs.Parse([]string{"--agent-child", "-v", "--claude=/bin/claude", "--check-timeout=5s"}); err != nil {
		t.Errorf("refresh does not take the previous agent's child flags: %v", err)
	}
}
