package main

import (
	"io"
)

const restoreHelp = `Usage: claude-auth-sync restore [--force] [flags]

Put the latest backed-up login (Vault's latest version, or the local store) into
the credentials file, keeping every other key of the file. This is the way back
after "claude auth logout", or onto a new home directory.

It refuses to replace a working login that is not known to be older than the
backup (restoring a rotated-out refresh token would log you out); --force does it
anyway. Whatever a restore replaces is kept in the state dir as
previous-credentials.json (mode 0600).

Exit codes: 0 restored or already current, 1 FAIL, 2 usage, 3 no backup to
restore (WARN: nothing was backed up yet; log in), 75 store unreachable,
78 configuration error.
`

func restoreFlags(fs *flagSet) action {
	var c commonFlags
	c.register(fs)
	force := fs.Bool("force", false, "replace a working login too")
	return func(args []string, stdout, stderr io.Writer) int {
		eng, code := begin(fs, &c, args, stdout, stderr, restoreHelp)
		if eng == nil {
			return code
		}
		ctx, cancel := signalContext()
		defer cancel()
		return eng.Restore(ctx, *force).Code
	}
}
