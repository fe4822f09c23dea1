package provision

import (
	"errors"
	"testing"
)

func TestParsePasswd(t *testing.T) {
	for _, c := range []struct {
		line    string
		want    Account
		wantErr bool
	}{
		{"alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash\n", Account{Name: "alice", UID: 1001, GID: 1001, Home: "/home/alice"}, false},
		{"alice:*:70001:100::/srv/home/alice:/usr/sbin/nologin", Account{Name: "alice", UID: 70001, GID: 100, Home: "/srv/home/alice"}, false},
		{"bob:x:1001:1001::/home/bob:/bin/sh", Account{}, true},    // another name
		{"alice:x:1001:1001::home/alice:/bin/sh", Account{}, true}, // relative home
		{"alice:x:-1:1001::/home/alice:/bin/sh", Account{}, true},
		{"alice:x:1001", Account{}, true},
		{"", Account{}, true},
	} {
		got, err := parsePasswd("alice", c.line)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("parsePasswd(%q) = %+v, %v; want %+v (error %v)", c.line, got, err, c.want, c.wantErr)
		}
	}
}

// getent answers from the machine's databases: root is there, a made-up
// name is ErrNoSuchUser.
func TestLookupNSS(t *testing.T) {
	a, err := lookupNSS("root")
	if err != nil || a.UID != 0 || a.Home == "" {
		t.Fatalf("lookupNSS(root) = %+v, %v", a, err)
	}
	if _, err := lookupNSS("no-such-user-cas-9f3a"); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("lookupNSS(missing) = %v; want ErrNoSuchUser", err)
	}
}
