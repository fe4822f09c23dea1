#!/bin/sh
# Writes a Debian-style changelog entry for this build to stdout: the package
# version, what it was built from, and the commit's date (reproducible).
# Usage: changelog.sh PKG_VERSION GIT_DESCRIBE
set -eu
date=$(git log -1 --format=%cD 2>/dev/null || LC_ALL=C date -u -R)
cat <<ENTRY
claude-auth-sync ($1) unstable; urgency=medium

  * Release $1, built from $2.
  * What this version does: /usr/share/doc/claude-auth-sync/README.md.

 -- claude-auth-sync developers <claude-auth-sync@example.invalid>  $date
ENTRY
