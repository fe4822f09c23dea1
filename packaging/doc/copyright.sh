#!/bin/sh
# Writes the package's copyright file (Debian's machine-readable format) to
# stdout: the project's own license, then every Go module compiled into the
# binary (as `go version -m` lists them) with its license. MPL-2.0 and
# Apache-2.0 texts are referred to in /usr/share/common-licenses; any other
# license text is copied in full, as MIT and BSD ask.
# Usage: copyright.sh BINARY  (run in the module's directory; GO selects go)
set -eu
bin=$1
go=${GO:-go}

cat <<'HEAD'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: claude-auth-sync
Upstream-Contact: claude-auth-sync developers <claude-auth-sync@example.invalid>
Source: https://example.invalid/claude-auth-sync

Files: *
Copyright: claude-auth-sync developers
License: Proprietary
 claude-auth-sync is proprietary software. It is not free software and not
 open source. All rights reserved: no part of it may be copied, modified or
 redistributed except as its owners allow in writing.
 .
 The binary also holds the Go standard library and the Go modules below,
 each under its own license.
HEAD

# license FILE: a License: field (name, then the text indented one space).
license() {
	first=$(grep -m1 -v '^[[:space:]]*$' "$1" | sed 's/^[[:space:]]*//')
	case $first in
	"Mozilla Public License"* | *"Mozilla Public License"*)
		printf 'License: MPL-2.0\n On Debian systems the full text of the Mozilla Public License 2.0 is in\n /usr/share/common-licenses/MPL-2.0.\n' ;;
	"Apache License"*)
		printf 'License: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n' ;;
	*)
		if grep -q 'Mozilla Public License' "$1" && ! grep -q 'MIT' "$1"; then
			printf 'License: MPL-2.0\n On Debian systems the full text of the Mozilla Public License 2.0 is in\n /usr/share/common-licenses/MPL-2.0.\n'
		else
			printf 'License: %s\n' "$(spdx "$1")"
			sed 's/[[:space:]]*$//; s/^/ /; s/^ $/ ./' "$1"
		fi ;;
	esac
}

spdx() {
	if grep -q 'Permission is hereby granted, free of charge' "$1"; then
		grep -q 'Apache License' "$1" && echo 'MIT and Apache-2.0' || echo MIT
	elif grep -q 'Neither the name' "$1"; then
		echo BSD-3-Clause
	elif grep -q 'Redistribution and use' "$1"; then
		echo BSD-2-Clause
	else
		echo 'other (text below)'
	fi
}

goroot=$($go env GOROOT)
printf '\nFiles: go/*\nComment: the Go standard library and runtime, %s\nCopyright: The Go Authors\n' "$($go env GOVERSION)"
license "$goroot/LICENSE"

$go version -m "$bin" | awk '$1 == "dep" { print $2, $3 }' | while read -r mod ver; do
	dir=$($go list -m -f '{{.Dir}}' "$mod")
	lic=
	for f in LICENSE LICENSE.md LICENSE.txt COPYING LICENCE; do
		[ -f "$dir/$f" ] && { lic=$dir/$f; break; }
	done
	[ -n "$lic" ] || { echo "copyright.sh: no license file in $mod $ver ($dir)" >&2; exit 1; }
	printf '\nFiles: %s/*\nComment: Go module %s %s, compiled into /usr/bin/claude-auth-sync\n' "$mod" "$mod" "$ver"
	# The first "Copyright <year> …" line (not the license's own wording).
	copyright=$(grep -m1 '^[[:space:]]*Copyright.*[0-9][0-9][0-9][0-9]' "$lic" |
		sed 's/^[[:space:]]*Copyright[[:space:]]*//; s/([cC])[[:space:]]*//; s/©[[:space:]]*//; s/[[:space:]]*All rights reserved\.*//' || true)
	printf 'Copyright: %s\n' "${copyright:-the authors of $mod}"
	license "$lic"
done
