package main

import (
	"flag"
	"io"
)

const refreshHelp = `Usage: claude-auth-sync refresh [flags]

One brokered refresh now, the way the agent does it: under our lock and Claude
Code's own lock directories, the refresh response saved durably before the
credentials file is rewritten (compare-and-swap on the refresh token sent), then
backed up at once. Useful after a 401, or to test the setup. A clobbered
credentials file (empty refresh token, broken JSON) is first restored from the
latest backup, as a sync pass would; a missing one is a logout and is left alone.

Exit codes: 0 refreshed (or someone else just did), 1 FAIL (the login is dead:
log in again), 3 no credentials file (logged out), 75 could not refresh now
(token endpoint or Claude's locks unavailable), 78 configuration error.
`

func runRefresh(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("refresh", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	eng, code := begin(fs, &c, args, stdout, stderr, refreshHelp)
	if eng == nil {
		return code
	}
	ctx, cancel := signalContext()
	defer cancel()
	return eng.RefreshNow(ctx).Code
}
