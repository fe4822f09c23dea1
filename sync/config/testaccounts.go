//go:build casfakeusers

package config

import "os"

// A build for the e2e harness only (go build -tags casfakeusers): its worlds
// name made-up users (one Vault identity per test) that no user database
// knows (some not even valid names). Such a name stands for the caller's own account, as it did before
// --user was checked; CAS_TEST_REAL_USERS=1 turns that off for the tests of
// --user itself. Release builds have no such file.
func init() {
	real := LookupAccount
	LookupAccount = func(name string) (*Account, error) {
		a, err := real(name)
		if err != nil && os.Getenv("CAS_TEST_REAL_USERS") != "1" {
			return &Account{Name: name, UID: os.Geteuid(), GID: os.Getegid()}, nil
		}
		return a, err
	}
}
