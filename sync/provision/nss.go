package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ErrNoSuchUser: the name is in no user database NSS knows.
var ErrNoSuchUser = errors.New("no such user")

// lookupNSS asks the system's user databases through NSS (getent, from libc):
// /etc/passwd and whatever nsswitch.conf adds (LDAP through SSSD, extrausers,
// systemd's dynamic users). The binary is static (no cgo), and Go's own
// lookup reads only /etc/passwd, so directory accounts would be invisible.
func lookupNSS(name string) (Account, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "getent", "passwd", "--", name)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 { // getent: key not found
		return Account{}, fmt.Errorf("%w %q in the user databases (getent passwd)", ErrNoSuchUser, name)
	}
	if err != nil {
		return Account{}, fmt.Errorf("getent passwd %s: %v %s", name, err, strings.TrimSpace(errb.String()))
	}
	return parsePasswd(name, out.String())
}

// parsePasswd reads one passwd(5) line for name.
func parsePasswd(name, text string) (Account, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(text), "\n")
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] != name {
		return Account{}, fmt.Errorf("getent passwd %s: unexpected answer %q", name, line)
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
		return Account{}, fmt.Errorf("user %s: non-numeric uid/gid %s/%s", name, f[2], f[3])
	}
	if !strings.HasPrefix(f[5], "/") {
		return Account{}, fmt.Errorf("user %s: home %q is not an absolute path", name, f[5])
	}
	return Account{Name: name, UID: uid, GID: gid, Home: f[5]}, nil
}
