#!/bin/sh
# start-claude.sh: start Claude Code through claude-auth-sync.
#
# `claude-auth-sync exec` waits for a login refresh that is in flight, refreshes
# first when the login is about to expire (so many Claude processes started at
# once never race each other's refresh), loads the setup-token environment when
# the admin switched this user to setup-token mode, and then becomes `claude`:
# same pid, signals and exit status pass straight through.
#
# Copy it where your launcher expects it (for example ~/bin/start-claude.sh),
# and start `t3-serve` and tmux panes the same way.
exec claude-auth-sync exec -- claude "$@"
